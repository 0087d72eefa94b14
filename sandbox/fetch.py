"""Fetching pinned inputs into the store: the only step of a build that uses the network.

Two ways: the local CLI's (the user's own files and URLs, with the user's environment),
and a node's, under an :class:`~sandbox.input_policy.InputPolicy`: a small HTTP transport
(the standard library's ``http.client``) that resolves a host once, checks every address,
connects to a checked address while TLS still verifies the host name, re-checks every
redirect, sends no credentials, reads no proxy variables, and stops at a size cap and a
total deadline.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import requests

from sandbox.errors import InputError
from sandbox.input_policy import MAX_REDIRECTS, InputPolicy, IPAddress, Target
from sandbox.spec import InputSpec
from sandbox.store import ContentStore

log = logging.getLogger(__name__)

FetchProgress = Callable[[str, int, int | None], None]
"""Called with (url, bytes so far, total bytes or None)."""

_CHUNK = 1 << 20
_CONNECT_TIMEOUT_S = 15
_READ_TIMEOUT_S = 120


def trusted_cas() -> str | bool:
    """The CA bundle HTTPS fetches trust: the system's, like curl and apt.

    SSL_CERT_FILE or REQUESTS_CA_BUNDLE override it; without a system bundle,
    requests' own (certifi) is used.
    """
    for name in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        if os.environ.get(name):
            return os.environ[name]
    cafile = ssl.get_default_verify_paths().cafile
    return cafile if cafile and Path(cafile).is_file() else True


def fetch_input(
    item: InputSpec,
    store: ContentStore,
    progress: FetchProgress | None = None,
    *,
    policy: InputPolicy | None = None,
) -> tuple[Path, bool]:
    """Make the input available in the store.

    Args:
        item: the input as the spec pins it.
        store: where verified inputs live.
        progress: receives byte counts while downloading.
        policy: a node's input policy (None: the local user's own inputs, any URL). Under
            a policy a mismatch does not tell the actual digest, and a stored file is used
            only if it was fetched from the same URL.

    Returns:
        The stored file and whether it had to be fetched (False: already stored).

    Raises:
        DigestMismatch: the fetched bytes have another digest; nothing was kept.
        InputError: the URL cannot be read.
        InputRefused: the policy refuses the URL (before anything is fetched).
    """
    if policy is not None:
        target = policy.check_url(item.url)  # even a cached input must be allowed
        # only what this very URL gave before (see sandbox.store): a digest alone fetched
        # by someone else, from elsewhere, is not this input
        cached = store.get_from(item.url, item.sha256)
        if cached is not None:
            return cached, False
        with guarded_get(target, policy) as (body, declared):
            return store.add(
                body,
                expected=item.sha256,
                what=item.url,
                on_bytes=lambda done: progress(item.url, done, declared) if progress else None,
                disclose=False,
                origin=item.url,
            ), True
    cached = store.get(item.sha256)
    if cached is not None:
        log.debug("input %s already stored", item.url)
        return cached, False

    def report(done: int) -> None:
        if progress is not None:
            progress(item.url, done, total)

    parts = urlsplit(item.url)
    total: int | None = None
    if parts.scheme == "file":
        path = Path(unquote(parts.path))
        try:
            total = path.stat().st_size
            with path.open("rb") as stream:
                chunks: Iterator[bytes] = iter(lambda: stream.read(_CHUNK), b"")
                return store.add(chunks, expected=item.sha256, what=item.url, on_bytes=report), True
        except OSError as e:
            raise InputError(f"cannot read input {item.url}: {e}") from e
    try:
        with requests.get(
            item.url,
            stream=True,
            timeout=(_CONNECT_TIMEOUT_S, _READ_TIMEOUT_S),
            verify=trusted_cas(),
        ) as response:
            response.raise_for_status()
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            chunks = response.iter_content(chunk_size=_CHUNK)
            return store.add(chunks, expected=item.sha256, what=item.url, on_bytes=report), True
    except requests.RequestException as e:
        raise InputError(f"cannot fetch input {item.url}: {e}") from e


# --- a node's fetcher ---------------------------------------------------------------------


class _PinnedConnection(http.client.HTTPSConnection):
    """HTTP(S) to one address that was checked; TLS verifies the URL's host name.

    http.client reads no proxy variables and no .netrc; nothing but the request line,
    Host, User-Agent and Accept-Encoding: identity is sent.
    """

    def __init__(self, target: Target, address: IPAddress, context: ssl.SSLContext) -> None:
        super().__init__(target.host, target.port, context=context)
        self.context = context
        self.address = address
        self.tls = target.scheme == "https"
        self.default_port = 443 if self.tls else 80  # for the Host header
        self.raw: socket.socket | None = None

    def connect(self) -> None:
        family = socket.AF_INET6 if self.address.version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect((str(self.address), self.port))
            if self.tls:
                sock = self.context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self.sock = self.raw = sock


def _node_tls_context() -> ssl.SSLContext:
    cafile = trusted_cas()
    context = ssl.create_default_context(cafile=cafile if isinstance(cafile, str) else None)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _cut(connection: _PinnedConnection) -> None:
    """The deadline passed: end the connection under whatever read is blocking on it."""
    if connection.raw is not None:
        # the plain socket's shutdown, under TLS too: it acts on the descriptor
        with contextlib.suppress(OSError):
            socket.socket.shutdown(connection.raw, socket.SHUT_RDWR)


def _open(
    target: Target, policy: InputPolicy, context: ssl.SSLContext, deadline: float
) -> tuple[_PinnedConnection, http.client.HTTPResponse]:
    """Connect to the first checked address that answers and send the request."""
    failures = []
    for address in policy.addresses(target):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        connection = _PinnedConnection(target, address, context)
        connection.timeout = min(remaining, _CONNECT_TIMEOUT_S)
        watchdog = threading.Timer(remaining, _cut, args=(connection,))
        watchdog.daemon = True
        watchdog.start()
        try:
            connection.connect()
            assert connection.raw is not None
            connection.raw.settimeout(min(remaining, _READ_TIMEOUT_S))
            connection.putrequest("GET", target.request_path, skip_accept_encoding=True)
            connection.putheader("User-Agent", "hermetic-node")
            connection.putheader("Accept-Encoding", "identity")  # no decompression bombs
            connection.endheaders()
            response = connection.getresponse()
        except (OSError, http.client.HTTPException) as e:
            watchdog.cancel()
            connection.close()
            failures.append(_failure(e))
            continue
        watchdog.cancel()
        return connection, response
    reason = failures[-1] if failures else "the deadline passed"
    raise InputError(f"cannot fetch input {target.url}: {reason}")


def _failure(error: BaseException) -> str:
    """What went wrong, in words that tell nothing of the node (no addresses or paths)."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return "the server's TLS certificate does not verify for its host name"
    if isinstance(error, ssl.SSLError):
        return "TLS failed"
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, http.client.HTTPException):
        return "the server's answer is not valid HTTP"
    return "the connection failed"


