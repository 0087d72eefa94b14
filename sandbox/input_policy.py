"""What a rebuilder node may fetch for a client: allowed URL prefixes, public addresses only
(unless the operator allows a network), a size cap and a deadline per fetch.

Pure rules, no I/O: :mod:`sandbox.fetch` resolves a host once, asks :meth:`InputPolicy.
check_address` about every address, and connects to an address it checked. The local CLI
has no policy (the inputs are the user's own); a node always has one.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from urllib.parse import unquote, urlsplit

from sandbox.errors import InputRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Sequence[IPAddress]]
"""(host, port) -> every address the name resolves to."""

DEFAULT_ALLOW = ("https://",)
DEFAULT_MAX_INPUT_BYTES = 2 * 1024**3
DEFAULT_DEADLINE_S = 900.0
MAX_REDIRECTS = 5
_DEFAULT_PORTS = {"http": 80, "https": 443}
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def system_resolver(host: str, port: int) -> list[IPAddress]:
    """Every address the system resolver gives for ``host`` (TCP), in its order."""
    found: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM
    ):
        address = ipaddress.ip_address(sockaddr[0])
        if address not in found:
            found.append(address)
    return found


@dataclass(frozen=True)
class Target:
    """A URL that passed the static rules: where to connect and what to ask for."""

    url: str
    scheme: str
    host: str  # lower case, IPv6 without brackets
    port: int
    request_path: str  # path and query, as sent in the request line


@dataclass(frozen=True)
class AllowedPrefix:
    """One ``--allow-input`` prefix, compared by parts: scheme, host and port, path."""

    text: str
    scheme: str
    host: str | None  # None: any host (still subject to the address rules)
    port: int | None
    path: str

    @classmethod
    def parse(cls, text: str) -> AllowedPrefix:
        """Raises ValueError naming what is wrong with the prefix."""
        parts = urlsplit(text)
        if parts.scheme not in _DEFAULT_PORTS:
            raise ValueError(
                f"{text!r}: a node fetches only http:// and https:// inputs "
                "(file:// and other schemes would read the node's own files)"
            )
        if parts.username is not None or parts.password is not None:
            raise ValueError(f"{text!r}: a prefix holds no credentials")
        if parts.query or parts.fragment:
            raise ValueError(f"{text!r}: a prefix has no query or fragment")
        host = parts.hostname
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"{text!r}: the port is not a number") from None
        if host is None and (port is not None or parts.path):
            raise ValueError(f"{text!r}: a prefix with a path needs a host")
        return cls(
            text=text,
            scheme=parts.scheme,
            host=host,
            port=(port or _DEFAULT_PORTS[parts.scheme]) if host else None,
            path=parts.path,
        )

    def matches(self, target: Target) -> bool:
        if target.scheme != self.scheme:
            return False
        if self.host is None:
            return True
        return (
            target.host == self.host
            and target.port == self.port
            and target.request_path.startswith(self.path)
        )


def address_rule(address: IPAddress) -> str | None:
    """Which rule refuses an address (None: it is a public unicast address)."""
    if isinstance(address, ipaddress.IPv6Address):
        # IPv4 addresses carried inside IPv6 reach the IPv4 address they carry
        if address.ipv4_mapped is not None:
            return address_rule(address.ipv4_mapped)
        if address.sixtofour is not None:
            return address_rule(address.sixtofour)
        if address in _NAT64:
            return address_rule(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if address.teredo is not None:
            return "a tunnel (Teredo) address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    # fec0::/10 (site-local, deprecated by RFC 3879) is still routed inside some
    # networks, and Python calls it global
    if address.is_private or (isinstance(address, ipaddress.IPv6Address) and address.is_site_local):
        return "a private address"
    if not address.is_global or address.is_reserved:
        return "a reserved address"
    return None


@dataclass(frozen=True, kw_only=True)
class InputPolicy:
    """A node's rules for the inputs of submitted specs.

    Attributes:
        allow: URL prefixes inputs must start with (``--allow-input``; default https://).
        networks: non-public networks the operator allows anyway (``--allow-input-network``),
            e.g. an internal mirror; every other address must be public unicast.
        max_bytes: largest input (``--max-input``); a fetch stops at the cap.
        deadline_s: total time for one fetch, redirects included, and for all of one job's
            fetches together (see :meth:`for_job`).
        own: the node's own addresses: refused like internal ones (a service listening on
            the node's public address is still the node's), unless in ``networks``.
        job_deadline: when every fetch of the current job must end (time.monotonic()).
        resolver: resolves a host once; the fetch connects to an address it returned.
    """

    allow: tuple[AllowedPrefix, ...] = field(
        default_factory=lambda: tuple(AllowedPrefix.parse(p) for p in DEFAULT_ALLOW)
    )
    networks: tuple[IPNetwork, ...] = ()
    max_bytes: int = DEFAULT_MAX_INPUT_BYTES
    deadline_s: float = DEFAULT_DEADLINE_S
    own: frozenset[IPAddress] = frozenset()
    job_deadline: float | None = field(default=None, compare=False)
    resolver: Resolver = field(default=system_resolver, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.allow:
            raise ValueError("an input policy needs at least one allowed prefix")
        if self.max_bytes < 1 or self.deadline_s <= 0:
            raise ValueError("an input policy needs a positive size cap and deadline")

    @classmethod
    def of(
        cls,
        *,
        allow: Sequence[str] = (),
        networks: Sequence[str] = (),
        max_bytes: int = DEFAULT_MAX_INPUT_BYTES,
        deadline_s: float = DEFAULT_DEADLINE_S,
        own: Sequence[IPAddress] = (),
    ) -> InputPolicy:
        """A policy from option texts (ValueError names the bad one)."""
        parsed = []
        for text in networks:
            try:
                parsed.append(ipaddress.ip_network(text, strict=False))
            except ValueError as e:
                raise ValueError(f"{text!r}: not a network ({e})") from None
        return cls(
            allow=tuple(AllowedPrefix.parse(p) for p in allow or DEFAULT_ALLOW),
            networks=tuple(parsed),
            max_bytes=max_bytes,
            deadline_s=deadline_s,
            own=frozenset(own),
        )

    def for_job(self, remaining_s: float | None = None) -> InputPolicy:
        """This policy for one job's fetches: together they end within ``deadline_s`` (and
        within the job's ``remaining_s``), however many inputs the spec names."""
        budget = self.deadline_s if remaining_s is None else min(self.deadline_s, remaining_s)
        return replace(self, job_deadline=time.monotonic() + max(budget, 0.0))

    def fetch_deadline(self) -> float:
        """When a fetch starting now must end (time.monotonic())."""
        deadline = time.monotonic() + self.deadline_s
        return deadline if self.job_deadline is None else min(deadline, self.job_deadline)

    def refuse(self, url: str, rule: str, reason: str) -> InputRefused:
        return InputRefused(url=url, rule=rule, reason=reason)

    def check_url(self, url: str) -> Target:
        """The static rules, before any lookup: scheme, credentials, path, prefix, and the
        address rule for hosts given as addresses or as ``localhost``.

        Raises:
            InputRefused: naming the rule.
        """
        # before parsing: urlsplit silently drops tabs and newlines
        if any(ord(c) < 0x21 or ord(c) > 0x7E for c in url):
            raise self.refuse(repr(url), "characters", "spaces, control and non-ASCII characters")
        parts = urlsplit(url)
        if parts.scheme not in _DEFAULT_PORTS:
            raise self.refuse(url, "scheme", "only http(s) inputs are fetched by a node")
        if parts.username is not None or parts.password is not None or "@" in parts.netloc:
            raise self.refuse(url, "credentials", "URLs with credentials are refused")
        host = parts.hostname
        try:
            port = parts.port or _DEFAULT_PORTS[parts.scheme]
        except ValueError:
            raise self.refuse(url, "port", "the port is not a number") from None
        if not host:
            raise self.refuse(url, "host", "the URL has no host")
        segments = unquote(parts.path).split("/")
        if ".." in segments or "." in segments or "\\" in unquote(parts.path):
            raise self.refuse(url, "path", "dot segments and backslashes are refused")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        target = Target(url=url, scheme=parts.scheme, host=host, port=port, request_path=path)
        if not any(prefix.matches(target) for prefix in self.allow):
            allowed = ", ".join(prefix.text for prefix in self.allow)
            raise self.refuse(url, "allow-input", f"not under an allowed prefix ({allowed})")
        if host == "localhost" or host.endswith(".localhost"):
            raise self.refuse(url, "address", f"{host} is a loopback name")
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            self.check_address(url, host, literal, told=True)
        return target

    def check_address(self, url: str, host: str, address: IPAddress, *, told: bool) -> None:
        """Raises InputRefused unless the address is public (and not the node's own) or in
        an allowed network.

        Args:
            told: the client wrote the address itself (its kind may be named); else it is
                the node's resolver's answer, and the refusal says nothing of it.
        """
        if any(address in network for network in self.networks):
            return
        rule = address_rule(address) or (
            "an address of the node itself" if _plain(address) in self.own else None
        )
        if rule is None:
            return
        if told:
            raise self.refuse(url, "address", f"{host} is {rule}; only public addresses")
        raise self.refuse(url, "address", _NOT_PUBLIC.format(host=host))

    def addresses(self, target: Target) -> list[IPAddress]:
        """Resolve the target's host once and check every address it resolves to.

        Raises:
            InputRefused: the name does not resolve, or any of its addresses is refused
                (a name that also resolves to an internal address is not trusted). Both
                read the same: what the node's resolver knows is not the client's business
                (one reason, or internal names could be enumerated).
        """
        try:
            found = list(self.resolver(target.host, target.port))
        except (OSError, UnicodeError):
            found = []
        if not found:
            raise self.refuse(target.url, "address", _NOT_PUBLIC.format(host=target.host))
        for address in found:
            self.check_address(target.url, target.host, address, told=False)
        return found


_NOT_PUBLIC = "{host} does not resolve to public addresses only"


def _plain(address: IPAddress) -> IPAddress:
    """An IPv4 address carried in IPv6 as itself (the node's own may be reached either way)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def host_addresses() -> list[IPAddress]:
    """Every address of this host's interfaces (the node refuses to fetch from itself)."""
    import psutil  # only where a node starts

    found: list[IPAddress] = []
    for entries in psutil.net_if_addrs().values():
        for entry in entries:
            if entry.family in (socket.AF_INET, socket.AF_INET6):
                try:
                    found.append(ipaddress.ip_address(entry.address.split("%")[0]))
                except ValueError:
                    continue
    return found
