"""The node API's OpenAPI document, as docs/node-api.openapi.json holds it.

``python -m rebuilder.node.openapi > docs/node-api.openapi.json`` regenerates the file;
a unit test fails when it is stale.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from securesystemslib.signer import CryptoSigner

from rebuilder.node.api import ApiSettings, create_app
from rebuilder.node.auth import TokenRegistry
from rebuilder.node.node import Node, NodeSettings
from sandbox.config import SandboxConfig


def openapi_document() -> dict[str, Any]:
    """The API of a node made for the purpose (a scratch directory, a throwaway key): the
    routes and models do not depend on the node's settings."""
    with tempfile.TemporaryDirectory(prefix="hermetic-openapi-") as scratch:
        directory = Path(scratch)
        node = Node(
            NodeSettings(directory=directory / "node", builder_id="https://node.example"),
            CryptoSigner.generate_ed25519(),
            config=SandboxConfig(
                store_dir=directory / "store",
                work_dir=directory / "work",
                images_dir=directory / "images",
            ),
        )
        document: dict[str, Any] = create_app(node, ApiSettings(tokens=TokenRegistry({}))).openapi()
        return document


def openapi_text() -> str:
    """The file's exact text: stable key order, one trailing newline."""
    return json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(openapi_text())
