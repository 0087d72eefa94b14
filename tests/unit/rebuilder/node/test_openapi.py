"""docs/node-api.openapi.json is the node's API as FastAPI describes it, never stale."""

from __future__ import annotations

import json
from pathlib import Path

from rebuilder.node.openapi import openapi_document, openapi_text

DOCUMENT = Path(__file__).resolve().parents[4] / "docs" / "node-api.openapi.json"
REGENERATE = "python -m rebuilder.node.openapi > docs/node-api.openapi.json"


def test_the_published_openapi_document_is_current() -> None:
    assert DOCUMENT.read_text() == openapi_text(), f"stale; regenerate it: {REGENERATE}"


def test_it_lists_every_route_of_the_api() -> None:
    """Positive control: the document is the API's (a stale or empty file would differ)."""
    paths = set(openapi_document()["paths"])
    assert paths == {
        "/v1/node",
        "/v1/rebuilds",
        "/v1/rebuilds/{job_id}",
        "/v1/rebuilds/{job_id}/attestation",
        "/v1/rebuilds/{job_id}/artifacts/{path}",
        "/v1/rebuilds/{job_id}/cosign",
        "/v1/attestations",
    }
    assert json.loads(DOCUMENT.read_text())["info"]["version"] == "hermetic-node/v1"
