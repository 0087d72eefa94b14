"""Credentials that go where they were given for, and nowhere else.

Every authenticated fetch hermetic makes (a package index, an npm registry, a container
registry) holds its credential in a :class:`ScopedCredential`: the scheme, host, port and
path prefix it was configured for. A request outside that scope carries no credential,
a redirect loses it unless its target is in scope too, and nothing is read from
``.netrc`` behind the user's back. What the credential is never appears in a repr, a log
or an error.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import requests
from requests.auth import AuthBase

from sandbox.errors import UserError

_DEFAULT_PORTS = {"http": 80, "https": 443}


class CredentialError(UserError):
    """A URL that should carry a credential cannot (no host, a bad port)."""


@dataclass(frozen=True, kw_only=True)
class Scope:
    """Where a credential may be sent: a scheme (None: http or https, the caller's
    choice, as for a container registry), a host[:port] and a path prefix."""

    scheme: str | None
    netloc: str  # lower-case host, ":port" unless it is the scheme's default
    path: str = "/"  # a prefix ending in "/"

    @classmethod
    def of_url(cls, url: str, *, any_scheme: bool = False) -> Scope:
        """The scope of a base URL (``https://host:8443/simple/``): that origin and path.

        Raises:
            CredentialError: the URL names no host or an invalid port.
        """
        parts = urlsplit(url if "://" in url else f"//{url}")
        try:
            port = parts.port
        except ValueError as e:
            raise CredentialError(f"{strip_credentials(url)}: {e}") from None
        if not parts.hostname:
            raise CredentialError(f"{strip_credentials(url)}: names no host")
        scheme = None if any_scheme or not parts.scheme else parts.scheme.lower()
        host = parts.hostname.lower()
        if ":" in host:
            host = f"[{host}]"  # IPv6
        if port is not None and port != _DEFAULT_PORTS.get(scheme or ""):
            host = f"{host}:{port}"
        path = unquote(parts.path or "/")
        return cls(scheme=scheme, netloc=host, path=path if path.endswith("/") else path + "/")

    def covers(self, url: str) -> bool:
        """Whether ``url`` is inside this scope (same scheme, host, port; under the path)."""
        try:
            other = Scope.of_url(url, any_scheme=self.scheme is None)
        except CredentialError:
            return False
        return (
            (self.scheme is None or other.scheme == self.scheme)
            and other.netloc == self.netloc
            and other.path.startswith(self.path)
        )


@dataclass(frozen=True, kw_only=True)
class ScopedCredential:
    """An Authorization header value and the scope it was configured for."""

    scope: Scope
    authorization: str = field(repr=False)  # "Basic …" or "Bearer …"

    @classmethod
    def basic(cls, scope: Scope, username: str, password: str) -> ScopedCredential:
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        return cls(scope=scope, authorization=f"Basic {token}")

    @classmethod
    def bearer(cls, scope: Scope, token: str) -> ScopedCredential:
        return cls(scope=scope, authorization=f"Bearer {token}")

    @classmethod
    def from_url(cls, url: str) -> tuple[str, ScopedCredential | None]:
        """``(url without credentials, the credential for that URL's scope or None)``."""
        parts = urlsplit(url)
        clean = strip_credentials(url)
        if parts.username is None:
            return clean, None
        scope = Scope.of_url(clean)
        return clean, cls.basic(scope, unquote(parts.username), unquote(parts.password or ""))


def strip_credentials(url: str) -> str:
    """The URL without ``user:password@`` (for records, messages and logs)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(an invalid URL)"
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def most_specific(credentials: Iterable[ScopedCredential], url: str) -> ScopedCredential | None:
    """The credential whose scope covers ``url`` with the longest path, or None."""
    found = [c for c in credentials if c.scope.covers(url)]
    return max(found, key=lambda c: len(c.scope.path), default=None)


class _ScopedAuth(AuthBase):
    def __init__(self, credentials: tuple[ScopedCredential, ...]) -> None:
        self.credentials = credentials

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers.pop("Authorization", None)
        credential = most_specific(self.credentials, str(request.url))
        if credential is not None:
            request.headers["Authorization"] = credential.authorization
        return request


class ScopedSession(requests.Session):
    """A requests session that sends each credential only inside its scope.

    Redirects are re-scoped (a redirect to another host or scheme drops the header);
    ``.netrc`` is never read (requests would otherwise add its entries by host name
    alone). Proxies and CA settings from the environment still apply.
    """

    def __init__(self, credentials: Iterable[ScopedCredential] = (), *, verify: Any = True) -> None:
        super().__init__()
        self._scoped = _ScopedAuth(tuple(credentials))
        self.auth = self._scoped  # set, so requests never falls back to .netrc
        self.verify = verify

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: Any) -> None:
        self._scoped(prepared_request)
