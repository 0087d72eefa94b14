"""Validation against the published JSON Schemas in docs/schemas/, as a user's tool would
do it (draft 2020-12, formats checked), for unit and integration tests alike."""

from __future__ import annotations

import base64
import datetime
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

REPO = Path(__file__).resolve().parent.parent
SCHEMAS = REPO / "docs" / "schemas"
FORMATS_PAGE = REPO / "docs" / "formats.md"
_ROW = re.compile(r"^\| `(?P<uri>https://[^`]+)` \|.*\| \[[^]]+\]\(schemas/(?P<file>[^)]+)\) \|$")


def load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((SCHEMAS / name).read_text())
    return document


@cache
def _registry() -> Registry[Any]:
    resources = []
    for path in sorted(SCHEMAS.glob("*.json")):
        schema = json.loads(path.read_text())
        resources.append((schema["$id"], Resource.from_contents(schema)))
    return Registry().with_resources(resources)


def errors(document: Any, schema: str) -> list[str]:
    """Every way ``document`` breaks ``schema`` (a file name under docs/schemas/)."""
    validator = Draft202012Validator(
        load(schema), registry=_registry(), format_checker=Draft202012Validator.FORMAT_CHECKER
    )
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message[:300]}"
        for error in validator.iter_errors(document)
    ]


def validate(document: Any, schema: str) -> None:
    """Raises AssertionError listing every error of ``document`` under ``schema``."""
    found = errors(document, schema)
    assert not found, f"{schema}:\n" + "\n".join(found)


@cache
def schema_by_uri() -> dict[str, str]:
    """The table of docs/formats.md: URI → schema file."""
    table = {}
    for line in FORMATS_PAGE.read_text().splitlines():
        if match := _ROW.match(line):
            table[match["uri"]] = match["file"]
    return table


def validate_document(document: dict[str, Any]) -> str:
    """Validate a JSON document against the schema its ``_schema`` names; return that file."""
    schema = schema_by_uri()[document["_schema"]]
    validate(document, schema)
    return schema


def statement(envelope: Path) -> dict[str, Any]:
    """The in-toto Statement inside a DSSE envelope file (the envelope validated first)."""
    data = json.loads(envelope.read_text())
    validate(data, "dsse-envelope.schema.json")
    payload: dict[str, Any] = json.loads(base64.b64decode(data["payload"]))
    return payload


def validate_envelope(envelope: Path) -> str:
    """Validate an envelope and its statement against the schema of its predicate type."""
    payload = statement(envelope)
    validate(payload, "statement.schema.json")
    schema = schema_by_uri()[payload["predicateType"]]
    validate(payload, schema)
    return schema


def toml_as_json(value: Any) -> Any:
    """A parsed TOML document as its JSON equivalent (date-times as RFC 3339 strings)."""
    if isinstance(value, dict):
        return {key: toml_as_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [toml_as_json(item) for item in value]
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat().replace("+00:00", "Z")
    return value
