"""Signed policies: the policy owners sign a statement about the policy file's sha256 and
the fingerprint of every key it trusts, kept beside it as a detached DSSE envelope
(``POLICY.intoto.json``); ``hermetic gate --policy-key`` then uses the policy only with
enough of their signatures, over exactly the bytes it parses and the keys it loaded.

A signed policy must expire (a signature without an end could be replayed for ever), and
a verifier may also refuse versions below a minimum (an older signed policy put back)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from securesystemslib.signer import Key, Signer

from rebuilder.attest.envelope import EnvelopeError, sign_payload, write_envelope
from rebuilder.attest.keys import KeyProblem, KeyRing
from rebuilder.attest.sigstore_bundle import BundleError
from rebuilder.attest.untrusted_json import UntrustedJsonError, parse_json
from rebuilder.attest.verify import Container, open_signed, signed_statement
from rebuilder.formats.fields import PredicateError, StatementError, Subject
from rebuilder.formats.gate import PolicyStatement, SignedKey
from rebuilder.gate.policy import Policy, PolicyError, parse_policy, read_policy_bytes
from sandbox.uris import POLICY_PREDICATE

MAX_SIGNATURE_BYTES = 1024**2


def signature_path(policy: Path) -> Path:
    """Where a policy's signatures are kept: beside it, ``NAME.intoto.json``."""
    return policy.with_name(f"{policy.name}.intoto.json")


def policy_statement(data: bytes, name: str, policy: Policy) -> bytes:
    """What the owners sign: the policy file's digest, its name, version and expiry, and
    the operator and fingerprint of every key it trusts, in file order (key files are read
    apart from the policy's bytes: their content is bound here)."""
    statement = PolicyStatement(
        file=name,
        keys=tuple(
            SignedKey(operator=binding.operator, fingerprint=binding.fingerprint)
            for binding in policy.key_bindings()
        ),
        version=policy.version,
        expires=policy.expires,
    )
    return statement.statement([Subject(name, hashlib.sha256(data).hexdigest())])


def _must_expire(path: Path, policy: Policy) -> None:
    if policy.expires is None:
        raise PolicyError(
            f"{path}: policy.expires: a signed policy must expire (its owners' signatures "
            "could otherwise be replayed for ever); add e.g. expires = 2027-06-30T00:00:00Z"
        )


def sign_policy(path: Path, signers: Sequence[Signer], *, now: datetime) -> Path:
    """Sign a (valid, unexpired) policy; owners sign in turn: a signature envelope over the
    same statement gets the new signatures added, any other is replaced.

    Raises:
        PolicyError: the policy is invalid or expired, or there is no signer.
    """
    if not signers:
        raise PolicyError(f"{path}: signing a policy needs at least one key")
    data = read_policy_bytes(path)
    policy = parse_policy(data, path, now=now)
    _must_expire(path, policy)
    payload = policy_statement(data, path.name, policy)
    target = signature_path(path)
    envelope = sign_payload(payload, signers)
    added = {entry["keyid"] for entry in envelope["signatures"]}
    kept = [
        s for s in _previous_signatures(target, envelope["payload"]) if s.get("keyid") not in added
    ]
    envelope["signatures"] = [*kept, *envelope["signatures"]]
    write_envelope(target, envelope)
    return target


