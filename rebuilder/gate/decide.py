"""Deciding, per artifact, whether enough independent trusted operators vouch for exactly
its digest, and whether every other rule of the policy holds. Anything unverifiable or
unknown counts against admission, never for it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rebuilder.attest.check_statement import CHECK_PREDICATE
from rebuilder.attest.envelope import EnvelopeError, parse_envelope
from rebuilder.attest.sigstore_bundle import BundleError, check_bundle, is_bundle
from rebuilder.attest.statement import (
    PAYLOAD_TYPE,
    SLSA_PROVENANCE_V1,
    StatementError,
    parse_statement,
)
from rebuilder.attest.verify import verified_keys
from rebuilder.gate.policy import Policy
from rebuilder.node.statements import AGREEMENT_PREDICATE, DISAGREEMENT_PREDICATE
from rebuilder.sbom import SBOM_PREDICATES
from sandbox.digests import sha256_file

VOUCHING = (SLSA_PROVENANCE_V1, AGREEMENT_PREDICATE)


@dataclass(frozen=True, kw_only=True)
class Evidence:
    """One attestation whose signatures were checked against the policy's keys."""

    origin: str
    operators: frozenset[str]  # trusted operators with a valid signature on it
    statement: dict[str, Any]
    time: datetime | None

    @property
    def predicate_type(self) -> str:
        return str(self.statement.get("predicateType", ""))

    @property
    def predicate(self) -> dict[str, Any]:
        value = self.statement.get("predicate", {})
        return value if isinstance(value, dict) else {}

    def subjects(self) -> list[tuple[str, str]]:
        return [
            (str(item.get("name", "")), str(item.get("digest", {}).get("sha256", "")))
            for item in self.statement.get("subject", [])
        ]


@dataclass(frozen=True, kw_only=True)
class Decision:
    artifact: str
    sha256: str
    admitted: bool
    agreeing: tuple[str, ...]  # operators
    reasons: tuple[str, ...]  # why denied (empty when admitted)
    used: tuple[str, ...] = ()  # attestations that counted
    notes: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact,
            "sha256": self.sha256,
            "decision": "admit" if self.admitted else "deny",
            "agreeing_operators": list(self.agreeing),
            "reasons": list(self.reasons),
            "attestations": list(self.used),
            "notes": list(self.notes),
        }


def _time(statement: dict[str, Any]) -> datetime | None:
    predicate = statement.get("predicate", {})
    for value in (
        predicate.get("runDetails", {}).get("metadata", {}).get("finishedOn"),
        predicate.get("createdOn"),
        predicate.get("finishedOn"),
        predicate.get("creationInfo", {}).get("created"),  # an SPDX SBOM
        predicate.get("metadata", {}).get("timestamp"),  # a CycloneDX SBOM
    ):
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                return None
            return parsed if parsed.tzinfo else None  # no zone: no knowable time
    return None


def evidence(origin: str, data: bytes, policy: Policy) -> tuple[Evidence | None, str]:
    """Check one attestation's signatures against every trusted key.

    Returns:
        (the evidence, "") or (None, why it does not count).
    """
    if _looks_like_bundle(data):
        return _bundle_evidence(origin, data, policy)
    try:
        envelope = parse_envelope(data, origin)
    except EnvelopeError as e:
        return None, str(e)
    if envelope.payload_type != PAYLOAD_TYPE:
        return None, f"{origin}: payloadType {envelope.payload_type!r} is not in-toto"
    owners = policy.operator_of()
    operators = frozenset(owners[k] for k in verified_keys(envelope, policy.keys))
    if not operators:
        return None, f"{origin}: signed by no trusted key"
    try:
        statement = parse_statement(envelope.payload)
    except StatementError as e:
        return None, f"{origin}: {e}"
    return Evidence(
        origin=origin, operators=operators, statement=statement, time=_time(statement)
    ), ""


def _looks_like_bundle(data: bytes) -> bool:
    try:
        return is_bundle(json.loads(data))
    except ValueError:
        return False


def _bundle_evidence(origin: str, data: bytes, policy: Policy) -> tuple[Evidence | None, str]:
    """A Sigstore bundle (DSSE) counts for the operator whose identity signed it."""
    try:
        checked = check_bundle(data, policy.keys)
    except BundleError as e:
        return None, f"{origin}: {e}"
    if checked.signed_by is None:
        return None, f"{origin}: signed by no trusted Sigstore identity"
    if checked.payload_type != PAYLOAD_TYPE or checked.payload is None:
        return None, f"{origin}: the bundle does not hold an in-toto statement"
    try:
        statement = parse_statement(checked.payload)
    except StatementError as e:
        return None, f"{origin}: {e}"
    operator = policy.operator_of()[checked.signed_by]
    return (
        Evidence(
            origin=origin,
            operators=frozenset({operator}),
            statement=statement,
            time=_time(statement),
        ),
        "",
    )


