"""Verifying attestations, one path for ``verify``, ``rebuild`` and ``gate``: bytes →
:func:`sniff` (a DSSE envelope or a Sigstore bundle) → :func:`open_signed` (the distinct
trusted keys or identities whose signature holds, and what they signed) →
:func:`signed_statement` (the in-toto statement, validated). :func:`verify_attestation`
adds a threshold and artifacts for ``hermetic verify``; every failure is a reason to show."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from securesystemslib.exceptions import UnverifiedSignatureError, VerificationError
from securesystemslib.signer import Key, Signature

from rebuilder.attest.envelope import EnvelopeError, StoredEnvelope, envelope_from_document
from rebuilder.attest.keys import SIGSTORE_KEYTYPE, KeyProblem, KeyRing
from rebuilder.attest.sigstore_bundle import BundleError, SigstoreTrust, check_bundle, is_bundle
from rebuilder.attest.statement import read_statement
from rebuilder.attest.untrusted_json import UntrustedJsonError, parse_json
from rebuilder.formats.fields import Statement, StatementError
from sandbox.digests import sha256_stream
from sandbox.uris import PAYLOAD_TYPE


@dataclass(frozen=True, kw_only=True)
class Verification:
    """What ``hermetic verify`` found; ``ok`` only when there is no reason against it."""

    path: Path
    signed_by: tuple[str, ...]  # key ids whose signature verified
    threshold: int
    reasons: tuple[str, ...]  # why it does not verify; empty when it does
    statement: Statement | None = None
    matched: tuple[tuple[str, str], ...] = field(default=())  # (artifact, subject name)

    @property
    def ok(self) -> bool:
        return not self.reasons

    def to_json(self) -> dict[str, Any]:
        document = self.statement.document if self.statement else {}
        return {
            "verified": self.ok,
            "attestation": str(self.path),
            "signed_by": list(self.signed_by),
            "threshold": self.threshold,
            "reasons": list(self.reasons),
            "predicate_type": document.get("predicateType"),
            "subjects": document.get("subject", []),
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


class NotAnAttestation(EnvelopeError):
    """JSON that is neither a DSSE envelope nor a Sigstore bundle (not ours to read)."""


class Container(StrEnum):
    """What holds a signed payload."""

    ENVELOPE = "DSSE envelope"
    BUNDLE = "Sigstore bundle"


def sniff(document: Any) -> Container | None:
    """What a parsed attestation file is (None: neither, not an attestation of ours)."""
    if is_bundle(document):
        return Container.BUNDLE
    if isinstance(document, dict) and "payloadType" in document:
        return Container.ENVELOPE
    return None


@dataclass(frozen=True, kw_only=True)
class Signed:
    """Attestation bytes whose signatures were checked against a key ring."""

    container: Container
    keys: tuple[Key, ...]  # the ring's keys (or Sigstore identities) whose signature holds
    payload_type: str
    payload: bytes  # empty for a message-signature bundle: it signs the artifact itself
    signatures: int  # signature entries it holds
    failures: tuple[str, ...] = ()  # why each Sigstore identity did not verify
    message: bool = False  # a message-signature bundle


def open_signed(
    data: bytes,
    where: str,
    ring: KeyRing,
    *,
    artifact: bytes | None = None,
    trust: SigstoreTrust = SigstoreTrust(),  # noqa: B008 - frozen: one value, never changed
) -> Signed:
    """Check the signatures of an attestation file's bytes against ``ring``.

    Args:
        data: the file as stored (the payload is checked as stored, never re-serialized).
        where: names the file in errors.
        artifact: for a message-signature bundle, the signed file's bytes.
        trust: the Sigstore instance that verifies a bundle.

    Raises:
        NotAnAttestation: JSON that is neither a bundle nor a DSSE envelope.
        EnvelopeError: not JSON we accept, or a malformed envelope.
        BundleError: a Sigstore bundle that cannot be parsed or used.
    """
    try:
        document = parse_json(data, where)
    except UntrustedJsonError as e:
        raise EnvelopeError(f"{e}; truncated or not an attestation — fetch it again") from None
    if sniff(document) is Container.BUNDLE:
        message = "dsseEnvelope" not in document
        checked = check_bundle(data, ring.keys, artifact if message else None, trust=trust)
        identity = tuple(
            key
            for key in ring.keys
            if key.keyid == checked.signed_by and key.keytype == SIGSTORE_KEYTYPE
        )[:1]
        return Signed(
            container=Container.BUNDLE,
            keys=identity,
            payload_type=checked.payload_type or "",
            payload=checked.payload or b"",
            signatures=1,
            failures=checked.failures,
            message=message,
        )
    try:
        envelope = envelope_from_document(document, where)
    except EnvelopeError as e:
        if sniff(document) is None:  # JSON, but no attestation at all
            raise NotAnAttestation(str(e)) from None
        raise
    return Signed(
        container=Container.ENVELOPE,
        keys=verified_keys(envelope, ring),
        payload_type=envelope.payload_type,
        payload=envelope.payload,
        signatures=len(envelope.signatures),
    )


def signed_statement(signed: Signed) -> Statement:
    """The in-toto statement that was signed, validated.

    Raises:
        StatementError: the payload is not an in-toto statement (its type or its content).
    """
    if signed.payload_type != PAYLOAD_TYPE:
        raise StatementError(
            f"payloadType is {signed.payload_type!r}, not {PAYLOAD_TYPE!r}: "
            "not an in-toto attestation"
        )
    return read_statement(signed.payload)


def verify_attestation(
    path: Path,
    keys: Sequence[Key],
    *,
    threshold: int | None = None,
    artifacts: Sequence[Path] = (),
    trust: SigstoreTrust = SigstoreTrust(),  # noqa: B008 - frozen: one value, never changed
) -> Verification:
    """Check an attestation file (a DSSE envelope or a Sigstore bundle) against keys and
    artifacts.

    Args:
        keys: the verification keys; two spellings of one key are one key.
        threshold: distinct keys that must have signed (default: every distinct key).
        trust: the Sigstore instance that verifies a bundle.

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
    try:
        data = path.read_bytes()
    except OSError as e:
        raise EnvelopeError(f"{path}: cannot read: {e.strerror}") from None
    message = _is_message_bundle(data, str(path))
    if message and len(artifacts) != 1:
        raise BundleError(
            f"{path}: a message-signature bundle vouches for one file: give exactly one --artifact"
        )
    signed = open_signed(
        data,
        str(path),
        ring,
        artifact=artifacts[0].read_bytes() if message else None,
        trust=trust,
    )
    signed_by = tuple(key.keyid for key in signed.keys)
    reasons = []
    if len(signed_by) < needed:
        if signed.container is Container.BUNDLE:
            reasons += [
                f"{len(signed_by)} identity(ies) verified the Sigstore bundle; {needed} needed",
                *signed.failures,
            ]
        else:
            reasons.append(
                f"{len(signed_by)} of the {len(ring)} given key(s) signed it validly; "
                f"{needed} needed ({signed.signatures} signature(s) in the envelope)"
            )
    statement: Statement | None = None
    if signed.message:
        matched: tuple[tuple[str, str], ...] = (
            ((str(artifacts[0]), "(the signed file)"),) if signed_by else ()
        )
    else:
        statement, matched = _what_was_signed(signed, reasons, artifacts)
    return Verification(
        path=path,
        signed_by=signed_by,
        threshold=needed,
        reasons=tuple(reasons),
        statement=statement,
        matched=matched,
    )