@contextmanager
def guarded_get(
    target: Target, policy: InputPolicy, *, context: ssl.SSLContext | None = None
) -> Iterator[tuple[Iterator[bytes], int | None]]:
    """GET a checked URL under the policy; yields (chunks, declared length).

    Every redirect is checked like the first URL; the chunks stop with an InputError at
    the policy's size cap or deadline (what was read is then discarded by the store).

    Raises:
        InputRefused: a redirect leads where the policy does not allow.
        InputError: the server cannot be reached or does not answer 200.
    """
    context = context or _node_tls_context()
    deadline = policy.fetch_deadline()
    url = target.url
    for _ in range(MAX_REDIRECTS + 1):
        connection, response = _open(target, policy, context, deadline)
        if response.status in (301, 302, 303, 307, 308):
            location = response.getheader("Location") or ""
            connection.close()
            url = urljoin(url, location)
            target = policy.check_url(url)
            continue
        break
    else:
        raise InputError(f"cannot fetch input {target.url}: more than {MAX_REDIRECTS} redirects")
    try:
        if response.status != 200:
            raise InputError(f"cannot fetch input {url}: HTTP {response.status}")
        declared = response.getheader("Content-Length")
        total = int(declared) if declared and declared.isdigit() else None
        if total is not None and total > policy.max_bytes:
            raise InputError(
                f"input {url} is {total} bytes, more than the node's cap of "
                f"{policy.max_bytes} bytes (--max-input)"
            )
        yield _capped_body(url, connection, response, policy, deadline), total
    finally:
        connection.close()


def _capped_body(
    url: str,
    connection: _PinnedConnection,
    response: http.client.HTTPResponse,
    policy: InputPolicy,
    deadline: float,
) -> Iterator[bytes]:
    watchdog = threading.Timer(max(deadline - time.monotonic(), 0), _cut, args=(connection,))
    watchdog.daemon = True
    watchdog.start()
    read = 0
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise InputError(f"cannot fetch input {url}: the node's deadline passed")
            if response.isclosed():  # http.client closes the socket after the last byte
                return
            try:
                if connection.raw is not None:
                    connection.raw.settimeout(min(remaining, _READ_TIMEOUT_S))
                chunk = response.read(min(_CHUNK, policy.max_bytes - read + 1))
            except (OSError, http.client.HTTPException) as e:
                if time.monotonic() >= deadline:
                    raise InputError(
                        f"cannot fetch input {url}: the node's deadline passed"
                    ) from None
                raise InputError(f"cannot fetch input {url}: {_failure(e)}") from None
            if not chunk:
                return
            read += len(chunk)
            if read > policy.max_bytes:
                raise InputError(
                    f"input {url} is larger than the node's cap of {policy.max_bytes} bytes "
                    "(--max-input); the fetch was stopped there"
                )
            yield chunk
    finally:
        watchdog.cancel()
