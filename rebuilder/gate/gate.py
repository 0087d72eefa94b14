"""``hermetic gate``: collect, verify, decide per artifact, and optionally sign a SLSA
Verification Summary Attestation for each admitted one."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from securesystemslib.signer import Signer

from rebuilder.attest.envelope import sign_payload, write_envelope
from rebuilder.attest.sigstore_bundle import SigstoreTrust
from rebuilder.errors import UserError
from rebuilder.formats.fields import Subject
from rebuilder.formats.gate import InputAttestation, VerificationSummary
from rebuilder.gate.decide import Decision, Evidence, decide, evidence
from rebuilder.gate.policy import Policy, describe
from rebuilder.gate.sources import collect
from rebuilder.node.client import Credentials
from sandbox.digests import sha256_file
from sandbox.source_tree import OUT_MARKER


class GateError(UserError):
    """The gate cannot decide (an artifact is missing)."""


def run_gate(
    artifacts: Sequence[Path],
    policy: Policy,
    sources: Sequence[str],
    *,
    credentials: Credentials,
    now: datetime | None = None,
    trust: SigstoreTrust = SigstoreTrust(),  # noqa: B008 - frozen: one value, never changed
) -> tuple[list[Decision], list[tuple[str, bytes]]]:
    """Decisions for every artifact, and the attestations that were read (Sigstore
    bundles verified by ``trust``'s instance).

    One attestation that cannot be read is a note (or, signed by a trusted key, a denial
    of what it names): every other artifact is still decided.
    """
    now = now or datetime.now(tz=UTC)
    for artifact in artifacts:
        if not artifact.is_file():
            raise GateError(f"{artifact}: no such artifact file")
    digests = [sha256_file(artifact.resolve())[0] for artifact in artifacts]
    collected = collect(sources, digests, policy, credentials)
    found: list[Evidence] = []
    notes = list(collected.notes)
    for origin, data in collected.attestations:
        item, why = evidence(origin, data, policy, trust=trust)
        if item is not None:
            found.append(item)
        elif why:  # an attestation that does not count (JSON of another kind: not ours)
            notes.append(why)
    by_digest: dict[str, list[Evidence]] = {}
    by_name: dict[str, list[Evidence]] = {}
    for item in found:
        for named in item.subjects:
            by_digest.setdefault(named.sha256, []).append(item)
            by_name.setdefault(named.name, []).append(item)
    decisions = []
    for artifact, digest in zip(artifacts, digests, strict=True):
        # what names it, and what says something else under the same names
        naming = by_digest.get(digest, [])
        relevant = {id(e): e for e in naming}
        for name in {s.name for e in naming for s in e.subjects if s.sha256 == digest}:
            relevant.update({id(e): e for e in by_name.get(name, [])})
        decision = decide(
            str(artifact),
            digest,
            policy,
            list(relevant.values()),
            now=now,
            unreachable=collected.unreachable,
        )
        decisions.append(replace(decision, notes=(*decision.notes, *notes)))
    return decisions, collected.attestations


def write_vsa(
    decision: Decision,
    policy: Policy,
    attestations: Sequence[tuple[str, bytes]],
    *,
    signer: Signer,
    verifier_id: str,
    directory: Path,
    now: datetime,
) -> Path:
    """A signed SLSA VSA v1 for an admitted artifact, written beside the others; it names
    the policy by its digest, version, expiry and signers."""
    if not decision.admitted:
        raise GateError(f"{decision.artifact}: a VSA is written only for an admitted artifact")
    used = [(o, d) for o, d in attestations if o in decision.used]
    summary = VerificationSummary(
        verifier_id=verifier_id,
        time_verified=now,
        resource_uri=Path(decision.artifact).name,
        policy=dict(describe(policy)),
        inputs=tuple(
            InputAttestation(uri=origin, sha256=hashlib.sha256(data).hexdigest())
            for origin, data in used
        ),
        agreeing_operators=tuple(decision.agreeing),
        threshold=policy.threshold,
    )
    payload = summary.statement([Subject(Path(decision.artifact).name, decision.sha256)])
    directory.mkdir(parents=True, exist_ok=True)
    (directory / OUT_MARKER).touch()  # not source of later builds
    # the digest keeps two artifacts of one name apart
    path = directory / f"{Path(decision.artifact).name}.{decision.sha256[:12]}.vsa.intoto.json"
    write_envelope(path, sign_payload(payload, [signer]))
    return path


def decisions_json(decisions: Sequence[Decision], vsas: dict[str, Path]) -> str:
    return json.dumps(
        {
            "admitted": all(d.admitted for d in decisions),
            "decisions": [
                {**d.to_json(), "vsa": str(vsas[d.artifact]) if d.artifact in vsas else None}
                for d in decisions
            ],
        },
        indent=2,
    )
