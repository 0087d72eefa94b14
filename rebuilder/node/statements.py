"""The statements a node signs (its failure, its disagreement) and its decision whether
to co-sign a combined agreement; the formats are :mod:`rebuilder.formats.rebuild`'s."""

from __future__ import annotations

from datetime import datetime

from rebuilder.attest.statement import make_statement
from rebuilder.formats.fields import CLOCK_SKEW, PredicateError, Statement, format_time
from rebuilder.formats.provenance import Provenance, SourceRef
from rebuilder.formats.rebuild import (
    Agreement,
    Disagreement,
    Failure,
    NodeVerdict,
    Outputs,
)
from sandbox.uris import DISAGREEMENT_PREDICATE, FAILURE_PREDICATE


def failure_statement(
    *, request_sha256: str, outcome: str, reason: str, builder_id: str, job_id: str
) -> bytes:
    """A node's signed "I could not reproduce this": about the request it was given."""
    failure = Failure(
        request_sha256=request_sha256,
        outcome=outcome,
        reason=reason,
        builder_id=builder_id,
        job_id=job_id,
    )
    return make_statement(failure.subjects(), FAILURE_PREDICATE, failure.to_dict())


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
    """A node's signed refusal to co-sign (see :class:`Disagreement`), dated ``now``."""
    disagreement = Disagreement(
        own=own,
        proposed_sha256=proposed_sha256,
        builder_id=builder_id,
        job_id=job_id,
        reason=reason,
        created_on=now,
        source=source,
        spec_sha256=spec_sha256,
    )
    return make_statement(disagreement.subjects(), DISAGREEMENT_PREDICATE, disagreement.to_dict())


def cosign_refusal(
    statement: Statement,
    *,
    payload: bytes,
    own: Outputs,
    built: Provenance | None,
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
    if len(listed) != 1 or listed[0].verdict != NodeVerdict.AGREE or listed[0].outputs != own:
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