def _previous_signatures(target: Path, payload: str) -> list[dict[str, Any]]:
    """The signatures already on the same statement (another statement: none)."""
    try:
        document = parse_json(_read(target), str(target))
    except (PolicyError, UntrustedJsonError):
        return []
    if not isinstance(document, dict) or document.get("payload") != payload:
        return []
    entries = document.get("signatures")
    return [dict(e) for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def _read(target: Path) -> bytes:
    try:
        with target.open("rb") as stream:
            return stream.read(MAX_SIGNATURE_BYTES + 1)
    except OSError as e:
        raise PolicyError(f"{target}: cannot read the policy's signatures: {e.strerror}") from None


def load_signed_policy(
    path: Path,
    owners: Sequence[Key],
    *,
    threshold: int | None = None,
    signature: Path | None = None,
    now: datetime,
    min_version: int | None = None,
) -> Policy:
    """A policy that enough of its owners signed, with the keys they signed, that expires
    and has not expired.

    Args:
        owners: the policy owners' public keys (two spellings of one key are one key).
        threshold: distinct owners that must have signed (default: all of them).
        signature: the signature envelope (default: :func:`signature_path`).
        min_version: refuse a policy without ``version`` or with a lower one.

    Raises:
        PolicyError: unsigned, signed by too few owners, changed after signing (its bytes
            or a key file it names), without expiry, expired, older than ``min_version``,
            or invalid; and no owners or an impossible threshold.
    """
    try:
        ring = KeyRing.of(owners)
    except KeyProblem as e:
        raise PolicyError(f"{path}: policy keys: {e}") from None
    needed = len(ring) if threshold is None else threshold
    if not 1 <= needed <= len(ring):
        raise PolicyError(
            f"{path}: policy threshold {needed}: expected 1 to {len(ring)} (the owners' keys)"
        )
    data = read_policy_bytes(path)
    target = signature or signature_path(path)
    if not target.is_file():
        raise PolicyError(
            f"{path}: unsigned: no signatures at {target}; the owners sign it with "
            "'hermetic sign-policy' (or pass --policy-signature)"
        )
    try:
        opened = open_signed(_read(target), str(target), ring)
        if opened.container is not Container.ENVELOPE:
            raise EnvelopeError(f"a {opened.container}, not the DSSE envelope owners sign")
        statement = signed_statement(opened)
        digests = {item.sha256 for item in statement.subjects}
    except (EnvelopeError, BundleError, StatementError) as e:
        raise PolicyError(f"{target}: not a policy signature: {e}") from None
    if statement.predicate_type != POLICY_PREDICATE:
        raise PolicyError(f"{target}: not a policy signature ({POLICY_PREDICATE})")
    signed = opened.keys
    if len(signed) < needed:
        raise PolicyError(
            f"{path}: signed by {len(signed)} of the {len(ring)} policy owner key(s); "
            f"{needed} needed"
        )
    if hashlib.sha256(data).hexdigest() not in digests:
        raise PolicyError(
            f"{path}: the policy was changed after its owners signed it (its sha256 is not the "
            f"one signed in {target}); use the signed policy, or have it signed again"
        )
    policy = parse_policy(data, path, now=now, signed_by=tuple(key.keyid for key in signed))
    _must_expire(path, policy)
    _check_signed_keys(path, target, policy, statement.predicate)
    if min_version is not None and (policy.version or 0) < min_version:
        told = "has no version" if policy.version is None else f"version {policy.version}"
        raise PolicyError(
            f"{path}: policy.version: {told} is older than the minimum {min_version} "
            "(--policy-min-version); an older signed policy was put back?"
        )
    return policy


def _check_signed_keys(path: Path, target: Path, policy: Policy, predicate: Any) -> None:
    """The keys loaded are the keys the owners signed, one by one.

    Raises:
        PolicyError: naming the first key that differs (a key file replaced after signing).
    """
    try:
        keys = PolicyStatement.from_dict(predicate).keys
        signed = [(key.operator, key.fingerprint) for key in keys]
    except PredicateError as e:
        raise PolicyError(f"{target}: not a policy signature: {e}") from None
    if not signed:
        raise PolicyError(
            f"{path}: its signatures name no keys (signed by an older hermetic?): the key "
            "files it names are not covered; have it signed again with 'hermetic sign-policy'"
        )
    loaded = policy.key_bindings()
    for binding, (operator, fingerprint) in zip(loaded, signed, strict=False):
        if (binding.operator, binding.fingerprint) != (operator, fingerprint):
            raise PolicyError(
                f"{path}: {binding.place}: this is not the key the policy's owners signed "
                f"(loaded {binding.fingerprint[:23]}…, signed {str(fingerprint)[:23]}…): a key "
                "file it names was replaced or changed; restore it, or have the policy "
                "signed again"
            )
    if len(loaded) != len(signed):
        raise PolicyError(
            f"{path}: it trusts {len(loaded)} key(s) but its owners signed {len(signed)}"
        )
