"""What nodes and the rebuild client say in statements: a node's signed failure, a node's
signed disagreement, and the combined agreement the agreeing nodes co-sign.

A node co-signs an agreement only if the bytes it is given are exactly the bytes it would
write itself from what it read (:meth:`Agreement.payload`): no field, digest algorithm,
alias or spelling of the client's can ride along under the node's signature."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rebuilder.attest.predicates import (
    CLOCK_SKEW,
    BuildFacts,
    Fields,
    PredicateError,
    SourceRef,
    Subject,
    format_time,
)
from rebuilder.attest.statement import make_statement, subject

FAILURE_PREDICATE = "https://hermetic.dev/attestations/rebuild-failure/v1"
DISAGREEMENT_PREDICATE = "https://hermetic.dev/attestations/rebuild-disagreement/v1"
# v2: names the source and spec, and only nodes that check them and the time sign it
AGREEMENT_PREDICATE = "https://hermetic.dev/attestations/rebuild-agreement/v2"

Outputs = tuple[tuple[str, str], ...]  # (path, sha256), sorted


def failure_statement(
    *, request_sha256: str, outcome: str, reason: str, builder_id: str, job_id: str
) -> bytes:
    """A node's signed "I could not reproduce this": about the request it was given."""
    predicate = {
        "outcome": outcome,
        "reason": reason,
        "builder": {"id": builder_id},
        "jobId": job_id,
    }
    return make_statement(
        [subject("rebuild-request.tar.gz", request_sha256)], FAILURE_PREDICATE, predicate
    )


def disagreement_statement(
    *,
    own: Outputs,
    proposed_sha256: str,
    builder_id: str,
    job_id: str,
    now: datetime,
    reason: str = "",
    source: SourceRef | None = None,
    spec_sha256: str | None = None,
) -> bytes:
    """A node's signed refusal to co-sign: its own outputs, the statement it refused, why,
    when (the node's own clock), and the source and spec it built them from (so that a gate
    counts it only against a release of that source and spec)."""
    predicate: dict[str, Any] = {
        "refusedStatement": {"sha256": proposed_sha256},
        "builder": {"id": builder_id},
        "jobId": job_id,
        "reason": reason,
        "createdOn": format_time(now),
    }
    if source is not None:
        predicate["source"] = source.to_dependency()
    if spec_sha256 is not None:
        predicate["spec"] = {"sha256": spec_sha256}
    return make_statement([subject(p, d) for p, d in own], DISAGREEMENT_PREDICATE, predicate)


@dataclass(frozen=True, kw_only=True)
class Disagreement:
    """What a gate reads of a node's signed disagreement (None: not stated)."""

    created_on: datetime | None
    source: SourceRef | None
    spec_sha256: str | None

    @classmethod
    def from_statement(cls, statement: Mapping[str, Any]) -> Disagreement:
        """Raises: PredicateError: a field is malformed."""
        fields = Fields(statement.get("predicate"), "predicate")
        source, spec = fields.table("source"), fields.table("spec")
        return cls(
            created_on=fields.time("createdOn"),
            source=SourceRef.from_dependency(source) if source is not None else None,
            spec_sha256=spec.sha256("sha256") if spec is not None else None,
        )


def exact_subjects(statement: Mapping[str, Any]) -> tuple[Subject, ...]:
    """Subjects that are each exactly a name and a sha256, as hermetic writes them.

    Raises:
        PredicateError: a subject with anything else (a sha512 alone, a second digest
            algorithm, a field of its own), or without a name.
    """
    found = []
    for item in Fields(statement, "statement").tables("subject"):
        digest = item.table("digest")
        name = item.text("name")
        if set(item.document) != {"name", "digest"} or digest is None or name is None:
            raise PredicateError(f"{item.where}: a subject is exactly a name and a digest")
        if set(digest.document) != {"sha256"}:
            raise PredicateError(f"{digest.where}: exactly one digest, sha256, is named")
        found.append(Subject(name, digest.sha256("sha256") or ""))
    return tuple(found)


@dataclass(frozen=True, kw_only=True)
class AgreementNode:
    """What the combined statement says of one node (as ``rebuild.json`` lists it)."""

    url: str
    builder_id: str
    keyid: str
    job_id: str
    outcome: str
    verdict: str
    reason: str
    outputs: Outputs
    attestation_sha256: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "builderId": self.builder_id,
            "keyid": self.keyid,
            "jobId": self.job_id,
            "outcome": self.outcome,
            "verdict": self.verdict,
            "reason": self.reason,
            "outputs": [{"name": n, "sha256": d} for n, d in sorted(self.outputs)],
            "attestation": (
                {"sha256": self.attestation_sha256} if self.attestation_sha256 else None
            ),
        }

    @classmethod
    def from_dict(cls, document: Any, where: str = "node") -> AgreementNode:
        """Raises: PredicateError: a field is missing or malformed."""
        fields = Fields(document, where)
        attestation = fields.table("attestation")
        return cls(
            url=fields.text("url") or "",
            builder_id=fields.text("builderId") or "",
            keyid=fields.text("keyid") or "",
            job_id=fields.text("jobId") or "",
            outcome=fields.text("outcome") or "",
            verdict=fields.text("verdict") or "",
            reason=fields.text("reason") or "",
            outputs=_outputs(fields.tables("outputs")),
            attestation_sha256=attestation.sha256("sha256") if attestation else None,
        )


