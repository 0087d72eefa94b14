"""Agreement is a pure function of the nodes' reports: who agrees, on what, and the
statement the agreeing nodes are asked to co-sign (golden), without a node or a file."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.signer import Key

from rebuilder.attest.keys import public_key_from_pem
from rebuilder.formats.provenance import Provenance, SourceRef
from rebuilder.formats.rebuild import NodeVerdict, Outputs
from rebuilder.rebuild import NodeReport, RequestBinding, agree

GOLDEN = Path(__file__).parent / "golden"
NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
SOURCE, SPEC, REQUEST = "c" * 64, "d" * 64, "b" * 64
BINDING = RequestBinding(source_sha256=SOURCE, spec_sha256=SPEC, request_sha256=REQUEST)
GOOD: Outputs = (("hello", "a" * 64),)
OTHER: Outputs = (("hello", "e" * 64),)


def key(seed: int) -> Key:
    """A fixed ed25519 key (the golden statement names its key id)."""
    private = Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return public_key_from_pem(pem, f"key {seed}")


def built(name: str, outputs: Outputs, signer: Key, *, source: str = SOURCE) -> NodeReport:
    return NodeReport(
        url=f"https://{name}:8443",
        name=name,
        builder_id=f"https://hermetic.dev/builders/node#{name}:8443",
        keyid=signer.keyid,
        key=signer,
        job_id=f"job-{name}",
        state="finished",
        outcome="built",
        outputs=outputs,
        attestation_sha256="f" * 64,
        verdict=NodeVerdict.BUILT,
        facts=Provenance(builder_id=name, source=SourceRef(sha256=source), spec_sha256=SPEC),
    )


def test_two_of_three_agree_golden() -> None:
    failed = NodeReport(url="https://c:8443", name="c", reason="unreachable")
    reports = [built("a", GOOD, key(1)), built("b", GOOD, key(2)), built("d", OTHER, key(3))]
    tally = agree([*reports, failed], 2, BINDING, now=NOW)
    assert [v for v, _ in tally.verdicts] == [
        NodeVerdict.AGREE,
        NodeVerdict.AGREE,
        NodeVerdict.DISAGREE,
        NodeVerdict.FAILED,
    ]
    assert tally.outputs == GOOD and tally.voters == 2 and tally.statement is not None
    # the reports themselves are not touched: the caller applies the verdicts
    assert all(r.verdict is NodeVerdict.BUILT for r in reports)
    rendered = json.dumps(json.loads(tally.statement.payload()), indent=2, sort_keys=True) + "\n"
    golden = GOLDEN / "agree_two_of_three.statement.json"
    if os.environ.get("HERMETIC_UPDATE_GOLDEN"):
        golden.write_text(rendered)
    assert rendered == golden.read_text()


def test_a_tie_has_no_majority() -> None:
    tally = agree([built("a", GOOD, key(1)), built("b", OTHER, key(2))], 1, BINDING, now=NOW)
    assert tally.outputs == () and tally.statement is None
    assert [v for v, _ in tally.verdicts] == [NodeVerdict.DISAGREE] * 2


def test_one_key_on_two_nodes_is_one_vote() -> None:
    same = key(1)
    tally = agree([built("a", GOOD, same), built("b", GOOD, same)], 2, BINDING, now=NOW)
    assert tally.voters == 1 and tally.statement is None
    assert tally.notes == ("1 node(s) agree (2 nodes, 1 distinct keys); 2 needed",)
    # negative control: two keys are two votes
    assert (
        agree([built("a", GOOD, key(1)), built("b", GOOD, key(2))], 2, BINDING, now=NOW).voters == 2
    )


def test_a_node_that_built_another_source_is_invalid() -> None:
    elsewhere = built("b", GOOD, key(2), source="9" * 64)
    tally = agree([built("a", GOOD, key(1)), elsewhere], 1, BINDING, now=NOW)
    assert tally.verdicts[1][0] is NodeVerdict.INVALID
    assert "not the request's" in tally.verdicts[1][1]
    assert tally.statement is not None and tally.voters == 1
