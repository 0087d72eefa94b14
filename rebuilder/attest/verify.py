"""Verifying an attestation: signatures (distinct keys against a threshold), payload and
statement types, and that artifacts match subjects. Every failure is a reason to show."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from securesystemslib.exceptions import UnverifiedSignatureError, VerificationError
from securesystemslib.signer import Key, Signature

from rebuilder.attest.envelope import StoredEnvelope, read_envelope
from rebuilder.attest.statement import PAYLOAD_TYPE, StatementError, parse_statement
from sandbox.digests import sha256_file


@dataclass(frozen=True, kw_only=True)
class Verification:
    """What ``hermetic verify`` found; ``ok`` only when there is no reason against it."""

    path: Path
    signed_by: tuple[str, ...]  # key ids whose signature verified
    threshold: int
    reasons: tuple[str, ...]  # why it does not verify; empty when it does
    statement: dict[str, Any] | None = None
    matched: tuple[tuple[str, str], ...] = field(default=())  # (artifact, subject name)

    @property
    def ok(self) -> bool:
        return not self.reasons

    def to_json(self) -> dict[str, Any]:
        statement = self.statement or {}
        return {
            "verified": self.ok,
            "attestation": str(self.path),
            "signed_by": list(self.signed_by),
            "threshold": self.threshold,
            "reasons": list(self.reasons),
            "predicate_type": statement.get("predicateType"),
            "subjects": statement.get("subject", []),
            "artifacts": [{"path": a, "subject": s} for a, s in self.matched],
        }


def verified_keys(envelope: StoredEnvelope, keys: Sequence[Key]) -> tuple[str, ...]:
    """Ids of the distinct keys with a valid signature; a key signing twice counts once.

    A signature without a key id (as cosign writes them) is tried against every key.
    """
    pae = envelope.pae()
    accepted: list[str] = []
    for key in {key.keyid: key for key in keys}.values():
        for signature in envelope.signatures:
            if signature.keyid not in ("", key.keyid):
                continue
            if not signature.keyid:  # the key checks that a signature names it
                signature = Signature(key.keyid, signature.signature, signature.unrecognized_fields)
            try:
                key.verify_signature(signature, pae)
            except (UnverifiedSignatureError, VerificationError):
                continue
            accepted.append(key.keyid)
            break
    return tuple(accepted)


def verify_attestation(
    path: Path, keys: Sequence[Key], *, threshold: int | None = None, artifacts: Sequence[Path] = ()
) -> Verification:
    """Check an attestation file against keys and artifacts.

    Raises:
        EnvelopeError: the file is unreadable or not a DSSE envelope at all.
        OSError: an artifact cannot be read.
    """
    envelope = read_envelope(path)
    distinct = len({key.keyid for key in keys})
    needed = threshold if threshold is not None else distinct
    reasons = []
    if envelope.payload_type != PAYLOAD_TYPE:
        reasons.append(
            f"payloadType is {envelope.payload_type!r}, not {PAYLOAD_TYPE!r}: "
            "not an in-toto attestation"
        )
    signed_by = verified_keys(envelope, keys)
    if len(signed_by) < needed:
        reasons.append(
            f"{len(signed_by)} of the {distinct} given key(s) signed it validly; "
            f"{needed} needed ({len(envelope.signatures)} signature(s) in the envelope)"
        )
    statement = None
    try:
        statement = parse_statement(envelope.payload)
    except StatementError as e:
        reasons.append(str(e))
    matched = []
    if statement is not None:
        subjects = {
            item.get("digest", {}).get("sha256"): item.get("name", "")
            for item in statement.get("subject", [])
        }
        for artifact in artifacts:
            digest, _ = sha256_file(artifact.resolve())
            if digest in subjects:
                matched.append((str(artifact), subjects[digest]))
            else:
                reasons.append(f"{artifact}: sha256:{digest} matches no subject of the attestation")
    return Verification(
        path=path,
        signed_by=signed_by,
        threshold=needed,
        reasons=tuple(reasons),
        statement=statement,
        matched=tuple(matched),
    )
