"""A node's decision whether to co-sign a combined agreement (the formats it signs, its
failure, its disagreement and the agreement, are :mod:`rebuilder.formats.rebuild`'s)."""

from __future__ import annotations

from datetime import datetime

from rebuilder.formats.fields import CLOCK_SKEW, PredicateError, Statement, format_time
from rebuilder.formats.provenance import Provenance
from rebuilder.formats.rebuild import (
    Agreement,
    NodeVerdict,
    Outputs,
)


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
    claimed = agreement.source
    # a git commit or repository it names must be the one this node's provenance names:
    # the node vouches for nothing it did not prove (the tree digest alone is always fine)
    if (
        source is None
        or claimed.sha256 != source.sha256
        or (claimed.git_commit, claimed.uri) not in ((None, None), (source.git_commit, source.uri))
    ):
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
