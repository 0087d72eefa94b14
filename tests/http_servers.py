"""Real HTTP(S) servers on loopback for tests of what clients send: each records every
request (path, Host, Authorization) and answers from a table of routes."""

from __future__ import annotations

import base64
import hashlib
import http.server
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sandbox.digests import Sha256

Answer = tuple[int, dict[str, str], bytes]
Route = Answer | Callable[[str], Answer]


@dataclass
class Seen:
    path: str
    host: str
    authorization: str | None


@dataclass
class Server:
    """A server's address, its routes (path -> answer) and what it was asked."""

    port: int = 0
    routes: dict[str, Route] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    basic: tuple[str, str] | None = None  # answer 401 without these credentials

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def authorizations(self) -> set[str | None]:
        return {request.authorization for request in self.seen}

    def answer(self, path: str, authorization: str | None) -> Answer:
        if self.basic is not None:
            expected = "Basic " + base64.b64encode(":".join(self.basic).encode()).decode()
            if authorization != expected:
                return 401, {"WWW-Authenticate": 'Basic realm="test"'}, b""
        route = self.routes.get(path.split("?", 1)[0])
        if route is None:
            return 404, {}, b"not found"
        return route(path) if callable(route) else route


@contextmanager
def serving(*servers: Server) -> Iterator[tuple[Server, ...]]:
    """Run each server on its own loopback port until the block ends."""
    running = []
    try:
        for server in servers:

            class Handler(http.server.BaseHTTPRequestHandler):
                owner = server

                def do_GET(self) -> None:
                    self.owner.seen.append(
                        Seen(
                            path=self.path,
                            host=self.headers.get("Host", ""),
                            authorization=self.headers.get("Authorization"),
                        )
                    )
                    status, headers, body = self.owner.answer(
                        self.path, self.headers.get("Authorization")
                    )
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

                def log_message(self, *args: object) -> None:
                    pass

            httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
            server.port = httpd.server_address[1]
            thread = threading.Thread(target=httpd.serve_forever, daemon=True)
            thread.start()
            running.append((httpd, thread))
        yield servers
    finally:
        for httpd, thread in running:
            httpd.shutdown()
            httpd.server_close()
            thread.join()


# What a node may fetch, served by a Listener (the input-policy tests and the node's).
DATA = b"an input the node may fetch\n" * 100
DIGEST = Sha256(hashlib.sha256(DATA).hexdigest())


class Listener:
    """A loopback HTTP(S) server that records every request it sees."""

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        self.seen: list[str] = []
        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
        listener = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                listener.seen.append(self.path)
                listener.headers = dict(self.headers)
                status, headers, body = listener.routes.get(self.path, (404, {}, b""))
                self.send_response(status)
                for name, value in headers.items():
                    if not name.startswith("_"):
                        self.send_header(name, value)
                if "_no_length" not in headers:  # else HTTP/1.0: the body ends at close
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.headers: dict[str, str] = {}
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if context is not None:
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
