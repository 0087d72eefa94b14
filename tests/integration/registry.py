"""A real local registry for tests: Debian's docker-registry, on loopback, with htpasswd
authentication, started and stopped by the test that needs it."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import requests

USER, PASSWORD = "builder", "not-a-real-secret"


@dataclass(frozen=True)
class LocalRegistry:
    address: str  # 127.0.0.1:PORT
    storage: Path  # the registry's filesystem storage

    def blob(self, digest: str) -> Path:
        """Where the registry keeps a blob (manifests are blobs too)."""
        hex_ = digest.removeprefix("sha256:")
        return self.storage / "docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def local_registry(base: Path) -> Iterator[LocalRegistry]:
    program = shutil.which("docker-registry")
    assert program, "docker-registry is not installed (apt-get install docker-registry)"
    base.mkdir(parents=True, exist_ok=True)
    password = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    (base / "htpasswd").write_text(f"{USER}:{password}\n")
    address = f"127.0.0.1:{_free_port()}"
    (base / "config.yml").write_text(
        f"""version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {base / "data"}
http:
  addr: {address}
auth:
  htpasswd:
    realm: hermetic-test
    path: {base / "htpasswd"}
"""
    )
    with (base / "registry.log").open("wb") as log:
        process = subprocess.Popen(
            [program, "serve", str(base / "config.yml")], stdout=log, stderr=log
        )
    try:
        for _ in range(200):
            try:
                if requests.get(f"http://{address}/v2/", timeout=1).status_code == 401:
                    break
            except requests.ConnectionError:
                pass
            assert process.poll() is None, (base / "registry.log").read_text()
            time.sleep(0.05)
        yield LocalRegistry(address=address, storage=base / "data")
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
