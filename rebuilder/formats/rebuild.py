"""What nodes and the rebuild client say in statements: a node's signed failure, a node's
signed disagreement, and the combined agreement the agreeing nodes co-sign.

A node co-signs an agreement only if the bytes it is given are exactly the bytes it would
write itself from what it read (:meth:`Agreement.payload`): no field, digest algorithm,
alias or spelling of the client's can ride along under the node's signature."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from rebuilder.formats.fields import (
    Fields,
    Predicate,
    PredicateError,
    Statement,
    Subject,
    exact_subjects,
    format_time,
)
from rebuilder.formats.provenance import SourceRef
from sandbox.uris import AGREEMENT_PREDICATE, DISAGREEMENT_PREDICATE, FAILURE_PREDICATE

Outputs = tuple[tuple[str, str], ...]  # (path, sha256), sorted
REQUEST_SUBJECT = "rebuild-request.tar.gz"


class NodeVerdict(StrEnum):
    """What the rebuild client concluded of one node."""

    AGREE = "agree"  # built the agreed outputs
    DISAGREE = "disagree"  # built other outputs
    FAILED = "failed"  # unreached, timed out, or built nothing
    INVALID = "invalid"  # its answer or attestation does not hold
    REFUSED = "refused"  # agreed, then did not co-sign
    BUILT = "built"  # built, not yet compared (never written)


def outputs_of(subjects: Sequence[Subject]) -> Outputs:
    """(name, sha256) of subjects, sorted, for comparison."""
    return tuple(sorted((item.name, item.sha256) for item in subjects))


@dataclass(frozen=True, kw_only=True)
class Failure(Predicate):
    """A node's signed "I could not reproduce this", about the request it was given."""

    request_sha256: str
    outcome: str  # rebuilder.node.jobs.Outcome
    reason: str
    builder_id: str
    job_id: str
    predicate_type: ClassVar[str] = FAILURE_PREDICATE

    def subjects(self) -> list[Subject]:
        return [Subject(REQUEST_SUBJECT, self.request_sha256)]

    def payload(self) -> bytes:
        """The Statement's bytes, about the request."""
        return self.statement(self.subjects())

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "reason": self.reason,
            "builder": {"id": self.builder_id},
            "jobId": self.job_id,
        }

    @classmethod
    def from_dict(cls, predicate: Any, request_sha256: str) -> Failure:
        """Raises: PredicateError: a field is missing or malformed."""
        fields = Fields(predicate, "predicate")
        builder = fields.table("builder") or Fields({}, "predicate.builder")
        return cls(
            request_sha256=request_sha256,
            outcome=fields.text("outcome", required=True) or "",
            reason=fields.text("reason", required=True) or "",
            builder_id=builder.text("id", required=True) or "",
            job_id=fields.text("jobId", required=True) or "",
        )


@dataclass(frozen=True, kw_only=True)
class Disagreement(Predicate):
    """A node's signed refusal to co-sign: its own outputs, the statement it refused, why,
    when (the node's own clock), and the source and spec it built them from (so that a gate
    counts it only against a release of that source and spec; None: not stated)."""

    own: Outputs
    proposed_sha256: str | None
    builder_id: str
    job_id: str
    reason: str
    created_on: datetime | None
    source: SourceRef | None = None
    spec_sha256: str | None = None
    predicate_type: ClassVar[str] = DISAGREEMENT_PREDICATE

    def subjects(self) -> list[Subject]:
        return [Subject(path, digest) for path, digest in self.own]

    def payload(self) -> bytes:
        """The Statement's bytes, about the node's own outputs."""
        return self.statement(self.subjects())

    def to_dict(self) -> dict[str, Any]:
        predicate: dict[str, Any] = {
            "refusedStatement": {"sha256": self.proposed_sha256},
            "builder": {"id": self.builder_id},
            "jobId": self.job_id,
            "reason": self.reason,
            "createdOn": format_time(self.created_on) if self.created_on else None,
        }
        if self.source is not None:
            predicate["source"] = self.source.to_dependency()
        if self.spec_sha256 is not None:
            predicate["spec"] = {"sha256": self.spec_sha256}
        return predicate

    @classmethod
    def from_statement(cls, statement: Statement) -> Disagreement:
        """Raises: PredicateError: a field is malformed."""
        fields = Fields(statement.predicate, "predicate")
        source, spec = fields.table("source"), fields.table("spec")
        refused = fields.table("refusedStatement")
        builder = fields.table("builder")
        return cls(
            own=outputs_of(exact_subjects(statement.document)),
            proposed_sha256=refused.sha256("sha256") if refused is not None else None,
            builder_id=(builder.text("id") if builder is not None else None) or "",
            job_id=fields.text("jobId") or "",
            reason=fields.text("reason") or "",
            created_on=fields.time("createdOn"),
            source=SourceRef.from_dependency(source) if source is not None else None,
            spec_sha256=spec.sha256("sha256") if spec is not None else None,
        )


@dataclass(frozen=True, kw_only=True)
class AgreementNode:
    """What the combined statement says of one node (as ``rebuild.json`` lists it)."""

    url: str
    builder_id: str
    keyid: str
    job_id: str
    outcome: str
    verdict: NodeVerdict | str
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
            "verdict": str(self.verdict),
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
        verdict = fields.text("verdict") or ""
        return cls(
            url=fields.text("url") or "",
            builder_id=fields.text("builderId") or "",
            keyid=fields.text("keyid") or "",
            job_id=fields.text("jobId") or "",
            outcome=fields.text("outcome") or "",
            # a verdict of another writer is kept as written: the payload check compares it
            verdict=NodeVerdict(verdict) if verdict in set(NodeVerdict) else verdict,
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
class Agreement(Predicate):
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
    predicate_type: ClassVar[str] = AGREEMENT_PREDICATE

    def subjects(self) -> list[Subject]:
        return [Subject(path, digest) for path, digest in sorted(self.outputs)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "agreeing": sum(1 for node in self.nodes if node.verdict == NodeVerdict.AGREE),
            "request": {"sha256": self.request_sha256},
            "source": self.source.to_dependency(),
            "spec": {"sha256": self.spec_sha256},
            "nodes": [node.to_dict() for node in self.nodes],
            "createdOn": format_time(self.created_on),
        }

    def payload(self) -> bytes:
        """The Statement's bytes (subjects: the agreed outputs), canonical: an agreement
        read back from them gives the same bytes."""
        return self.statement(self.subjects())

    @classmethod
    def from_statement(cls, statement: Statement) -> Agreement:
        """Read an agreement statement.

        Raises:
            PredicateError: not an agreement, or a field missing or malformed.
        """
        if statement.predicate_type != AGREEMENT_PREDICATE:
            raise PredicateError(f"not a {AGREEMENT_PREDICATE} statement")
        fields = Fields(statement.predicate, "predicate")
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
            outputs=outputs_of(exact_subjects(statement.document)),
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
