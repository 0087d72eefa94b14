"""Verifying an attestation: signatures (distinct keys against a threshold), payload and
statement types, and that artifacts match subjects. Every failure is a reason to show."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from securesystemslib.exceptions import UnverifiedSignatureError, VerificationError
from securesystemslib.signer import Key, Signature

from rebuilder.attest.envelope import StoredEnvelope, read_envelope
from rebuilder.attest.keys import SIGSTORE_KEYTYPE, KeyProblem, KeyRing
from rebuilder.attest.sigstore_bundle import BundleError, check_bundle, is_bundle
from rebuilder.attest.statement import PAYLOAD_TYPE, parse_statement
from rebuilder.attest.untrusted_json import UntrustedJsonError, parse_json
from rebuilder.formats.fields import StatementError


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


def verified_keys(envelope: StoredEnvelope, keys: KeyRing) -> tuple[Key, ...]:
    """The distinct keys with a valid signature on the envelope.

    One signature counts for at most one key and one key counts once, whatever the key
    ids say: a signature is tried first against the keys its key id names, then (an id is
    only a hint; cosign writes none) against the other public keys, and stops at the first
    that verifies it. Sigstore identities are tried only where the key id names them.
    """
    pae = envelope.pae()
    credited: dict[str, Key] = {}
    for signature in envelope.signatures:
        named = [
            (key, fp)
            for key, fp in zip(keys.keys, keys.fingerprints, strict=True)
            if key.keyid == signature.keyid and fp not in credited
        ]
        others = [
            (key, fp)
            for key, fp in zip(keys.keys, keys.fingerprints, strict=True)
            if key.keyid != signature.keyid
            and fp not in credited
            and key.keytype != SIGSTORE_KEYTYPE
        ]
        for key, fingerprint in named + others:
            if _signed_by(key, signature, pae):
                credited[fingerprint] = key
                break
    return tuple(credited.values())


def _signed_by(key: Key, signature: Signature, pae: bytes) -> bool:
    # securesystemslib insists on the ids matching; the id is ours to ignore
    claimed = Signature(key.keyid, signature.signature, signature.unrecognized_fields)
    try:
        key.verify_signature(claimed, pae)
    except (UnverifiedSignatureError, VerificationError):
        return False
    return True


def verify_attestation(
    path: Path, keys: Sequence[Key], *, threshold: int | None = None, artifacts: Sequence[Path] = ()
) -> Verification:
    """Check an attestation file (a DSSE envelope or a Sigstore bundle) against keys and
    artifacts.

    Args:
        keys: the verification keys; two spellings of one key are one key.
        threshold: distinct keys that must have signed (default: every distinct key).

    Raises:
        KeyProblem: no keys, a threshold below 1 or above the number of distinct keys.
        EnvelopeError: the file is unreadable or not a DSSE envelope at all.
        BundleError: a Sigstore bundle that cannot be parsed or used.
        OSError: an artifact cannot be read.
    """
    ring = KeyRing.of(keys)
    needed = len(ring) if threshold is None else threshold
    if needed < 1 or needed > len(ring):
        raise KeyProblem(f"threshold {needed}: expected 1 to {len(ring)} (the distinct keys given)")
    if _is_bundle_file(path):
        return _verify_bundle(path, ring, needed, artifacts)
    envelope = read_envelope(path)
    reasons = []
    signed_by = tuple(key.keyid for key in verified_keys(envelope, ring))
    if len(signed_by) < needed:
        reasons.append(
            f"{len(signed_by)} of the {len(ring)} given key(s) signed it validly; "
            f"{needed} needed ({len(envelope.signatures)} signature(s) in the envelope)"
        )
    return _with_statement(
        path, envelope.payload_type, envelope.payload, signed_by, needed, reasons, artifacts
    )


def _is_bundle_file(path: Path) -> bool:
    try:
        return is_bundle(parse_json(path.read_bytes(), str(path)))
    except (OSError, UntrustedJsonError):
        return False  # read_envelope says what is wrong with it


def _verify_bundle(
    path: Path, keys: KeyRing, needed: int, artifacts: Sequence[Path]
) -> Verification:
    data = path.read_bytes()
    message = "dsseEnvelope" not in parse_json(data, str(path))
    if message and len(artifacts) != 1:
        raise BundleError(
            f"{path}: a message-signature bundle vouches for one file: give exactly one --artifact"
        )
    check = check_bundle(data, keys.keys, artifacts[0].read_bytes() if message else None)
    signed_by = (check.signed_by,) if check.signed_by else ()
    reasons = (
        []
        if len(signed_by) >= needed
        else [
            f"{len(signed_by)} identity(ies) verified the Sigstore bundle; {needed} needed",
            *check.failures,
        ]
    )
    if message:
        matched = ((str(artifacts[0]), "(the signed file)"),) if signed_by else ()
        return Verification(
            path=path,
            signed_by=signed_by,
            threshold=needed,
            reasons=tuple(reasons),
            matched=matched,
        )
    return _with_statement(
        path,
        check.payload_type or "",
        check.payload or b"",
        signed_by,
        needed,
        reasons,
        artifacts,
    )


def _with_statement(
    path: Path,
    payload_type: str,
    payload: bytes,
    signed_by: tuple[str, ...],
    needed: int,
    reasons: list[str],
    artifacts: Sequence[Path],
) -> Verification:
    """The checks on what was signed: payload type, statement, artifacts against subjects."""
    if payload_type != PAYLOAD_TYPE:
        reasons.insert(
            0,
            f"payloadType is {payload_type!r}, not {PAYLOAD_TYPE!r}: not an in-toto attestation",
        )
    statement = None
    try:
        statement = parse_statement(payload)
    except StatementError as e:
        reasons.append(str(e))
    matched = []
    if statement is not None:
        for artifact in artifacts:
            digests = _digests(artifact)
            name = _subject_of(digests, statement.get("subject", []))
            if name is not None:
                matched.append((str(artifact), name))
            else:
                reasons.append(
                    f"{artifact}: sha256:{digests['sha256']} matches no subject of the attestation"
                )
    return Verification(
        path=path,
        signed_by=signed_by,
        threshold=needed,
        reasons=tuple(reasons),
        statement=statement,
        matched=tuple(matched),
    )


def _digests(artifact: Path) -> dict[str, str]:
    """The sha256 of a file, streamed."""
    hasher = hashlib.sha256()
    with artifact.resolve().open("rb") as stream:
        while chunk := stream.read(1 << 20):
            hasher.update(chunk)
    return {"sha256": hasher.hexdigest()}


def _subject_of(digests: dict[str, str], subjects: list[dict[str, Any]]) -> str | None:
    """The name of the subject whose sha256 is the artifact's. Only sha256 is read, as
    nodes and the gate read it: a subject named by another algorithm alone is one no
    node checked (a node co-signs only subjects that are exactly its sha256 outputs)."""
    for item in subjects:
        digest = item.get("digest")
        if isinstance(digest, dict) and digest.get("sha256") == digests["sha256"]:
            return str(item.get("name", ""))
    return None
