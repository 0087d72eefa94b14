"""Pinned inputs: fetched once into the content-addressed store, digest-checked every time."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest

from sandbox.digests import Sha256
from sandbox.errors import DigestMismatch, InputError
from sandbox.fetch import fetch_input
from sandbox.spec import InputSpec
from sandbox.store import ContentStore

DATA = b"pinned input bytes\n" * 1000
DIGEST = Sha256(hashlib.sha256(DATA).hexdigest())


def spec_for(url: str, digest: Sha256 = DIGEST) -> InputSpec:
    return InputSpec(url=url, sha256=digest, dest=PurePosixPath("dep.bin"))


def test_file_url_is_fetched_once(tmp_path: Path) -> None:
    source = tmp_path / "dep.bin"
    source.write_bytes(DATA)
    store = ContentStore(tmp_path / "store")
    seen: list[int] = []
    path, fetched = fetch_input(spec_for(source.as_uri()), store, lambda u, d, t: seen.append(d))
    assert fetched and path.read_bytes() == DATA and seen[-1] == len(DATA)
    source.unlink()  # a second build needs nothing from the URL
    again, fetched_again = fetch_input(spec_for(source.as_uri()), store)
    assert again == path and not fetched_again


def test_mismatch_shows_both_digests_and_keeps_nothing(tmp_path: Path) -> None:
    source = tmp_path / "dep.bin"
    source.write_bytes(DATA + b"tampered")
    store = ContentStore(tmp_path / "store")
    with pytest.raises(DigestMismatch) as caught:
        fetch_input(spec_for(source.as_uri()), store)
    message = str(caught.value)
    assert DIGEST in message
    assert hashlib.sha256(DATA + b"tampered").hexdigest() in message
    assert store.get(DIGEST) is None
    assert list((tmp_path / "store" / "sha256").iterdir()) == []


def test_damaged_store_entry_is_fetched_again(tmp_path: Path) -> None:
    source = tmp_path / "dep.bin"
    source.write_bytes(DATA)
    store = ContentStore(tmp_path / "store")
    path, _ = fetch_input(spec_for(source.as_uri()), store)
    path.chmod(0o644)
    path.write_bytes(b"bit rot")
    again, fetched = fetch_input(spec_for(source.as_uri()), store)
    assert fetched and again.read_bytes() == DATA


def test_missing_file_url(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read"):
        fetch_input(spec_for((tmp_path / "absent").as_uri()), ContentStore(tmp_path / "store"))


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path != "/dep.bin":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(DATA)))
        self.end_headers()
        self.wfile.write(DATA)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_http_fetch_with_progress(tmp_path: Path, http_url: str) -> None:
    store = ContentStore(tmp_path / "store")
    totals: list[int | None] = []
    path, fetched = fetch_input(
        spec_for(f"{http_url}/dep.bin"), store, lambda u, d, t: totals.append(t)
    )
    assert fetched and path.read_bytes() == DATA and totals[-1] == len(DATA)


def test_http_error_is_an_input_error(tmp_path: Path, http_url: str) -> None:
    with pytest.raises(InputError, match="404"):
        fetch_input(spec_for(f"{http_url}/missing"), ContentStore(tmp_path / "store"))


def test_https_trusts_the_system_store_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ssl

    from sandbox.fetch import trusted_cas

    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    system = ssl.get_default_verify_paths().cafile
    assert trusted_cas() == (system if system and Path(system).is_file() else True)
    monkeypatch.setenv("SSL_CERT_FILE", "/etc/my-ca.pem")
    assert trusted_cas() == "/etc/my-ca.pem"
