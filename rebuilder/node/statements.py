"""What nodes and the rebuild client say in statements: a node's signed failure, a node's
signed disagreement, and the combined agreement the agreeing nodes co-sign."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from rebuilder.attest.statement import make_statement, subject

FAILURE_PREDICATE = "https://hermetic.dev/attestations/rebuild-failure/v1"
DISAGREEMENT_PREDICATE = "https://hermetic.dev/attestations/rebuild-disagreement/v1"
AGREEMENT_PREDICATE = "https://hermetic.dev/attestations/rebuild-agreement/v1"

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
    *, own: Outputs, proposed_sha256: str, builder_id: str, job_id: str
) -> bytes:
    """A node's signed refusal to co-sign: its own outputs, and the statement it refused."""
    predicate = {
        "refusedStatement": {"sha256": proposed_sha256},
        "builder": {"id": builder_id},
        "jobId": job_id,
    }
    return make_statement([subject(p, d) for p, d in own], DISAGREEMENT_PREDICATE, predicate)


def agreement_statement(
    *, outputs: Outputs, threshold: int, nodes: Sequence[dict[str, Any]], spec_sha256: str
) -> bytes:
    """The combined statement: the agreed outputs, and every node's attestation and verdict."""
    predicate = {
        "threshold": threshold,
        "agreeing": sum(1 for node in nodes if node["verdict"] == "agree"),
        "request": {"sha256": spec_sha256},
        "nodes": list(nodes),
        "createdOn": datetime.now(tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    return make_statement([subject(p, d) for p, d in outputs], AGREEMENT_PREDICATE, predicate)


def statement_outputs(statement: dict[str, Any]) -> Outputs:
    """(name, sha256) of a statement's subjects, sorted, for comparison."""
    return tuple(
        sorted(
            (str(item.get("name", "")), str(item.get("digest", {}).get("sha256", "")))
            for item in statement.get("subject", [])
        )
    )
