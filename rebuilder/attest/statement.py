"""in-toto Statement v1: made from our dicts, validated with the in-toto attestation models.

The payload is our own canonical JSON (sorted keys, no spaces), not protobuf's output:
protobuf's Struct turns every integer into a float. The models still decide what is valid,
except that a field spelled by its proto name (``predicate_type``), which protobuf's JSON
reader accepts beside the JSON name, is refused: one payload has one reading.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.statement import STATEMENT_TYPE_URI
from in_toto_attestation.v1.statement import Statement as InTotoStatement

from rebuilder.attest.untrusted_json import UntrustedJsonError, parse_json, shown
from rebuilder.formats.fields import Statement, StatementError, Subject
from sandbox.digests import canonical_json
from sandbox.uris import SLSA_PROVENANCE


def make_statement(
    subjects: Sequence[Subject], predicate_type: str, predicate: Mapping[str, Any]
) -> bytes:
    """The payload bytes of a Statement, after the in-toto models accepted it.

    Raises:
        StatementError: no subjects, a subject without digest, an invalid predicate.
    """
    document = {
        "_type": STATEMENT_TYPE_URI,
        "subject": [item.to_dict() for item in subjects],
        "predicateType": predicate_type,
        "predicate": dict(predicate),
    }
    payload = canonical_json(document)
    parse_statement(payload)  # what we sign must be what a verifier accepts
    return payload


_FREE_FORM = frozenset(
    {"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"}
)


def proto_alias(document: Any, descriptor: Descriptor, where: str) -> str | None:
    """Where ``document`` names a field of ``descriptor`` by its proto name instead of its
    JSON name (``predicate_type`` for ``predicateType``), or None."""
    if not isinstance(document, dict):
        return None
    for field in descriptor.fields:
        if field.name != field.json_name and field.name in document:
            return f"{where}.{field.name}"
        message = field.message_type
        value = document.get(field.json_name)
        if (
            value is None
            or message is None
            or message.full_name in _FREE_FORM
            or message.GetOptions().map_entry
        ):
            continue
        items = value if field.is_repeated and isinstance(value, list) else [value]
        for index, item in enumerate(items):
            place = f"{where}.{field.json_name}" + (f"[{index}]" if field.is_repeated else "")
            found = proto_alias(item, message, place)
            if found is not None:
                return found
    return None


def parse_statement(payload: bytes) -> dict[str, Any]:
    """A Statement from payload bytes, validated (and its predicate, for SLSA v1).

    Raises:
        StatementError: not JSON, not a Statement v1, or an invalid predicate.
    """
    try:
        document = parse_json(payload, "the payload")
    except UntrustedJsonError as e:
        raise StatementError(str(e)) from None
    if not isinstance(document, dict):
        raise StatementError("the payload is not a JSON object")
    kind = document.get("_type")
    if kind != STATEMENT_TYPE_URI:
        found = "no _type" if kind is None else f"_type {shown(kind)}"
        raise StatementError(f"not an in-toto Statement v1: {found}, expected {STATEMENT_TYPE_URI}")
    slsa = document.get("predicateType") == SLSA_PROVENANCE
    alias = proto_alias(document, statement_pb2.Statement.DESCRIPTOR, "statement") or (
        proto_alias(document.get("predicate"), provenance_pb2.Provenance.DESCRIPTOR, "predicate")
        if slsa
        else None
    )
    if alias is not None:
        raise StatementError(
            f"{alias}: a protobuf field name where its JSON name belongs; "
            "a statement is read one way only"
        )
    try:
        proto = json_format.ParseDict(document, statement_pb2.Statement())
        InTotoStatement.copy_from_pb(proto).validate()
        if slsa:
            json_format.ParseDict(document["predicate"], provenance_pb2.Provenance())
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as e:
        raise StatementError(f"invalid statement: {shown(str(e), 300)}") from None
    return document


def read_statement(payload: bytes) -> Statement:
    """A Statement from payload bytes, validated and typed (see :func:`parse_statement`).

    Raises:
        StatementError: not JSON, not a Statement v1, an invalid predicate or subject.
    """
    return Statement.from_dict(parse_statement(payload))