def _outputs(items: Sequence[Fields]) -> Outputs:
    return tuple(
        sorted(
            (item.text("name", required=True) or "", item.sha256("sha256") or "") for item in items
        )
    )


@dataclass(frozen=True, kw_only=True)
class Agreement:
    """The combined statement the agreeing nodes co-sign: the agreed outputs, built from
    this request's source and spec, and what every node said.

    A node co-signs only if the source and spec are the ones it built and ``created_on``
    is within the clock skew of its own clock, so the time counts as the node's own.
    """

    outputs: Outputs
    threshold: int
    request_sha256: str
    source: SourceRef
    spec_sha256: str
    nodes: tuple[AgreementNode, ...]
    created_on: datetime

    def predicate(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "agreeing": sum(1 for node in self.nodes if node.verdict == "agree"),
            "request": {"sha256": self.request_sha256},
            "source": self.source.to_dependency(),
            "spec": {"sha256": self.spec_sha256},
            "nodes": [node.to_dict() for node in self.nodes],
            "createdOn": format_time(self.created_on),
        }

    def payload(self) -> bytes:
        """The Statement's bytes (subjects: the agreed outputs), canonical: an agreement
        read back from them gives the same bytes."""
        subjects = [subject(p, d) for p, d in sorted(self.outputs)]
        return make_statement(subjects, AGREEMENT_PREDICATE, self.predicate())

    @classmethod
    def from_statement(cls, statement: Mapping[str, Any]) -> Agreement:
        """Read an agreement statement (already a valid in-toto Statement).

        Raises:
            PredicateError: not an agreement, or a field missing or malformed.
        """
        if statement.get("predicateType") != AGREEMENT_PREDICATE:
            raise PredicateError(f"not a {AGREEMENT_PREDICATE} statement")
        fields = Fields(statement.get("predicate"), "predicate")
        request, source, spec = (fields.table(k) for k in ("request", "source", "spec"))
        threshold = fields.count("threshold")
        created = fields.time("createdOn")
        request_sha256 = request.sha256("sha256") if request else None
        spec_sha256 = spec.sha256("sha256") if spec else None
        if (
            source is None
            or threshold is None
            or created is None
            or request_sha256 is None
            or spec_sha256 is None
        ):
            raise PredicateError(
                "an agreement names its threshold, request, source, spec and createdOn"
            )
        return cls(
            outputs=tuple(sorted((s.name, s.sha256) for s in exact_subjects(statement))),
            threshold=threshold,
            request_sha256=request_sha256,
            source=SourceRef.from_dependency(source),
            spec_sha256=spec_sha256,
            nodes=tuple(
                AgreementNode.from_dict(node.document, node.where)
                for node in fields.tables("nodes")
            ),
            created_on=created,
        )


def cosign_refusal(
    statement: Mapping[str, Any],
    *,
    payload: bytes,
    own: Outputs,
    built: BuildFacts | None,
    job_id: str,
    keyid: str,
    now: datetime,
) -> str:
    """Why a node must not co-sign this agreement ("" when it may).

    It may only when the agreement is well-formed and ``payload`` (the bytes to sign) is
    exactly what :meth:`Agreement.payload` writes of it; its subjects are exactly the
    node's outputs; it says of this node's job and key "agree" with those outputs; its
    source and spec are the ones the node's own provenance names; and its time is within
    the clock skew of the node's clock (so the time a gate reads is one the node vouched
    for).
    """
    try:
        agreement = Agreement.from_statement(statement)
    except PredicateError as e:
        return f"not a well-formed agreement: {e}"
    if agreement.payload() != payload:
        return (
            "it is not exactly the agreement this node would write: a field, digest, "
            "alias or spelling the node did not write"
        )
    if not own or agreement.outputs != own:
        return "its subjects are not the outputs this node built"
    listed = [n for n in agreement.nodes if n.job_id == job_id and n.keyid == keyid]
    if len(listed) != 1 or listed[0].verdict != "agree" or listed[0].outputs != own:
        return "it does not describe this node's job, key and outputs as they are"
    source = built.source if built is not None else None
    if source is None or agreement.source.sha256 != source.sha256:
        return "its source is not the source this node built"
    if built is None or agreement.spec_sha256 != built.spec_sha256:
        return "its spec is not the spec this node built"
    if abs(agreement.created_on - now) > CLOCK_SKEW:
        return (
            f"its createdOn {format_time(agreement.created_on)} is more than "
            f"{int(CLOCK_SKEW.total_seconds() // 60)} minutes from this node's clock "
            f"({format_time(now)})"
        )
    return ""


def statement_outputs(statement: dict[str, Any]) -> Outputs:
    """(name, sha256) of a statement's subjects, sorted, for comparison."""
    return tuple(
        sorted(
            (str(item.get("name", "")), str(item.get("digest", {}).get("sha256", "")))
            for item in statement.get("subject", [])
        )
    )
