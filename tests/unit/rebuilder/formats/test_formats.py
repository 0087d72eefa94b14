"""Golden statements: what each writer signs is byte for byte the golden file, and each
typed reader reads the golden file back to the same document (writer and reader cannot
drift apart). ``HERMETIC_UPDATE_GOLDEN=1`` rewrites the files after a deliberate change."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from rebuilder.attest.check_statement import check_statement
from rebuilder.attest.provenance import provenance_statement
from rebuilder.attest.statement import parse_statement, read_statement
from rebuilder.check import BuildRole, CheckBuild, CheckResult
from rebuilder.compare import Difference
from rebuilder.formats.check import CheckPredicate
from rebuilder.formats.fields import PredicateError, Statement, Subject
from rebuilder.formats.gate import (
    InputAttestation,
    PolicyStatement,
    SignedKey,
    VerificationSummary,
)
from rebuilder.formats.provenance import Provenance, SourceRef
from rebuilder.formats.rebuild import (
    Agreement,
    AgreementNode,
    Disagreement,
    Failure,
    NodeVerdict,
)
from rebuilder.formats.sbom import Sbom
from sandbox.digests import Sha256
from sandbox.logcap import LogSummary
from sandbox.monitor import ResourceUsage
from sandbox.outputs import OutputFile
from sandbox.plan import Enforcement, LimitPlan
from sandbox.result import BuildResult, BuildStatus, InputRecord
from sandbox.uris import (
    AGREEMENT_PREDICATE,
    CHECK_PREDICATE,
    DISAGREEMENT_PREDICATE,
    FAILURE_PREDICATE,
    POLICY_PREDICATE,
    SLSA_PROVENANCE,
    SLSA_VSA,
    SPDX_PREDICATE,
)

GOLDEN = Path(__file__).parent.parent / "golden"
NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
A, B, C, D = ("a" * 64, "b" * 64, "c" * 64, "d" * 64)


def build_result(*, traced: bool = True) -> BuildResult:
    trace: dict[str, Any] = (
        {
            "file": "trace.json",
            "sha256": f"sha256:{D}",
            "level": "standard",
            "complete": True,
            "gaps": [],
            "network_interfaces": ["lo"],
            "network_attempts": 0,
            "loopback_attempts": 2,
            "network_targets": [],
        }
        if traced
        else {}
    )
    return BuildResult(
        build_id="20261122T120000Z-0123abcd",
        status=BuildStatus.BUILT,
        reason="",
        exit_code=0,
        digest=Sha256(C),
        outputs=(OutputFile(path="hello", sha256=Sha256(A), size=3, mode=0o755),),
        image=f"localhost/hermetic/debian@sha256:{B}",
        source_digest=Sha256(C),
        inputs=(
            InputRecord(
                url="https://example.org/hello-2.10.tar.gz",
                sha256=Sha256(D),
                dest="hello.tgz",
                fetched=True,
            ),
        ),
        source_date_epoch=1700000000,
        source_date_epoch_from="spec",
        env=(("LANG", "C.UTF-8"), ("TZ", "UTC")),
        build_dir="/build",
        limits=(
            LimitPlan(
                name="timeout",
                value=3600,
                unit="s",
                enforced_by=(Enforcement.HOST_TIMER,),
                detail="",
            ),
        ),
        resources=ResourceUsage(peak_memory_bytes=1024, cpu_seconds=1.5, tasks_started=3),
        log=LogSummary(
            path=Path("/out/build.log"),
            sha256=f"sha256:{A}",
            bytes_seen=9,
            bytes_kept=9,
            truncated=False,
        ),
        trace=trace,
        duration_s=2.0,
        started_at="2026-11-22T11:59:58.000001Z",
        finished_at="2026-11-22T12:00:00.000002Z",
        spec_path="/src/hermetic.toml",
        out_dir="/out",
        hermetic_version="0.1.0",
    )


SPEC = {"build": {"image": "debian", "command": ["make"], "outputs": ["hello"]}}


def _provenance() -> bytes:
    return provenance_statement(
        build_result(),
        spec_document=SPEC,
        result_json=b"{}\n",
        builder_id="https://hermetic.dev/builders/local#test@host",
        spec_sha256=f"sha256:{A}",
        source=SourceRef(
            sha256=C, git_commit="e" * 40, uri="git+https://example.org/r@" + "e" * 40
        ),
    )


def _check() -> bytes:
    control = build_result()
    result = CheckResult(
        reproducible=False,
        seed=7,
        variations=("time", "umask"),
        skipped={"kernel": "no personality here"},
        builds=(
            CheckBuild(
                name="01-control", role=BuildRole.CONTROL, variations=(), seed=7, result=control
            ),
            CheckBuild(
                name="02-experiment",
                role=BuildRole.EXPERIMENT,
                variations=("time", "umask"),
                seed=8,
                result=control,
            ),
        ),
        differences=(
            Difference(
                path="hello",
                control=OutputFile(path="hello", sha256=Sha256(A), size=3, mode=0o755),
                other=OutputFile(path="hello", sha256=Sha256(B), size=3, mode=0o755),
            ),
        ),
        culprits=("time",),
        suspects=(),
        hints=(),
        report=None,
        report_dir=Path("/report"),
        duration_s=3.0,
    )
    return check_statement(result, builder_id="checker", now=NOW)


def _agreement() -> Agreement:
    node = AgreementNode(
        url="https://node-a:8443",
        builder_id="https://hermetic.dev/builders/node#node-a:8443",
        keyid="f" * 64,
        job_id="job-1",
        outcome="built",
        verdict=NodeVerdict.AGREE,
        reason="",
        outputs=(("hello", A),),
        attestation_sha256=D,
    )
    other = AgreementNode(
        url="https://node-b:8443",
        builder_id="https://hermetic.dev/builders/node#node-b:8443",
        keyid="e" * 64,
        job_id="job-2",
        outcome="build-failed",
        verdict=NodeVerdict.FAILED,
        reason="the build failed",
        outputs=(),
        attestation_sha256=None,
    )
    return Agreement(
        outputs=(("hello", A),),
        threshold=1,
        request_sha256=B,
        source=SourceRef(sha256=C),
        spec_sha256=D,
        nodes=(node, other),
        created_on=NOW,
    )


def _vsa() -> bytes:
    summary = VerificationSummary(
        verifier_id="https://gate.example.org",
        time_verified=NOW,
        resource_uri="hello",
        policy={"uri": "file:///policy.toml", "digest": {"sha256": A}},
        inputs=(InputAttestation(uri="/att/a.intoto.json", sha256=B),),
        agreeing_operators=("acme", "globex"),
        threshold=2,
    )
    return summary.statement([Subject("hello", A)])


def _policy() -> bytes:
    statement = PolicyStatement(
        file="policy.toml",
        keys=(SignedKey(operator="acme", fingerprint=f"sha256:{A}"),),
        version=3,
        expires=NOW,
    )
    return statement.statement([Subject("policy.toml", B)])


SPDX = {
    "spdxVersion": "SPDX-2.3",
    "dataLicense": "CC0-1.0",
    "SPDXID": "SPDXRef-DOCUMENT",
    "name": "hello",
    "documentNamespace": "https://hermetic.dev/spdx/c/20261122T120000Z-0123abcd",
    "creationInfo": {"created": "2026-11-22T12:00:00Z", "creators": ["Tool: hermetic-0.1.0"]},
    "packages": [],
}


WRITERS: dict[str, tuple[str, Callable[[], bytes], Callable[[dict[str, Any]], Any]]] = {
    # name: (predicate type, writer, typed reader of the statement)
    "provenance": (SLSA_PROVENANCE, _provenance, lambda s: Provenance.from_dict(s["predicate"])),
    "check": (CHECK_PREDICATE, _check, lambda s: CheckPredicate.from_dict(s["predicate"])),
    "agreement": (
        AGREEMENT_PREDICATE,
        lambda: _agreement().payload(),
        lambda s: Agreement.from_statement(Statement.from_dict(s)),
    ),
    "failure": (
        FAILURE_PREDICATE,
        lambda: Failure(
            request_sha256=B,
            outcome="build-failed",
            reason="make: no rule",
            builder_id="node",
            job_id="job-1",
        ).payload(),
        lambda s: Failure.from_dict(s["predicate"], s["subject"][0]["digest"]["sha256"]),
    ),
    "disagreement": (
        DISAGREEMENT_PREDICATE,
        lambda: Disagreement(
            own=(("hello", B),),
            proposed_sha256=A,
            builder_id="node",
            job_id="job-2",
            reason="its subjects are not the outputs this node built",
            created_on=NOW,
            source=SourceRef(sha256=C),
            spec_sha256=D,
        ).payload(),
        lambda s: Disagreement.from_statement(Statement.from_dict(s)),
    ),
    "policy": (POLICY_PREDICATE, _policy, lambda s: PolicyStatement.from_dict(s["predicate"])),
    "vsa": (SLSA_VSA, _vsa, lambda s: VerificationSummary.from_dict(s["predicate"])),
    "sbom": (
        SPDX_PREDICATE,
        lambda: Sbom(predicate_type=SPDX_PREDICATE, document=SPDX).statement([Subject("hello", A)]),
        lambda s: Sbom.from_dict(s["predicate"], s["predicateType"]),
    ),
}


def _golden(name: str, payload: bytes) -> dict[str, Any]:
    path = GOLDEN / f"{name}.statement.json"
    rendered = json.dumps(json.loads(payload), indent=2, sort_keys=True) + "\n"
    if os.environ.get("HERMETIC_UPDATE_GOLDEN"):
        path.write_text(rendered)
    assert rendered == path.read_text(), f"the {name} writer no longer writes {path.name}"
    document: dict[str, Any] = json.loads(path.read_text())
    return document


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_the_writer_writes_the_golden_statement(name: str) -> None:
    predicate_type, write, _ = WRITERS[name]
    payload = write()
    document = _golden(name, payload)
    assert document["predicateType"] == predicate_type
    assert parse_statement(payload) == document  # and the in-toto models accept it


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_the_reader_reads_the_golden_statement_back(name: str) -> None:
    _, _, read = WRITERS[name]
    document = json.loads((GOLDEN / f"{name}.statement.json").read_text())
    typed = read(document)
    assert typed.to_dict() == document["predicate"]


def test_an_agreement_read_back_writes_the_same_bytes() -> None:
    payload = _agreement().payload()
    assert Agreement.from_statement(read_statement(payload)).payload() == payload


@pytest.mark.parametrize(
    ("name", "path", "value"),
    [
        ("provenance", ("runDetails", "metadata", "finishedOn"), "yesterday"),
        ("provenance", ("buildDefinition", "buildType"), 7),
        ("check", ("reproducible",), "yes"),
        ("check", ("seed",), 1.5),
        ("agreement", ("threshold",), -1),
        ("failure", ("jobId",), None),
        ("disagreement", ("createdOn",), "2026-11-22T12:00:00"),  # no zone: no time
        ("policy", ("keys",), [{"operator": "acme"}]),
        ("vsa", ("verificationResult",), "FAILED"),
        ("sbom", ("creationInfo", "created"), "22 Nov 2026"),
    ],
)
def test_a_malformed_field_is_refused(name: str, path: tuple[str, ...], value: Any) -> None:
    _, _, read = WRITERS[name]
    document = json.loads((GOLDEN / f"{name}.statement.json").read_text())
    read(document)  # positive control: the golden reads
    target = document["predicate"]
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(PredicateError):
        read(document)
