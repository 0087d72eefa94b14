"""Running a node: the app on uvicorn (TLS and client certificates when configured),
with the workers started before it listens and stopped after it stops.

With mutual TLS, each connection's verified client certificate subject (RFC 4514) is put
where the API finds it (``request.state``), so scopes can follow the subject.

Connections are strangers' too: at most ``max_connections`` are open (more are closed at
once), a request's headers must arrive within HEADER_TIMEOUT_S of the connection (or of
the previous answer), the descriptor limit is raised to the hard limit, and a stop waits
at most SHUTDOWN_GRACE_S for requests in flight. A reverse proxy in front (nginx,
haproxy) can add per-address limits; see docs/node.md.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import ssl
from dataclasses import dataclass
from pathlib import Path

import h11
import uvicorn
from cryptography import x509
from uvicorn.protocols.http.h11_impl import H11Protocol

from rebuilder.node.api import TLS_SUBJECT, ApiSettings, create_app
from rebuilder.node.node import Node

log = logging.getLogger(__name__)

HEADER_TIMEOUT_S = 10.0
SHUTDOWN_GRACE_S = 10


class _CertifiedH11(H11Protocol):
    """HTTP/1.1 that tells the app who the verified client certificate names, closes
    connections beyond the limit, and gives a request's headers HEADER_TIMEOUT_S."""

    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.limit_concurrency is not None and len(self.connections) > self.limit_concurrency:
            transport.close()  # its descriptor is not kept for a stranger
            return
        self._expect_headers()
        tls = transport.get_extra_info("ssl_object")
        der = tls.getpeercert(binary_form=True) if tls is not None else None
        if der:
            subject = x509.load_der_x509_certificate(der).subject.rfc4514_string()
            # this connection's own copy: the state every request of it starts from
            self.app_state = {**self.app_state, TLS_SUBJECT: subject}

    def _expect_headers(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._header_timer = self.loop.call_later(HEADER_TIMEOUT_S, self._headers_too_slow)

    def _headers_too_slow(self) -> None:
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()

    def handle_events(self) -> None:
        super().handle_events()
        if self._header_timer is not None and self.conn.their_state is not h11.IDLE:
            self._header_timer.cancel()  # the request's headers are in
            self._header_timer = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._expect_headers()  # the next request's headers: the same time again

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        super().connection_lost(exc)


@dataclass(frozen=True, kw_only=True)
class Listen:
    host: str = "127.0.0.1"
    port: int = 8470
    tls_cert: Path | None = None  # the node's server certificate and key
    tls_key: Path | None = None
    client_ca: Path | None = None  # mutual TLS: client certificates must chain to this CA


def server(node: Node, api: ApiSettings, listen: Listen) -> uvicorn.Server:
    """A uvicorn server for the node (``run()`` blocks; tests run it in a thread)."""
    options: dict[str, object] = {}
    if listen.tls_cert and listen.tls_key:
        options = {"ssl_certfile": str(listen.tls_cert), "ssl_keyfile": str(listen.tls_key)}
        if listen.client_ca:
            options |= {"ssl_ca_certs": str(listen.client_ca), "ssl_cert_reqs": ssl.CERT_REQUIRED}
    config = uvicorn.Config(
        create_app(node, api),
        host=listen.host,
        port=listen.port,
        log_level="warning",
        access_log=False,
        http=_CertifiedH11,
        limit_concurrency=api.max_connections,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        **options,  # type: ignore[arg-type]
    )
    return uvicorn.Server(config)


def raise_descriptor_limit() -> int:
    """Raise this process's open-file limit to its hard limit (one per connection, and
    the builds' own); returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as e:
            log.warning("could not raise the open-file limit to %s: %s", hard, e)
    return soft


def serve(node: Node, api: ApiSettings, listen: Listen) -> None:
    """Serve until interrupted; jobs in flight are reclaimed after a restart."""
    raise_descriptor_limit()
    node.start()
    try:
        server(node, api, listen).run()
    finally:
        node.close()
