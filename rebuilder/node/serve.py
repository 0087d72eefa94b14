"""Running a node: the app on uvicorn (TLS and client certificates when configured),
with the workers started before it listens and stopped after it stops.

With mutual TLS, each connection's verified client certificate subject (RFC 4514) is put
where the API finds it (``request.state``), so scopes can follow the subject.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from cryptography import x509
from uvicorn.protocols.http.h11_impl import H11Protocol

from rebuilder.node.api import TLS_SUBJECT, ApiSettings, create_app
from rebuilder.node.node import Node


class _CertifiedH11(H11Protocol):
    """HTTP/1.1 that tells the app who the verified client certificate names."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        tls = transport.get_extra_info("ssl_object")
        der = tls.getpeercert(binary_form=True) if tls is not None else None
        if der:
            subject = x509.load_der_x509_certificate(der).subject.rfc4514_string()
            # this connection's own copy: the state every request of it starts from
            self.app_state = {**self.app_state, TLS_SUBJECT: subject}


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
        **options,  # type: ignore[arg-type]
    )
    return uvicorn.Server(config)


def serve(node: Node, api: ApiSettings, listen: Listen) -> None:
    """Serve until interrupted; jobs in flight are reclaimed after a restart."""
    node.start()
    try:
        server(node, api, listen).run()
    finally:
        node.close()
