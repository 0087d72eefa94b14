"""Deciding, per artifact, whether enough independent trusted operators vouch for exactly
its digest, built from an allowed source by an allowed spec, and whether every other rule
of the policy holds. Anything unverifiable, unknown or malformed counts against admission,
never for it.

:func:`evidence` turns one attestation's bytes into checked, typed evidence (or a reason);
:func:`decide` is a pure function of the artifact's digest, the policy, the evidence and
``now``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from rebuilder.attest.envelope import EnvelopeError
from rebuilder.attest.sigstore_bundle import BundleError, SigstoreTrust
from rebuilder.attest.statement import read_statement
from rebuilder.attest.verify import Container, NotAnAttestation, open_signed
from rebuilder.formats.check import CheckPredicate
from rebuilder.formats.fields import (
    CLOCK_SKEW,
    MAX_TEXT,
    PredicateError,
    Statement,
    StatementError,
    Subject,
    format_time,
)
from rebuilder.formats.gate import GateVerdict
from rebuilder.formats.provenance import Provenance, SourceRef
from rebuilder.formats.rebuild import Agreement, Disagreement
from rebuilder.formats.sbom import Sbom
from rebuilder.gate.policy import Policy
from sandbox.digests import is_sha256
from sandbox.uris import (
    AGREEMENT_PREDICATE,
    CHECK_PREDICATE,
    CYCLONEDX_PREDICATE,
    DISAGREEMENT_PREDICATE,
    PAYLOAD_TYPE,
    SLSA_PROVENANCE,
    SPDX_PREDICATE,
)


class Kind(StrEnum):
    """What an attestation is, for the gate."""

    PROVENANCE = "provenance"  # a build's SLSA provenance: vouches, and carries evidence
    AGREEMENT = "agreement"  # a co-signed rebuild agreement: vouches for every co-signer
    CHECK = "check"  # a `hermetic check` verdict
    DISAGREEMENT = "disagreement"  # a node's signed refusal: says otherwise
    SBOM = "sbom"  # a build's signed SBOM (SPDX or CycloneDX)
    OTHER = "other"  # a statement the gate does not read


_KINDS = {
    SLSA_PROVENANCE: Kind.PROVENANCE,
    AGREEMENT_PREDICATE: Kind.AGREEMENT,
    CHECK_PREDICATE: Kind.CHECK,
    DISAGREEMENT_PREDICATE: Kind.DISAGREEMENT,
    SPDX_PREDICATE: Kind.SBOM,
    CYCLONEDX_PREDICATE: Kind.SBOM,
}
VOUCHING = (Kind.PROVENANCE, Kind.AGREEMENT)


@dataclass(frozen=True, kw_only=True)
class Evidence:
    """One attestation whose signatures were checked against the policy's keys, read.

    ``problem`` set: trusted keys signed it, but it is malformed; it vouches for nothing
    and denies every artifact it names.
    """

    origin: str
    operators: frozenset[str]  # trusted operators with a valid signature on it
    predicate_type: str
    subjects: tuple[Subject, ...]
    kind: Kind = Kind.OTHER
    time: datetime | None = None  # when its signer says it was made
    build: Provenance | None = None  # provenance
    agreement: Agreement | None = None  # agreement
    reproducible: bool | None = None  # check
    refusal: Disagreement | None = None  # disagreement
    problem: str = ""

    @property
    def source(self) -> SourceRef | None:
        for facts in (self.build, self.agreement, self.refusal):
            if facts is not None:
                return facts.source
        return None

    @property
    def spec_sha256(self) -> str | None:
        for facts in (self.build, self.agreement, self.refusal):
            if facts is not None:
                return facts.spec_sha256
        return None

    def names(self, digest: str) -> bool:
        return any(item.sha256 == digest for item in self.subjects)


@dataclass(frozen=True, kw_only=True)
class Decision:
    artifact: str
    sha256: str
    admitted: bool
    agreeing: tuple[str, ...]  # operators
    reasons: tuple[str, ...]  # why denied (empty when admitted)
    used: tuple[str, ...] = ()  # attestations that counted
    notes: tuple[str, ...] = ()

    @property
    def verdict(self) -> GateVerdict:
        return GateVerdict.ADMIT if self.admitted else GateVerdict.DENY

    def to_json(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact,
            "sha256": self.sha256,
            "decision": self.verdict.value,
            "agreeing_operators": list(self.agreeing),
            "reasons": list(self.reasons),
            "attestations": list(self.used),
            "notes": list(self.notes),
        }


def evidence(
    origin: str,
    data: bytes,
    policy: Policy,
    *,
    trust: SigstoreTrust = SigstoreTrust(),  # noqa: B008 - frozen: one value, never changed
) -> tuple[Evidence | None, str]:
    """Check one attestation's signatures against every trusted key (and Sigstore
    identity, verified by ``trust``'s instance), then read it.

    Never raises for what the bytes hold: anything wrong with them is the reason.

    Returns:
        (the evidence, "") or (None, why it does not count; "" for JSON that is no
        attestation at all, which is not the gate's to read).
    """
    try:
        signed = open_signed(data, origin, policy.ring, trust=trust)
    except NotAnAttestation:
        return None, ""
    except EnvelopeError as e:  # names the origin
        return None, str(e)
    except BundleError as e:
        return None, f"{origin}: {e}"
    bundle = signed.container is Container.BUNDLE
    if bundle and not signed.keys:
        return None, f"{origin}: signed by no trusted Sigstore identity"
    if signed.payload_type != PAYLOAD_TYPE:
        if bundle:
            return None, f"{origin}: the bundle does not hold an in-toto statement"
        return None, f"{origin}: payloadType is not {PAYLOAD_TYPE}"
    if not signed.keys:
        return None, f"{origin}: signed by no trusted key"
    operators = frozenset(policy.operator_of(policy.ring.fingerprint(key)) for key in signed.keys)
    return _read(origin, operators, signed.payload)


def _read(origin: str, operators: frozenset[str], payload: bytes) -> tuple[Evidence | None, str]:
    """The statement trusted keys signed, as typed evidence."""
    try:
        statement = read_statement(payload)
    except StatementError as e:
        named = _named_anyway(payload)
        why = f"signed by {', '.join(sorted(operators))} but invalid: {e}"
        if not named:
            return None, f"{origin}: {why}"
        # a trusted key signed it: it denies what it seems to name, it never admits
        return Evidence(
            origin=origin,
            operators=operators,
            predicate_type="",
            subjects=named,
            problem=why,
        ), ""
    base = Evidence(
        origin=origin,
        operators=operators,
        predicate_type=statement.predicate_type,
        subjects=statement.subjects,
        kind=_KINDS.get(statement.predicate_type, Kind.OTHER),
    )
    try:
        return _typed(base, statement), ""
    except PredicateError as e:
        return replace(base, problem=str(e)), ""


def _named_anyway(payload: bytes) -> tuple[Subject, ...]:
    """The subjects a malformed statement seems to name, read leniently (NaN and all)."""
    try:
        document = json.loads(payload)
    except (ValueError, RecursionError):
        return ()
    items = document.get("subject") if isinstance(document, dict) else None
    found = []
    for item in items if isinstance(items, list) else []:
        digest = item.get("digest") if isinstance(item, dict) else None
        sha256 = digest.get("sha256") if isinstance(digest, dict) else None
        name = item.get("name") if isinstance(item, dict) else None
        if isinstance(sha256, str) and is_sha256(sha256):
            found.append(Subject(name[:MAX_TEXT] if isinstance(name, str) else "", sha256))
    return tuple(found)


def _typed(base: Evidence, statement: Statement) -> Evidence:
    """The facts of the statement's kind, and the time its signer gave it.

    Raises:
        PredicateError: a field the gate reads is malformed.
    """
    predicate = statement.predicate
    if base.kind is Kind.PROVENANCE:
        build = Provenance.from_dict(predicate)
        return replace(base, build=build, time=build.finished_time)
    if base.kind is Kind.AGREEMENT:
        agreement = Agreement.from_statement(statement)
        return replace(base, agreement=agreement, time=agreement.created_on)
    if base.kind is Kind.CHECK:
        check = CheckPredicate.from_dict(predicate)
        return replace(base, reproducible=check.reproducible, time=check.finished_on)
    if base.kind is Kind.DISAGREEMENT:
        refusal = Disagreement.from_statement(statement)
        return replace(base, refusal=refusal, time=refusal.created_on)
    if base.kind is Kind.SBOM:
        sbom = Sbom.from_dict(predicate, statement.predicate_type)
        return replace(base, time=sbom.created)
    return base


def _current(
    found: Sequence[Evidence], policy: Policy, now: datetime, notes: list[str]
) -> list[Evidence]:
    """The evidence whose time counts: none from the future, none older than max_age.

    A trusted "no" is kept whatever its time (a disagreement denies, it never admits)
    unless it is known to be older than max_age.
    """
    kept = []
    for item in found:
        against = item.kind is Kind.DISAGREEMENT
        if item.time is not None and item.time > now + CLOCK_SKEW:
            notes.append(
                f"{item.origin}: dated {format_time(item.time)}, in the future beyond the "
                f"{int(CLOCK_SKEW.total_seconds() // 60)}-minute clock skew; "
                + ("it still counts against" if against else "it does not count")
            )
            if not against:
                continue
        elif policy.max_age_s is not None:
            if item.time is None and not against:
                notes.append(f"{item.origin}: no time recorded; cannot tell its age")
                continue
            if item.time is not None and (now - item.time).total_seconds() >= policy.max_age_s:
                notes.append(f"{item.origin}: expired ({format_time(item.time)})")
                continue
        kept.append(item)
    return kept


def _allowed_trees(policy: Policy, provenance: Sequence[Evidence]) -> frozenset[str] | None:
    """The source trees the policy allows: its digests, and the trees trusted provenance
    shows to be exactly an allowed git commit (None: any source)."""
    rule = policy.sources
    if rule is None:
        return None
    trees = set(rule.trees)
    for item in provenance:
        source = item.source
        if source is not None and rule.allows_commit(source):
            trees.add(source.sha256)
    return frozenset(trees)


def _operators(items: Sequence[Evidence]) -> str:
    return ", ".join(sorted({op for item in items for op in item.operators}))


def _binding_reasons(policy: Policy, vouching: Sequence[Evidence]) -> list[str]:
    """One allowed source and one allowed spec for everything that vouches."""
    reasons = []
    provenance = [e for e in vouching if e.kind is Kind.PROVENANCE]
    allowed = _allowed_trees(policy, provenance)
    sources: dict[str, list[Evidence]] = {}
    specs: dict[str, list[Evidence]] = {}
    for item in vouching:
        source, spec = item.source, item.spec_sha256
        if source is None or spec is None:
            missing = " and ".join(
                what for what, v in (("source", source), ("spec", spec)) if v is None
            )
            reasons.append(f"{item.origin}: names no {missing} digest; it cannot be bound")
            continue
        sources.setdefault(source.sha256, []).append(item)
        specs.setdefault(spec, []).append(item)
        if allowed is not None and source.sha256 not in allowed:
            reasons.append(
                f"{item.origin}: built from source sha256:{source.sha256[:16]}…, "
                "which the policy does not allow"
            )
        if policy.specs is not None and spec not in policy.specs:
            reasons.append(
                f"{item.origin}: built by spec sha256:{spec[:16]}…, which the policy does not allow"
            )
    for what, groups in (("sources", sources), ("specs", specs)):
        if len(groups) > 1:
            told = "; ".join(
                f"sha256:{digest[:16]}… ({_operators(items)})"
                for digest, items in sorted(groups.items())
            )
            reasons.append(f"the operators built the same bytes from different {what}: {told}")
    if policy.commands is not None:
        if not provenance:
            reasons.append("no trusted provenance names the build command; the policy restricts it")
        for item in provenance:
            assert item.build is not None
            command = item.build.command
            if command not in policy.commands:
                told = "no command" if command is None else f"command {list(command)!r}"[:200]
                reasons.append(f"{item.origin}: {told} is not allowed by the policy")
    return reasons


def _hermeticity_reasons(policy: Policy, provenance: Sequence[Evidence]) -> list[str]:
    """Network attempts, loopback and trace completeness, from every vouching provenance."""
    reasons = []
    checks_network = not policy.allow_network_attempts
    checks_trace = not policy.allow_incomplete_trace
    if (checks_network or checks_trace) and not provenance:
        reasons.append(
            "no trusted provenance records the build's trace (network attempts, "
            "completeness); the policy needs it"
        )
    for item in provenance:
        assert item.build is not None
        facts = item.build.hermeticity
        if facts is None:
            reasons.append(f"{item.origin}: no hermeticity evidence recorded")
            continue
        if checks_network:
            outside, loopback = facts.network_attempts, facts.loopback_attempts
            if outside is None or outside > 0:
                told = "no record" if outside is None else f"{outside} network attempt(s)"
                reasons.append(
                    f"{item.origin}: {told} outside the build's namespace; "
                    "the policy forbids network attempts"
                )
            # an older provenance without loopbackAttempts counted loopback in
            # networkAttempts, so its 0 above covers loopback too
            if loopback is not None and loopback > 0 and not policy.allow_loopback:
                reasons.append(
                    f"{item.origin}: {loopback} loopback attempt(s) inside the build; "
                    "the policy does not allow loopback (allow_loopback)"
                )
        if checks_trace and not facts.complete:
            gaps = "; ".join(facts.trace_gaps or ())[:300]
            told = (
                f"gaps: {gaps}"
                if gaps
                else "traceComplete is not true"
                if facts.trace_complete is not True
                else "incomplete"
            )
            reasons.append(
                f"{item.origin}: the trace is incomplete ({told}); "
                "the policy requires a complete one (allow_incomplete_trace)"
            )
    return reasons


def _disagreements(
    current: Sequence[Evidence],
    vouching: Sequence[Evidence],
    digest: str,
    names: set[str],
    notes: list[str],
) -> list[Evidence]:
    """Trusted statements of another digest under one of the artifact's names that say it
    is not reproducible: built from the source and spec the vouching statements name, or
    from a source or spec they do not state (unknown counts against admission).

    One built from another source or spec says nothing of this release: anyone who may
    submit to a trusted node can have it build other bytes under the same name.
    """
    built_from = {(e.source.sha256, e.spec_sha256) for e in vouching if e.source is not None}
    found = []
    for item in current:
        if item.kind not in (*VOUCHING, Kind.DISAGREEMENT) or not any(
            s.name in names and s.sha256 != digest for s in item.subjects
        ):
            continue
        source, spec = item.source, item.spec_sha256
        other = source is not None and spec is not None and (source.sha256, spec) not in built_from
        if built_from and other:
            notes.append(
                f"{item.origin}: another digest under the same name, built from another "
                "source or spec than this release's: not a disagreement about it"
            )
            continue
        found.append(item)
    return found


def decide(
    artifact: str,
    digest: str,
    policy: Policy,
    found: Sequence[Evidence],
    *,
    now: datetime,
    unreachable: Sequence[str] = (),
) -> Decision:
    """Admit or deny one artifact under the policy, given the verified evidence.

    Args:
        artifact: the artifact's name, as reported.
        digest: its sha256 (hex).
        found: the evidence that names the digest, or names the same artifact names.
        now: the gate's clock (timezone-aware).
        unreachable: required attestation sources that failed.
    """
    reasons: list[str] = [f"cannot reach {where}: failing closed" for where in unreachable]
    notes: list[str] = []
    if policy.expires is not None and now >= policy.expires:
        reasons.append(f"the policy expired at {format_time(policy.expires)}")
    for item in found:
        if item.problem and item.names(digest):
            reasons.append(f"{item.origin}: a trusted attestation of it is invalid: {item.problem}")
    current = _current([e for e in found if not e.problem], policy, now, notes)
    vouching = [e for e in current if e.kind in VOUCHING and e.names(digest)]
    names = {s.name for e in vouching for s in e.subjects if s.sha256 == digest}
    agreeing = frozenset(op for e in vouching for op in e.operators)
    disagreeing = frozenset(
        op for e in _disagreements(current, vouching, digest, names, notes) for op in e.operators
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
    provenance = [e for e in vouching if e.kind is Kind.PROVENANCE]
    if policy.images is not None:
        if not provenance:
            reasons.append(
                "no trusted provenance names the build image; the policy restricts images"
            )
        for item in provenance:
            assert item.build is not None
            image = item.build.image_sha256
            if image not in policy.images:
                told = f"image sha256:{image}" if image else "no image recorded, which"
                reasons.append(f"{item.origin}: {told} is not allowed by the policy")
    reasons += _binding_reasons(policy, vouching)
    reasons += _hermeticity_reasons(policy, provenance)
    if policy.require_check and not any(
        e.kind is Kind.CHECK and e.reproducible is True and e.names(digest) for e in current
    ):
        reasons.append("no trusted `hermetic check` says it is reproducible")
    if policy.require_sbom and not any(e.kind is Kind.SBOM and e.names(digest) for e in current):
        reasons.append("no trusted, signed SBOM lists this artifact; the policy requires one")
    return Decision(
        artifact=artifact,
        sha256=digest,
        admitted=not reasons,
        agreeing=tuple(sorted(agreeing)),
        reasons=tuple(reasons),
        used=tuple(e.origin for e in vouching),
        notes=tuple(notes),
    )
