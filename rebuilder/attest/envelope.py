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
from typing import Any

from securesystemslib.dsse import Envelope
from securesystemslib.signer import Signature, Signer

from rebuilder.attest.statement import PAYLOAD_TYPE
from rebuilder.errors import Error
from sandbox.workspace import write_atomically


class EnvelopeError(Error):
    """A file is not a DSSE envelope (unreadable, truncated, not JSON, fields missing)."""


def sign_payload(payload: bytes, signers: Sequence[Signer]) -> dict[str, Any]:
    """A DSSE envelope of an in-toto payload, signed by every signer (none: unsigned)."""
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


def parse_envelope(data: bytes, where: str) -> StoredEnvelope:
    """Parse envelope bytes (``where`` names them in errors).

    Raises:
        EnvelopeError: not JSON, or not shaped like a DSSE envelope.
    """
    path = where
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EnvelopeError(
            f"{path}: not JSON ({e}); truncated or not an attestation — fetch it again"
        ) from None
    if not isinstance(document, dict):
        raise EnvelopeError(f"{path}: not a DSSE envelope (a JSON object was expected)")
    missing = [k for k in ("payload", "payloadType", "signatures") if k not in document]
    if missing:
        raise EnvelopeError(f"{path}: not a DSSE envelope: missing {', '.join(missing)}")
    try:
        payload = base64.b64decode(document["payload"], validate=True)
        signatures = tuple(
            Signature(
                keyid=str(entry["keyid"]),
                sig=base64.b64decode(entry["sig"], validate=True).hex(),
                unrecognized_fields={k: v for k, v in entry.items() if k not in ("keyid", "sig")},
            )
            for entry in document["signatures"]
        )
    except (binascii.Error, TypeError, KeyError, ValueError) as e:
        raise EnvelopeError(f"{path}: malformed DSSE envelope: {e!r}") from None
    return StoredEnvelope(payload, str(document["payloadType"]), signatures)