def _is_message_bundle(data: bytes, where: str) -> bool:
    try:
        document = parse_json(data, where)
    except UntrustedJsonError:
        return False  # open_signed says what is wrong with it
    return sniff(document) is Container.BUNDLE and "dsseEnvelope" not in document


def _what_was_signed(
    signed: Signed, reasons: list[str], artifacts: Sequence[Path]
) -> tuple[Statement | None, tuple[tuple[str, str], ...]]:
    """The checks on what was signed (payload type, statement, artifacts against
    subjects), adding to ``reasons``: the statement, and (artifact, subject) matched."""
    if signed.payload_type != PAYLOAD_TYPE:
        reasons.insert(
            0,
            f"payloadType is {signed.payload_type!r}, not {PAYLOAD_TYPE!r}: "
            "not an in-toto attestation",
        )
    statement = None
    try:  # read even under another payload type: the reasons say all that is wrong
        statement = read_statement(signed.payload)
    except StatementError as e:
        reasons.append(str(e))
    matched = []
    if statement is not None:
        for artifact in artifacts:
            digest = _sha256(artifact)
            # only sha256 is read, as nodes and the gate read it: a subject named by another
            # algorithm alone is one no node checked
            name = next((s.name for s in statement.subjects if s.sha256 == digest), None)
            if name is not None:
                matched.append((str(artifact), name))
            else:
                reasons.append(f"{artifact}: sha256:{digest} matches no subject of the attestation")
    return statement, tuple(matched)


def _sha256(artifact: Path) -> str:
    """The sha256 of a file, streamed."""
    with artifact.resolve().open("rb") as stream:
        return sha256_stream(stream)[0]
