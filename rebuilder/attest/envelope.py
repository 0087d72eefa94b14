"""DSSE envelopes: signing a payload, writing it atomically, reading it back as stored.

The verifier works on the stored bytes: the payload is base64-decoded from the file and
the signatures are checked over exactly those bytes; nothing is re-serialized first.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rebuilder.attest.untrusted_json import UntrustedJsonError, parse_json, shown
from rebuilder.errors import UserError
from sandbox.uris import PAYLOAD_TYPE
from sandbox.workspace import write_atomically

if TYPE_CHECKING:
    from securesystemslib.signer import Signature, Signer


class EnvelopeError(UserError):
    """A file is not a DSSE envelope (unreadable, truncated, not JSON, fields missing)."""


def sign_payload(payload: bytes, signers: Sequence[Signer]) -> dict[str, Any]:
    """A DSSE envelope of an in-toto payload, signed by every signer (none: unsigned)."""
    if not signers:
        # DSSE's shape with no signature, as securesystemslib writes it (a test holds the
        # two equal), without loading the signing stack: securesystemslib's signers and
        # cryptography are most of what an unsigned build would import.
        return {
            "payload": base64.standard_b64encode(payload).decode(),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [],
        }
    from securesystemslib.dsse import Envelope

    envelope = Envelope(payload=payload, payload_type=PAYLOAD_TYPE, signatures={})
    for signer in signers:
        envelope.sign(signer)
    return envelope.to_dict()


def write_envelope(path: Path, envelope: dict[str, Any]) -> None:
    """Write atomically: a reader sees the old file or the whole new one, never a part."""
    write_atomically(path, json.dumps(envelope, indent=2).encode() + b"\n")


@dataclass(frozen=True)
class StoredEnvelope:
    """An envelope as read: the payload bytes as stored, and each signature entry."""

    payload: bytes
    payload_type: str
    signatures: tuple[Signature, ...]

    def pae(self) -> bytes:
        """What the signatures sign (DSSE's pre-authentication encoding)."""
        from securesystemslib.dsse import Envelope

        return Envelope(self.payload, self.payload_type, {}).pae()


def read_envelope(path: Path) -> StoredEnvelope:
    """Parse an envelope file, keeping every signature (duplicates too).

    Raises:
        EnvelopeError: unreadable, not JSON, or not shaped like a DSSE envelope.
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        raise EnvelopeError(f"{path}: cannot read: {e.strerror}") from None
    return parse_envelope(data, str(path))


MAX_SIGNATURES = 64  # each is tried against the keys: bound the work a file can ask for


def parse_envelope(data: bytes, where: str) -> StoredEnvelope:
    """Parse envelope bytes (``where`` names them in errors).

    Raises:
        EnvelopeError: not JSON we accept, or not shaped like a DSSE envelope.
    """
    try:
        document = parse_json(data, where)
    except UntrustedJsonError as e:
        raise EnvelopeError(f"{e}; truncated or not an attestation — fetch it again") from None
    return envelope_from_document(document, where)


def envelope_from_document(document: Any, where: str) -> StoredEnvelope:
    """An envelope from its parsed JSON (see :func:`parse_envelope`).

    Raises:
        EnvelopeError: not shaped like a DSSE envelope.
    """
    if not isinstance(document, dict):
        raise EnvelopeError(f"{where}: not a DSSE envelope (a JSON object was expected)")
    missing = [k for k in ("payload", "payloadType", "signatures") if k not in document]
    if missing:
        raise EnvelopeError(f"{where}: not a DSSE envelope: missing {', '.join(missing)}")
    payload, payload_type, entries = (
        document["payload"],
        document["payloadType"],
        document["signatures"],
    )
    if not isinstance(payload, str) or not isinstance(payload_type, str):
        raise EnvelopeError(
            f"{where}: malformed DSSE envelope: payload and payloadType are strings"
        )
    if not isinstance(entries, list) or len(entries) > MAX_SIGNATURES:
        raise EnvelopeError(
            f"{where}: malformed DSSE envelope: signatures is a list of at most {MAX_SIGNATURES}"
        )
    try:
        decoded = base64.b64decode(payload, validate=True)
        signatures = tuple(_signature(entry) for entry in entries)
    except (binascii.Error, TypeError, ValueError) as e:
        raise EnvelopeError(f"{where}: malformed DSSE envelope: {shown(str(e), 200)}") from None
    return StoredEnvelope(decoded, payload_type, signatures)


def _signature(entry: Any) -> Signature:
    """One signature entry; a missing key id (DSSE allows it) is an empty one."""
    if not isinstance(entry, dict):
        raise ValueError("a signature entry is an object")
    keyid, sig = entry.get("keyid", ""), entry.get("sig")
    if not isinstance(keyid, str) or not isinstance(sig, str):
        raise ValueError("a signature entry has a string sig (and keyid)")
    from securesystemslib.signer import Signature

    return Signature(
        keyid=keyid,
        sig=base64.b64decode(sig, validate=True).hex(),
        unrecognized_fields={k: v for k, v in entry.items() if k not in ("keyid", "sig")},
    )