def _image(item: Evidence) -> str | None:
    for dependency in item.predicate.get("buildDefinition", {}).get("resolvedDependencies", []):
        if dependency.get("name") == "image":
            return str(dependency.get("digest", {}).get("sha256", ""))
    return None


def _network_attempts(item: Evidence) -> int | None:
    for byproduct in item.predicate.get("runDetails", {}).get("byproducts", []):
        if byproduct.get("name") == "hermeticity":
            value = byproduct.get("annotations", {}).get("networkAttempts")
            return int(value) if isinstance(value, int | float) else None
    return None


def decide(
    artifact: Path,
    policy: Policy,
    found: Sequence[Evidence],
    *,
    now: datetime | None = None,
    unreachable: Sequence[str] = (),
) -> Decision:
    """Admit or deny one artifact under the policy, given the verified evidence."""
    now = now or datetime.now(tz=UTC)
    digest, _ = sha256_file(artifact.resolve())
    reasons: list[str] = [f"cannot reach {where}: failing closed" for where in unreachable]
    notes: list[str] = []
    current = []
    for item in found:
        if policy.max_age_s is not None:
            if item.time is None:
                notes.append(f"{item.origin}: no time recorded; cannot tell its age")
                continue
            if (now - item.time).total_seconds() >= policy.max_age_s:
                notes.append(f"{item.origin}: expired ({item.time.isoformat()})")
                continue
        current.append(item)
    vouching = [
        e for e in current if e.predicate_type in VOUCHING and digest in dict(e.subjects()).values()
    ]
    names = {name for e in vouching for name, d in e.subjects() if d == digest}
    agreeing = frozenset(op for e in vouching for op in e.operators)
    disagreeing = frozenset(
        op
        for e in current
        if e.predicate_type in (*VOUCHING, DISAGREEMENT_PREDICATE)
        for name, d in e.subjects()
        if name in names and d != digest
        for op in e.operators
    )
    if len(agreeing) < policy.threshold:
        reasons.append(
            f"{len(agreeing)} trusted operator(s) vouch for sha256:{digest[:16]}… "
            f"({', '.join(sorted(agreeing)) or 'none'}); {policy.threshold} needed"
        )
    if disagreeing and policy.deny_on_disagreement:
        reasons.append(
            f"trusted operator(s) {', '.join(sorted(disagreeing))} built a different "
            f"{'/'.join(sorted(names))}"
        )
    provenance = [e for e in vouching if e.predicate_type == SLSA_PROVENANCE_V1]
    if policy.images is not None:
        if not provenance:
            reasons.append(
                "no trusted provenance names the build image; the policy restricts images"
            )
        for item in provenance:
            image = _image(item)
            if image not in policy.images:
                reasons.append(f"{item.origin}: image sha256:{image} is not allowed by the policy")
    if not policy.allow_network_attempts:
        if not provenance:
            reasons.append(
                "no trusted provenance records the network attempts; the policy forbids them"
            )
        for item in provenance:
            attempts = _network_attempts(item)
            if attempts is None or attempts > 0:
                told = "no record" if attempts is None else f"{attempts} network attempt(s)"
                reasons.append(f"{item.origin}: {told}; the policy forbids network attempts")
    if policy.require_check:
        verdicts = [
            e.predicate.get("reproducible") is True
            for e in current
            if e.predicate_type == CHECK_PREDICATE and digest in dict(e.subjects()).values()
        ]
        if True not in verdicts:
            reasons.append("no trusted `hermetic check` says it is reproducible")
    if policy.require_sbom and not any(
        e.predicate_type in SBOM_PREDICATES and digest in dict(e.subjects()).values()
        for e in current
    ):
        reasons.append("no trusted, signed SBOM lists this artifact; the policy requires one")
    return Decision(
        artifact=str(artifact),
        sha256=digest,
        admitted=not reasons,
        agreeing=tuple(sorted(agreeing)),
        reasons=tuple(reasons),
        used=tuple(e.origin for e in vouching),
        notes=tuple(notes),
    )
