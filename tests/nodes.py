"""Rebuilder nodes for tests: each with its own key, directory and port, serving real HTTP
on loopback in this process (so a test can stand in for a compromised node)."""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import replace
from pathlib import Path

from rebuilder.attest.keys import generate_keypair, load_public_key, load_signer
from rebuilder.node.api import ApiSettings
from rebuilder.node.auth import TokenRegistry, token_digest
from rebuilder.node.execute import Connect
from rebuilder.node.node import Node, NodeSettings
from rebuilder.node.serve import Listen, server
from sandbox import connect_backend
from sandbox.config import SandboxConfig
from sandbox.input_policy import InputPolicy

TOKEN = "hmt_test-token-for-every-node"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_tokens(path: Path, scopes: list[str], token: str = TOKEN) -> Path:
    entry = {"name": "tester", "sha256": token_digest(token), "scopes": scopes}
    path.write_text(json.dumps({"tokens": [entry]}))
    return path


class RunningNode:
    """A node with a fresh key, serving on a free loopback port until ``stop()``."""

    def __init__(
        self,
        root: Path,
        name: str,
        config: SandboxConfig,
        *,
        connect: Connect = connect_backend,
        scopes: tuple[str, ...] = ("submit", "read", "cosign"),
        lease_s: float = 30.0,
        input_policy: InputPolicy | None = None,
    ) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.key_file = root / "key"
        generate_keypair(self.key_file)
        self.public_key_file = root / "key.pub"
        self.key = load_public_key(self.public_key_file)
        settings = NodeSettings(
            directory=root / "node",
            builder_id=f"https://hermetic.test/{name}",
            lease_s=lease_s,
            input_policy=input_policy or InputPolicy(),
        )
        own = replace(config, store_dir=root / "store", work_dir=root / "work")
        self.node = Node(settings, load_signer(str(self.key_file)), connect=connect, config=own)
        tokens = TokenRegistry.load(write_tokens(root / "tokens.json", list(scopes)))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = server(self.node, ApiSettings(tokens=tokens), Listen(port=self.port))
        self.node.start()
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "the node did not start listening"
            time.sleep(0.05)

    @property
    def pinned(self) -> str:
        return f"{self.url}={self.public_key_file}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.node.close()
