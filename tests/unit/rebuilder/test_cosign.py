"""A node co-signs an agreement only about its own job, outputs, source and spec, and only
at a time within the clock skew of its own clock (fake sandbox backend, real node)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rebuilder.attest.envelope import write_envelope
from rebuilder.attest.keys import generate_keypair, load_public_key, load_signer
from rebuilder.attest.predicates import SourceRef
from rebuilder.attest.verify import verify_attestation
from rebuilder.node.jobs import JobState
from rebuilder.node.node import Node, NodeSettings
from rebuilder.node.requests import pack_source
from rebuilder.node.statements import DISAGREEMENT_PREDICATE, Agreement, AgreementNode
from sandbox.config import SandboxConfig
from sandbox.digests import sha256_file
from sandbox.source_tree import tree_digest
from tests.conftest import write_spec
from tests.unit.rebuilder.conftest import FAKE_SPEC

NODE_CLOCK = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.fixture
def built(tmp_path: Path, fake_config: SandboxConfig) -> Iterator[tuple[Node, str, Agreement]]:
    """A node that built one job, and the honest agreement about it."""
    generate_keypair(tmp_path / "key")
    settings = NodeSettings(directory=tmp_path / "node", builder_id="https://t/node", lease_s=5)
    node = Node(settings, load_signer(str(tmp_path / "key")), config=fake_config)
    spec = write_spec(tmp_path / "src", FAKE_SPEC)
    job = node.submit(pack_source(spec.parent, tmp_path / "p"), "tester")
    node.start()
    try:
        while node.job(job.id).state is not JobState.FINISHED:
            time.sleep(0.05)
    finally:
        node.stop()
    own = node.own_outputs(job.id)
    assert own
    entry = AgreementNode(
        url="http://node",
        builder_id="https://t/node",
        keyid=node.signer.public_key.keyid,
        job_id=job.id,
        outcome="built",
        verdict="agree",
        reason="",
        outputs=own,
        attestation_sha256=None,
    )
    honest = Agreement(
        outputs=own,
        threshold=1,
        request_sha256="0" * 64,
        source=SourceRef(sha256=tree_digest(spec.parent)),
        spec_sha256=sha256_file(spec)[0],
        nodes=(entry,),
        created_on=NODE_CLOCK,
    )
    yield node, job.id, honest
    node.close()


def refusal_of(node: Node, job_id: str, agreement: Agreement, tmp_path: Path) -> dict[str, object]:
    signed, answer = node.cosign(job_id, agreement.payload(), now=NODE_CLOCK)
    assert not signed
    path = tmp_path / "refusal.json"
    write_envelope(path, answer)
    checked = verify_attestation(path, [load_public_key(tmp_path / "key.pub")])
    assert checked.ok and checked.statement is not None
    assert checked.statement["predicateType"] == DISAGREEMENT_PREDICATE
    predicate = checked.statement["predicate"]
    assert isinstance(predicate, dict)
    return predicate


def test_the_honest_agreement_is_co_signed(built: tuple[Node, str, Agreement]) -> None:
    node, job_id, honest = built
    signed, signature = node.cosign(job_id, honest.payload(), now=NODE_CLOCK)
    assert signed and signature["keyid"] == node.signer.public_key.keyid
    # within the skew either way
    for offset in (timedelta(minutes=-4), timedelta(minutes=4)):
        later = replace(honest, created_on=NODE_CLOCK + offset)
        assert node.cosign(job_id, later.payload(), now=NODE_CLOCK)[0]


@pytest.mark.parametrize(
    "offset", [timedelta(hours=-2), timedelta(hours=1), timedelta(days=365 * 900)]
)
def test_a_client_chosen_time_is_refused_with_the_node_s_own_time(
    built: tuple[Node, str, Agreement], tmp_path: Path, offset: timedelta
) -> None:
    node, job_id, honest = built
    predicate = refusal_of(node, job_id, replace(honest, created_on=NODE_CLOCK + offset), tmp_path)
    assert "from this node's clock" in str(predicate["reason"])
    assert predicate["createdOn"] == "2026-11-22T12:00:00Z"  # the node's clock, signed


def test_another_source_or_spec_is_refused(
    built: tuple[Node, str, Agreement], tmp_path: Path
) -> None:
    node, job_id, honest = built
    other = replace(honest, source=SourceRef(sha256="7" * 64))
    assert "source" in str(refusal_of(node, job_id, other, tmp_path)["reason"])
    other = replace(honest, spec_sha256="8" * 64)
    assert "spec" in str(refusal_of(node, job_id, other, tmp_path)["reason"])


def test_an_agreement_without_source_is_refused(
    built: tuple[Node, str, Agreement], tmp_path: Path
) -> None:
    node, job_id, honest = built
    statement = json.loads(honest.payload())
    del statement["predicate"]["source"]  # what an older client, or an attacker, sends
    payload = json.dumps(statement).encode()
    signed, answer = node.cosign(job_id, payload, now=NODE_CLOCK)
    assert not signed
    refused = json.loads(base64.b64decode(answer["payload"]))
    assert "not a well-formed agreement" in refused["predicate"]["reason"]
