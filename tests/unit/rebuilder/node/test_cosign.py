"""A node co-signs an agreement only about its own job, outputs, source and spec, and only
at a time within the clock skew of its own clock (fake sandbox backend, real node)."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rebuilder.attest.envelope import write_envelope
from rebuilder.attest.keys import generate_keypair, load_public_key, load_signer
from rebuilder.attest.verify import verify_attestation
from rebuilder.formats.fields import StatementError
from rebuilder.formats.provenance import SourceRef
from rebuilder.formats.rebuild import Agreement, AgreementNode
from rebuilder.node.jobs import JobState
from rebuilder.node.node import Node, NodeSettings
from rebuilder.node.requests import pack_source
from sandbox.config import SandboxConfig
from sandbox.digests import sha256_file
from sandbox.source_tree import tree_digest
from sandbox.uris import DISAGREEMENT_PREDICATE
from tests.conftest import write_spec
from tests.unit.conftest import FAKE_SPEC

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
    assert checked.statement.predicate_type == DISAGREEMENT_PREDICATE
    predicate = checked.statement.predicate
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
    refused = refusal_of(node, job_id, other, tmp_path)
    assert "source" in str(refused["reason"])
    # the refusal names what the node built, so a gate counts it only against that
    assert refused["source"] == {"name": "source", "digest": {"sha256": honest.source.sha256}}
    assert refused["spec"] == {"sha256": honest.spec_sha256}
    other = replace(honest, spec_sha256="8" * 64)
    assert "spec" in str(refusal_of(node, job_id, other, tmp_path)["reason"])


def test_a_git_commit_the_node_never_proved_is_refused(
    built: tuple[Node, str, Agreement], tmp_path: Path
) -> None:
    node, job_id, honest = built
    commit = "a" * 40
    forged = replace(
        honest,
        source=SourceRef(
            sha256=honest.source.sha256,
            git_commit=commit,
            uri=f"git+https://example.org/release.git@{commit}",
        ),
    )
    # the same tree digest, now bound to a commit this node's provenance does not name
    assert "source" in str(refusal_of(node, job_id, forged, tmp_path)["reason"])
    # control: the tree digest alone (what an honest client writes) is co-signed
    assert node.cosign(job_id, honest.payload(), now=NODE_CLOCK)[0]


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


# --- the node signs exactly what it would write (review gate-1, findings 4, 5 and 8) -----


def canonical(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def test_a_subject_the_node_never_built_is_refused(
    built: tuple[Node, str, Agreement], tmp_path: Path
) -> None:
    """t_cosign.py: a subject named by sha512 alone slipped past the subject check."""
    node, job_id, honest = built
    document = json.loads(honest.payload())
    evil = hashlib.sha512(b"never built by any node\n").hexdigest()
    document["subject"].append({"name": "evil.bin", "digest": {"sha512": evil}})
    signed, answer = node.cosign(job_id, canonical(document), now=NODE_CLOCK)
    assert not signed, "the node co-signed a subject it never built"
    refused = json.loads(base64.b64decode(answer["payload"]))
    assert refused["predicateType"] == DISAGREEMENT_PREDICATE


@pytest.mark.parametrize(
    "change",
    [
        "a second digest beside sha256",
        "a predicate field of the client's",
        "a node field of the client's",
        "another spelling of createdOn",
        "a statement field alias",
    ],
)
def test_anything_the_node_would_not_write_is_refused(
    built: tuple[Node, str, Agreement], change: str
) -> None:
    node, job_id, honest = built
    document = json.loads(honest.payload())
    if change == "a second digest beside sha256":
        document["subject"][0]["digest"]["sha512"] = "0" * 128
    elif change == "a predicate field of the client's":
        document["predicate"]["releaseNotes"] = "approved by every rebuilder"
    elif change == "a node field of the client's":
        document["predicate"]["nodes"][0]["trusted"] = True
    elif change == "another spelling of createdOn":
        document["predicate"]["createdOn"] = "2026-11-22T12:00:00+00:00"
    else:  # a protobuf reader sees a node-signed SLSA provenance (finding 8)
        document["predicate_type"] = "https://slsa.dev/provenance/v1"
        document["predicate"]["buildDefinition"] = {"buildType": "https://evil"}
        document["predicate"]["runDetails"] = {"builder": {"id": "https://evil"}}
    try:
        signed, _ = node.cosign(job_id, canonical(document), now=NODE_CLOCK)
    except StatementError:
        signed = False  # not a statement it reads one way only: refused outright
    assert not signed, f"the node co-signed {change}"
    assert node.cosign(job_id, honest.payload(), now=NODE_CLOCK)[0]  # control


@pytest.mark.parametrize("stamp", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59"])
def test_a_time_beyond_the_calendar_gets_a_signed_refusal(
    built: tuple[Node, str, Agreement], tmp_path: Path, stamp: str
) -> None:
    """t_time2.py: such a time crashed the node (a 500) instead of a signed refusal."""
    node, job_id, honest = built
    document = json.loads(honest.payload())
    document["predicate"]["createdOn"] = stamp
    signed, answer = node.cosign(job_id, canonical(document), now=NODE_CLOCK)
    assert not signed
    refused = json.loads(base64.b64decode(answer["payload"]))
    assert "createdOn" in refused["predicate"]["reason"]
