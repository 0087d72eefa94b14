"""The node-boundary review's attacks (review node-1, findings 1-13 and the suspicions), each
as a test without podman: the attack refused, a negative control showing it would work
(or that the probe sees what it looks for) without the defence, and the legitimate path.

Real-podman and real-redis versions of the same attacks are in tests/integration
(test_node_boundary.py, test_scale_out.py)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from fastapi.testclient import TestClient

from rebuilder.attest.keys import generate_keypair, load_signer
from rebuilder.attest.statement import parse_statement
from rebuilder.formats.fields import Subject
from rebuilder.formats.provenance import Provenance
from rebuilder.formats.rebuild import NodeVerdict
from rebuilder.node.api import MAX_COSIGN_BYTES, ApiSettings, create_app
from rebuilder.node.auth import AuthConfigError, ClientScopes, TokenRegistry, add_token
from rebuilder.node.execute import execute
from rebuilder.node.jobs import JobState, JobStore, Outcome
from rebuilder.node.node import FAILURE_FILE, Node, NodeBusy, NodeSettings
from rebuilder.node.remote import (
    RemoteError,
    WorkerSettings,
    _rebuild_task,
    _write_results,
    tenant_key,
)
from rebuilder.node.requests import (
    RESOLUTION_STEPS,
    RequestError,
    RequestLimits,
    pack_source,
    unpack_source,
)
from rebuilder.node.worker_result import (
    WorkerResultError,
    job_facts,
    node_result,
    node_version,
)
from rebuilder.rebuild import NodeReport, _binding_problem, _reports_for_disagreement
from sandbox import connect_backend
from sandbox.beneath import (
    ResolutionBudget,
    TooMuchResolution,
    remove_tree,
    resolve_all_beneath,
    resolve_beneath,
    walk_beneath,
)
from sandbox.config import SandboxConfig
from sandbox.digests import prefixed, sha256_bytes
from sandbox.errors import SpecError
from sandbox.input_policy import InputPolicy
from sandbox.spec import MAX_SPEC_BYTES, Limits, Spec
from sandbox.trace.levels import TraceLevel
from tests.conftest import write_spec
from tests.unit.conftest import FAKE_SPEC

KEY_TEXT = b"-----BEGIN PRIVATE KEY-----\nnot really, but the node's own file\n"


def tar(entries: list[tuple[str, bytes | None, str | None]]) -> bytes:
    """A request: (name, data for a file, link target for a link)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.GNU_FORMAT) as archive:
        for name, data, link in entries:
            info = tarfile.TarInfo(name)
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
                archive.addfile(info)
            elif data is None:
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            else:
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


SPEC_ENTRY = ("hermetic.toml", FAKE_SPEC.encode(), None)


@pytest.fixture
def signer_file(tmp_path: Path) -> Path:
    generate_keypair(tmp_path / "key")
    return tmp_path / "key"


def make_node(tmp_path: Path, config: SandboxConfig, key: Path, **options: Any) -> Node:
    settings = NodeSettings(
        directory=tmp_path / "node", builder_id="https://t/node", lease_s=5, **options
    )
    return Node(settings, load_signer(str(key)), config=config)


def finish(node: Node, job_id: str) -> None:
    """Run the node's workers until the job has finished."""
    node.start()
    try:
        while node.job(job_id).state is not JobState.FINISHED:
            time.sleep(0.02)
    finally:
        node.stop()


def http_for(
    node: Node, tmp_path: Path, **options: Any
) -> tuple[TestClient, dict[str, dict[str, str]]]:
    tokens = tmp_path / "tokens.json"
    auth = {
        name: {"Authorization": f"Bearer {add_token(tokens, name, scopes)}"}
        for name, scopes in (("alice", ["submit", "read", "cosign"]), ("bob", ["submit", "read"]))
    }
    app = create_app(node, ApiSettings(tokens=TokenRegistry.load(tokens), **options))
    return TestClient(app), auth


# --- 1: a worker's links plant nothing outside; the node's reads follow no link ------------


def naive_write(partial: Path, links: dict[str, str]) -> None:
    """How results were written before: in order, parents made by following links."""
    for relative, target in links.items():
        (partial / relative).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, partial / relative)


def test_a_worker_s_links_plant_nothing_outside_the_results(tmp_path: Path) -> None:
    key = tmp_path / "node.key"
    key.write_bytes(KEY_TEXT)
    planting = {"x": "..", "x/failure.intoto.json": str(key)}
    # negative control: written naively, the second link lands in the job's directory
    job = tmp_path / "naive-job"
    (job / ".out.partial").mkdir(parents=True)
    naive_write(job / ".out.partial", planting)
    assert (job / "failure.intoto.json").read_bytes() == KEY_TEXT
    # the defence: refused before anything is written, and nothing lands outside
    job = tmp_path / "job"
    (job / ".out.partial").mkdir(parents=True)
    answer = {"files": {}, "links": planting, "modes": {}}
    with pytest.raises(RemoteError):
        _write_results(job / ".out.partial", answer)
    assert sorted(p.name for p in job.iterdir()) == [".out.partial"]
    assert list((job / ".out.partial").iterdir()) == []
    for links in (
        {"artifacts/x": "..", "artifacts/x/y": "z"},  # one inside the other
        {"artifacts/a": "/etc/passwd"},  # absolute
        {"artifacts/a": "../../../etc/passwd"},  # out once followed
        {"result.json": "artifacts/a"},  # a link that is not an output
    ):
        partial = tmp_path / f"p{len(list(tmp_path.iterdir()))}"
        partial.mkdir()
        with pytest.raises(RemoteError):
            _write_results(partial, {"files": {}, "links": links, "modes": {}})
    # positive control: files and an ordinary inside link among the outputs are written
    partial = tmp_path / "ok"
    partial.mkdir()
    data = base64.b64encode(b"real\n").decode()
    _write_results(
        partial,
        {
            "files": {"artifacts/d/real.txt": data},
            "links": {"artifacts/ok": "d/real.txt"},
            "modes": {"artifacts/d/real.txt": 0o644},
        },
    )
    assert (partial / "artifacts" / "ok").read_text() == "real\n"


def test_the_node_reads_its_job_files_through_no_link(
    tmp_path: Path, fake_config: SandboxConfig, signer_file: Path
) -> None:
    node = make_node(tmp_path, fake_config, signer_file)
    broken = FAKE_SPEC.replace('outputs = ["hermetic.toml"]', 'outputs = ["missing"]')
    archive = pack_source(write_spec(tmp_path / "src", broken).parent, tmp_path / "p")
    job = node.submit(archive, "token:alice")
    finish(node, job.id)
    failure = node.jobs_dir / job.id / FAILURE_FILE
    failure.unlink()
    key = tmp_path / "node.key"
    key.write_bytes(KEY_TEXT)
    failure.symlink_to(key)  # as a worker's planted link would have made it
    # negative control: a plain read of the job's file reads the key
    assert failure.read_bytes() == KEY_TEXT
    served = node.attestation(job.id)
    assert served is not None and KEY_TEXT not in served
    envelope = json.loads(served)
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement["predicate"]["outcome"] == "build-failed"  # signed again, by the node
    assert not failure.is_symlink() and key.read_bytes() == KEY_TEXT
    node.close()


# --- 2: the node writes a worker's statement itself, from checked facts -------------------


@pytest.fixture
def worker_result(tmp_path: Path, fake_config: SandboxConfig) -> tuple[Path, bytes]:
    """A genuine worker's results (fake backend) and the request they answer."""
    archive = pack_source(write_spec(tmp_path / "src", FAKE_SPEC).parent, tmp_path / "p")
    execution = execute(
        archive,
        tmp_path / "worker-job",
        attempt=1,
        config=fake_config,
        connect=connect_backend,
        trace=TraceLevel.STANDARD,
        builder_id="",
        input_policy=InputPolicy(),
    )
    assert execution.outcome is Outcome.BUILT and execution.out_dir is not None
    return execution.out_dir, archive


def results_copy(
    source: Path, dest: Path, change: Callable[[dict[str, Any], Path], object]
) -> Path:
    shutil.copytree(source, dest, symlinks=True)
    document = json.loads((dest / "result.json").read_text())
    change(document, dest)
    (dest / "result.json").write_text(json.dumps(document))
    return dest


def _trace_lie(document: dict[str, Any], results: Path) -> None:
    trace = b'{"events": []}\n'
    (results / "trace.json").write_bytes(trace)
    document["trace"] = {
        "file": "trace.json",
        "sha256": prefixed(sha256_bytes(trace)),
        "level": "standard",
        "complete": True,
        "gaps": ["the tracer lost events"],  # complete, with gaps: a lie
        "network_interfaces": ["lo"],
        "network_attempts": 0,
        "network_targets": [],
        "loopback_attempts": 0,
    }


LIES: dict[str, Callable[[dict[str, Any], Path], object]] = {
    "another image": lambda d, r: d.update(image="evil/image@sha256:" + "1" * 64),
    "another source": lambda d, r: d.update(source_digest="sha256:" + "2" * 64),
    "another environment": lambda d, r: d["environment"].update(LD_PRELOAD="/evil.so"),
    "another build dir": lambda d, r: d.update(build_dir="/elsewhere"),
    "another epoch": lambda d, r: d.update(source_date_epoch=2),
    "another version": lambda d, r: d.update(hermetic_version="0.0.0-evil"),
    "not built": lambda d, r: d.update(exit_code=1),
    "a bad build id": lambda d, r: d.update(build_id="../../x"),
    "an output not returned": lambda d, r: d["outputs"].append(
        {"path": "x", "sha256": "3" * 64, "size": 1, "mode": "0644"}
    ),
    "an output's digest": lambda d, r: d["outputs"][0].update(sha256="4" * 64),
    "a file returned, not stated": lambda d, r: (r / "artifacts" / "extra").write_text("x"),
    "the set's digest": lambda d, r: d.update(digest="sha256:" + "5" * 64),
    "another log": lambda d, r: (r / "build.log").write_text("another log\n"),
    "a limit raised": lambda d, r: d["limits"]["memory"].update(value=2**50),
    "an unknown enforcement": lambda d, r: d["limits"]["disk"].update(enforced_by=["trust-me"]),
    "a field of its own": lambda d, r: d.update(gitCommit="c0ffee"),
    "a trace claimed": lambda d, r: d.update(trace={"level": "full", "complete": True}),
    "a complete trace with gaps": _trace_lie,
}


@pytest.mark.parametrize("lie", sorted(LIES))
def test_a_worker_s_lie_is_not_signed(
    tmp_path: Path, fake_config: SandboxConfig, worker_result: tuple[Path, bytes], lie: str
) -> None:
    results, archive = worker_result
    facts = job_facts(archive, RequestLimits(), fake_config)
    times = {"started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:01:00Z"}
    # positive control: the genuine result is taken, as the node's own statement
    honest = node_result(
        results, facts, trace=TraceLevel.STANDARD, out_dir=tmp_path / "out", **times
    )
    assert honest.image == facts.image.reference and honest.outputs
    lying = results_copy(results, tmp_path / "lie", LIES[lie])
    with pytest.raises(WorkerResultError, match="not signed"):
        node_result(lying, facts, trace=TraceLevel.STANDARD, out_dir=tmp_path / "out", **times)


def test_a_worker_s_own_statement_is_never_what_the_node_signs(
    tmp_path: Path, fake_config: SandboxConfig, worker_result: tuple[Path, bytes]
) -> None:
    """The gate-accepted lie of the review (a git commit in the source dependency) cannot be
    carried: the node's statement names the source as the node computed it."""
    from rebuilder.attest.provenance import provenance_statement
    from rebuilder.attest.statement import make_statement
    from rebuilder.gate.policy import GitSource, SourceRule
    from sandbox.uris import SLSA_PROVENANCE as SLSA_PROVENANCE_V1

    results, archive = worker_result
    facts = job_facts(archive, RequestLimits(), fake_config)
    commit = "c0ffee" * 6 + "c0ff"
    rule = SourceRule(
        git=(GitSource(repository="https://github.com/victim/release", commit=commit),)
    )
    # negative control: a statement with the worker's git claim is one the gate admits
    lie = {"name": "source", "uri": f"git+https://github.com/victim/release@{commit}"}
    lie["digest"] = {"sha256": facts.source_digest, "gitCommit": commit}  # type: ignore[assignment]
    predicate = {"buildDefinition": {"resolvedDependencies": [lie]}}
    claimed = Provenance.from_dict(
        json.loads(make_statement([Subject("out.txt", "1" * 64)], SLSA_PROVENANCE_V1, predicate))[
            "predicate"
        ]
    )
    assert claimed.source is not None and rule.allows_commit(claimed.source)
    # the defence: what the node signs comes from node_result, and names the tree only
    result = node_result(
        results,
        facts,
        trace=TraceLevel.STANDARD,
        out_dir=tmp_path / "out",
        started_at="2026-01-01T00:00:00Z",
        finished_at="2026-01-01T00:01:00Z",
    )
    statement = parse_statement(
        provenance_statement(
            result,
            spec_document=facts.spec.document,
            result_json=result.to_json_text().encode(),
            builder_id="https://t/node",
            spec_sha256=facts.spec_sha256,
        )
    )
    signed = Provenance.from_dict(statement["predicate"])
    assert signed.source is not None and signed.source.sha256 == facts.source_digest
    assert not rule.allows_commit(signed.source)
    assert result.hermetic_version == node_version()


# --- 3: deep trees ------------------------------------------------------------------------


def deep(root: Path, depth: int) -> Path:
    """A chain of ``depth`` nested directories, made with dir descriptors (no PATH_MAX)."""
    root.mkdir(parents=True)
    fd = os.open(root, os.O_RDONLY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            step = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = step
        os.close(os.open("f", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
    finally:
        os.close(fd)
    return root


def test_deep_trees_are_removed_and_walked_without_recursion(tmp_path: Path) -> None:
    depth = sys.getrecursionlimit() + 500
    # negative control: the standard library's recursive removal gives up on it
    probe = deep(tmp_path / "probe", depth)
    with pytest.raises((RecursionError, OSError)):  # out of stack (or of descriptors)
        shutil.rmtree(probe)
    remove_tree(probe)
    assert not probe.exists()
    tree = deep(tmp_path / "tree", depth)
    from sandbox.beneath import TreeLimits, TreeTooLarge

    with pytest.raises(TreeTooLarge, match="deeper than"):
        list(walk_beneath(tree, TreeLimits()))
    shallow = deep(tmp_path / "shallow", 50)  # control: an ordinary depth is walked
    assert len(list(walk_beneath(shallow, TreeLimits()))) == 51
    remove_tree(tree)
    assert not tree.exists()


def test_deep_requests_are_refused_early(tmp_path: Path) -> None:
    for depth in (5000, 1_000_000):
        request = tar([SPEC_ENTRY, ("/".join(["a"] * depth) + "/f", b"", None)])
        with pytest.raises(RequestError, match=r"extended header|deeper than"):
            unpack_source(request, tmp_path / f"d{depth}")
        assert not any((tmp_path / f"d{depth}").rglob("f"))
    # a deep member within the path length is refused by depth
    request = tar([SPEC_ENTRY, ("/".join(["a"] * 200) + "/f", b"", None)])
    with pytest.raises(RequestError, match="deeper than"):
        unpack_source(request, tmp_path / "d200")
    # control: an ordinary nested source unpacks
    request = tar([SPEC_ENTRY, ("/".join(["a"] * 20) + "/f", b"x", None)])
    unpack_source(request, tmp_path / "ok")
    assert (tmp_path / "ok" / "/".join(["a"] * 20) / "f").read_bytes() == b"x"


def test_any_failure_to_check_a_request_is_a_400(
    tmp_path: Path, fake_config: SandboxConfig, signer_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = make_node(tmp_path, fake_config, signer_file)
    http, auth = http_for(node, tmp_path)

    def explode(*args: object, **kwargs: object) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr("rebuilder.node.node.unpack_source", explode)
    request = tar([SPEC_ENTRY])
    answer = http.post("/v1/rebuilds", content=request, headers=auth["alice"])
    assert answer.status_code == 400 and "recursion" not in answer.text
    monkeypatch.undo()  # control: the same request is accepted
    assert http.post("/v1/rebuilds", content=request, headers=auth["alice"]).status_code == 202
    assert not (tmp_path / "node" / "incoming").exists() or not any(
        (tmp_path / "node" / "incoming").iterdir()
    )
    node.close()


# --- 4: the node's ceilings, the deadline of a running build, quota and retention -------------


def test_limits_above_the_node_s_ceilings_are_refused_at_submission(
    tmp_path: Path, fake_config: SandboxConfig, signer_file: Path
) -> None:
    node = make_node(tmp_path, fake_config, signer_file)
    http, auth = http_for(node, tmp_path)
    greedy = FAKE_SPEC + (
        '\n[limits]\ntimeout = "168h"\nmemory = "1000TiB"\ndisk = "1000TiB"\n'
        'log = "1000TiB"\npids = 4000000\n'
    )
    archive = pack_source(write_spec(tmp_path / "greedy", greedy).parent, tmp_path / "p")
    answer = http.post("/v1/rebuilds", content=archive, headers=auth["alice"])
    assert answer.status_code == 400, answer.text
    for name in ("timeout", "memory", "disk", "log", "pids"):
        assert f"limits.{name}" in answer.json()["detail"]
    many = FAKE_SPEC + "".join(
        f'\n[[inputs]]\nurl = "https://deb.debian.org/x{i}"\nsha256 = "{"0" * 64}"\ndest = "d{i}"\n'
        for i in range(65)
    )
    archive = pack_source(write_spec(tmp_path / "many", many).parent, tmp_path / "q")
    answer = http.post("/v1/rebuilds", content=archive, headers=auth["alice"])
    assert answer.status_code == 400 and "65 inputs" in answer.text
    # negative control: the spec itself is valid (only a node's ceiling refuses it)
    assert Spec.from_toml(tmp_path / "greedy" / "hermetic.toml").limits.memory_bytes > 2**40
    # positive control: the spec's defaults are within the node's defaults
    archive = pack_source(write_spec(tmp_path / "ok", FAKE_SPEC).parent, tmp_path / "r")
    assert http.post("/v1/rebuilds", content=archive, headers=auth["alice"]).status_code == 202
    # a worker applies the same ceilings (a request that got past a node's check)
    execution = execute(
        pack_source(tmp_path / "greedy", tmp_path / "s"),
        tmp_path / "w",
        attempt=1,
        config=fake_config,
        connect=connect_backend,
        trace=TraceLevel.STANDARD,
        builder_id="",
        input_policy=InputPolicy(),
        limits=RequestLimits(),
    )
    assert execution.outcome is Outcome.BUILD_FAILED and "limits.memory" in execution.reason
    node.close()


def test_the_job_deadline_stops_a_running_build(
    tmp_path: Path, fake_config: SandboxConfig, signer_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sandbox.fake import FakeBackend, FakeRun

    held: list[bool] = []

    def long_build(build_dir: Path, plan: object) -> FakeRun:
        held.append(True)
        return FakeRun(hold_s=3600)  # runs until cancelled, like `sleep 100000`

    @contextlib.contextmanager
    def connect(config: SandboxConfig) -> Iterator[FakeBackend]:
        yield FakeBackend(script=long_build)

    settings = NodeSettings(
        directory=tmp_path / "node", builder_id="https://t/n", deadline_s=10, lease_s=5
    )
    node = Node(settings, load_signer(str(signer_file)), config=fake_config, connect=connect)
    archive = pack_source(write_spec(tmp_path / "src", FAKE_SPEC).parent, tmp_path / "p")
    job = node.submit(archive, "token:alice")
    finish(node, job.id)
    done = node.job(job.id)
    assert held, "the build was started"
    assert done.outcome is Outcome.DEADLINE_EXCEEDED and "stopped" in done.reason
    assert done.attempts == 1  # one attempt, stopped: not retried, not left running
    attestation = node.attestation(job.id)
    assert attestation is not None and b"payload" in attestation
    node.close()


def test_one_client_cannot_fill_the_queue_and_clients_take_turns(tmp_path: Path) -> None:
    jobs = JobStore(tmp_path / "q.sqlite")
    alice = [
        jobs.submit(spec_sha256="0" * 64, submitted_by="alice", deadline_s=600, max_attempts=3)
        for _ in range(5)
    ]
    bob = jobs.submit(spec_sha256="0" * 64, submitted_by="bob", deadline_s=600, max_attempts=3)
    assert jobs.active("alice") == 5 and jobs.active("bob") == 1
    first = jobs.claim("w", lease_s=60)
    assert first is not None and first.id == alice[0]  # the oldest job
    second = jobs.claim("w", lease_s=60)
    # bob's turn, though alice's four other jobs are older
    assert second is not None and second.id == bob
    assert jobs.finish(alice[0], "w", outcome=Outcome.BUILT)
    third = jobs.claim("w", lease_s=60)
    assert third is not None and third.id == alice[1]


def test_a_client_has_its_own_job_cap_and_quota(
    tmp_path: Path, fake_config: SandboxConfig, signer_file: Path
) -> None:
    node = make_node(tmp_path, fake_config, signer_file, max_client_jobs=2)
    archive = pack_source(write_spec(tmp_path / "src", FAKE_SPEC).parent, tmp_path / "p")
    node.submit(archive, "token:alice")
    node.submit(archive, "token:alice")
    with pytest.raises(NodeBusy, match="2 of your jobs"):
        node.submit(archive, "token:alice")
    node.submit(archive, "token:bob")  # control: another client still gets in
    node.close()
    small = make_node(tmp_path / "q", fake_config, signer_file, client_quota_bytes=len(archive) * 2)
    job = small.submit(archive, "token:alice")
    finish(small, job.id)
    assert small.store.stored_bytes("token:alice") > len(archive)  # request and results
    with pytest.raises(NodeBusy, match="quota"):
        small.submit(archive, "token:alice")
    small.submit(archive, "token:bob")  # control
    small.close()


def test_finished_jobs_are_pruned_after_the_retention_time(
    tmp_path: Path, fake_config: SandboxConfig, signer_file: Path
) -> None:
    node = make_node(tmp_path, fake_config, signer_file, retention_s=3600)
    http, auth = http_for(node, tmp_path)
    archive = pack_source(write_spec(tmp_path / "src", FAKE_SPEC).parent, tmp_path / "p")
    job_id = http.post("/v1/rebuilds", content=archive, headers=auth["alice"]).json()["id"]
    finish(node, job_id)
    artifact = f"/v1/rebuilds/{job_id}/artifacts/hermetic.toml"
    assert http.get(artifact, headers=auth["alice"]).status_code == 200
    before = node.store.stored_bytes("token:alice")
    assert node.prune(now=time.time()) == []  # control: not yet an hour
    assert node.prune(now=time.time() + 3601) == [job_id]
    assert http.get(artifact, headers=auth["alice"]).status_code == 404
    signed = http.get(f"/v1/rebuilds/{job_id}/attestation", headers=auth["alice"])
    assert signed.status_code == 200 and b"payload" in signed.content  # the signature stays
    assert not (node.jobs_dir / job_id / "request.tar.gz").exists()
    assert node.store.stored_bytes("token:alice") < before
    node.close()


# --- 5: the spec file's size -----------------------------------------------------------------


def test_a_huge_spec_is_refused_before_it_is_read(tmp_path: Path) -> None:
    spec = tmp_path / "hermetic.toml"
    size = 64 * 1024**2
    with spec.open("wb") as out:
        out.write(FAKE_SPEC.encode())
        for _ in range(size // (1 << 20)):
            out.write(b"#" * (1 << 20) + b"\n")
    tracemalloc.start()
    try:
        with pytest.raises(SpecError, match="larger than"):
            Spec.from_toml(spec)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MAX_SPEC_BYTES, peak
    # negative control: the file is a valid spec; read whole, it costs its size in memory
    tracemalloc.start()
    try:
        data = spec.read_bytes()
        _, unguarded = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert unguarded >= size and len(data) > size
    # nested arrays deep enough to exhaust tomllib's recursion: a spec error, not a crash
    nested = tmp_path / "nested.toml"
    nested.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(SpecError, match="nested too deeply"):
        Spec.from_toml(nested)
    write_spec(tmp_path / "ok", FAKE_SPEC)  # control
    assert Spec.from_toml(tmp_path / "ok" / "hermetic.toml").command == ("make",)


def test_the_default_unpack_cap_refuses_a_bomb_at_its_header(tmp_path: Path) -> None:
    limits = RequestLimits()  # the node's defaults, not a test's smaller cap
    header = tarfile.TarInfo("hermetic.toml")
    header.size = limits.max_unpacked_bytes + 1
    raw = io.BytesIO()
    raw.write(header.tobuf(format=tarfile.GNU_FORMAT))
    raw.write(bytes(1 << 20))  # the start of its data: the rest is never read
    import gzip

    bomb = gzip.compress(raw.getvalue())
    assert len(bomb) * 1000 < header.size  # what it claims: a thousand times its size
    tracemalloc.start()
    try:
        with pytest.raises(RequestError, match="unpacks to more than"):
            unpack_source(bomb, tmp_path / "bomb", limits)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024**2, peak
    assert not any((tmp_path / "bomb").iterdir())
    # negative control: a member within the default cap is not refused at its header (it
    # is read, and this truncated archive then fails as unreadable)
    header.size = 2 << 20
    raw = io.BytesIO(header.tobuf(format=tarfile.GNU_FORMAT) + bytes(1 << 20))
    with pytest.raises(RequestError, match="cannot be read"):
        unpack_source(gzip.compress(raw.getvalue()), tmp_path / "fits", limits)


def test_requests_are_checked_a_few_at_a_time(
    tmp_path: Path, fake_config: SandboxConfig, signer_file: Path
) -> None:
    node = make_node(tmp_path, fake_config, signer_file, checks=1, check_wait_s=0.01)
    request = tar([SPEC_ENTRY])
    node._checks.acquire()  # another request is being checked
    try:
        with pytest.raises(NodeBusy, match="checking other requests"):
            node.check_request(request)
    finally:
        node._checks.release()
    node.check_request(request)  # control: its turn
    node.close()


# --- 6: link chains cost bounded work --------------------------------------------------------


def chain_request(entries: int, hops: int = 38, pad: int = 800) -> bytes:
    links: list[tuple[str, bytes | None, str | None]] = [
        SPEC_ENTRY,
        ("d", None, None),
        ("f", b"x", None),
    ]
    for i in range(hops):
        links.append((f"l{i}", None, "d/../" * pad + (f"l{i + 1}" if i + 1 < hops else "f")))
    links += [(f"e{i}", None, "l0") for i in range(entries)]
    return tar(links)


def test_link_chains_are_resolved_within_a_budget(tmp_path: Path) -> None:
    unpack_source(chain_request(20), tmp_path / "tree")  # legitimate links: accepted
    tree = tmp_path / "tree"
    links = [f"e{i}" for i in range(20)]
    shared = ResolutionBudget()
    assert all(found is not None for found in resolve_all_beneath(tree, links, budget=shared))
    spent_together = ResolutionBudget().left - shared.left
    # negative control: resolved one by one from scratch (as before), the same links cost
    # the whole chain each time, many times over
    alone = ResolutionBudget(10**9)
    for link in links:
        resolve_beneath(tree, link, budget=alone)
    spent_alone = 10**9 - alone.left
    assert spent_alone > 10 * spent_together
    # a chain whose resolution alone exceeds the budget is refused, not computed
    with pytest.raises(TooMuchResolution):
        resolve_beneath(tree, "e0", budget=ResolutionBudget(1000))
    assert spent_together < RESOLUTION_STEPS


# --- 7: the input store serves a file only to the URL that fetched it ---------------------


def test_a_stored_input_is_not_handed_to_another_url_or_tenant(
    tmp_path: Path, fake_config: SandboxConfig, signer_file: Path
) -> None:
    from sandbox.errors import InputError
    from sandbox.fetch import fetch_input
    from sandbox.spec import InputSpec
    from sandbox.store import ContentStore
    from tests.http_servers import DATA, DIGEST, Listener

    mirror = Listener()
    mirror.routes["/dep.bin"] = (200, {}, DATA)
    try:
        policy = InputPolicy.of(allow=["http://"], networks=["127.0.0.1/32"])
        store = ContentStore(tmp_path / "store")
        bob = InputSpec(
            url=f"http://127.0.0.1:{mirror.port}/dep.bin", sha256=DIGEST, dest=PurePosixPath("d")
        )
        path, fetched = fetch_input(bob, store, policy=policy)
        assert fetched and path.read_bytes() == DATA
        # negative control: by digest alone the store would hand bob's file to anyone
        assert store.get(DIGEST) == path
        alice = InputSpec(
            url=f"http://127.0.0.1:{mirror.port}/nothing-here",
            sha256=DIGEST,
            dest=PurePosixPath("d"),
        )
        with pytest.raises(InputError):  # fetched from its own URL: nothing there
            fetch_input(alice, store, policy=policy)
        # control: the same URL again is served from the store, without the network
        seen = len(mirror.seen)
        assert fetch_input(bob, store, policy=policy) == (path, False)
        assert len(mirror.seen) == seen
    finally:
        mirror.close()
    # and each tenant has its own store on a node
    node = make_node(tmp_path / "n", fake_config, signer_file)
    assert tenant_key("token:alice") != tenant_key("token:bob")
    node.close()


# --- 9: co-signing is small and off the event loop ------------------------------------------


def test_cosign_bodies_are_small_and_parsed_off_the_event_loop(
    tmp_path: Path, fake_config: SandboxConfig, signer_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = make_node(tmp_path, fake_config, signer_file)
    http, auth = http_for(node, tmp_path)
    archive = pack_source(write_spec(tmp_path / "src", FAKE_SPEC).parent, tmp_path / "p")
    job_id = http.post("/v1/rebuilds", content=archive, headers=auth["alice"]).json()["id"]
    finish(node, job_id)
    big = b"{" + b" " * (2 * MAX_COSIGN_BYTES) + b"}"
    assert len(big) < ApiSettings(tokens=TokenRegistry({})).max_request_bytes  # was let in
    answer = http.post(f"/v1/rebuilds/{job_id}/cosign", content=big, headers=auth["alice"])
    assert answer.status_code == 413
    on_loop: list[bool] = []
    real = node.cosign

    def running_loop() -> bool:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return False
        return True

    def recording(job: str, payload: bytes) -> tuple[bool, dict[str, Any]]:
        on_loop.append(running_loop())
        return real(job, payload)

    monkeypatch.setattr(node, "cosign", recording)
    answer = http.post(f"/v1/rebuilds/{job_id}/cosign", content=b"{}", headers=auth["alice"])
    assert answer.status_code == 400  # control: a small body reaches the node's check
    assert on_loop == [False]  # called in a worker thread, not on the event loop

    async def on_the_loop() -> bool:
        return running_loop()

    assert asyncio.run(on_the_loop())  # negative control: the probe sees an event loop
    node.close()


# --- 11: a hostile peer cannot abort `hermetic rebuild` ----------------------------------------


def test_a_hostile_peer_cannot_abort_the_rebuild(
    tmp_path: Path, fake_config: SandboxConfig
) -> None:
    import http.server

    served: list[str] = []

    class Peer(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            served.append(self.path)
            body = b"hostile bytes\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    from rebuilder.node.client import Credentials, NodeClient
    from rebuilder.rebuild import MAX_DIFF_FILES, RequestBinding

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Peer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        nested = (("x", "2" * 64), ("x/y", "3" * 64))
        # the binding check marks such an output set invalid before anything is fetched
        report = NodeReport(url=url, name="hostile", verdict=NodeVerdict.BUILT, outputs=nested)
        problem = _binding_problem(report, RequestBinding(source_sha256="a", spec_sha256="b"))
        assert "inside another" in problem
        # and fetching them never raises out of the rebuild: only that node's report says so
        honest = NodeReport(
            url=url,
            name="honest",
            job_id="a" * 32,
            verdict=NodeVerdict.AGREE,
            outputs=(("out", "1" * 64),),
        )
        hostile = NodeReport(
            url=url, name="hostile", job_id="b" * 32, verdict=NodeVerdict.DISAGREE, outputs=nested
        )
        clients = [NodeClient(url, Credentials()), NodeClient(url, Credentials())]
        _reports_for_disagreement(
            [honest, hostile], clients, honest.outputs, tmp_path / "out", fake_config
        )
        assert "cannot be written" in hostile.reason
        # negative control: written as before, the second name raises out of the rebuild
        base = tmp_path / "naive"
        (base / "x").parent.mkdir(parents=True)
        (base / "x").write_bytes(b"a")
        with pytest.raises(OSError):
            (base / "x/y").parent.mkdir(parents=True, exist_ok=True)
        # many outputs: only MAX_DIFF_FILES are fetched for diffoscope
        many = tuple((f"f{i}", "2" * 64) for i in range(3 * MAX_DIFF_FILES))
        hostile = NodeReport(
            url=url, name="many", job_id="b" * 32, verdict=NodeVerdict.DISAGREE, outputs=many
        )
        served.clear()
        _reports_for_disagreement(
            [honest, hostile], clients, honest.outputs, tmp_path / "out2", fake_config
        )
        assert len(served) <= MAX_DIFF_FILES + 1 and "not compared" in hostile.reason
    finally:
        server.shutdown()
        server.server_close()


# --- 12: a worker accepts only job ids -------------------------------------------------------


def test_a_worker_refuses_a_task_whose_job_id_is_a_path(tmp_path: Path) -> None:
    victim = tmp_path / "victimdir"
    victim.mkdir()
    (victim / "precious").write_text("x")
    settings = WorkerSettings(directory=tmp_path / "worker")
    with pytest.raises(RemoteError, match="32 hex"):
        _rebuild_task(settings, "../../victimdir", "", 1, "standard", "0" * 64, 60.0)
    assert (victim / "precious").read_text() == "x"
    # negative control: joined as a path, the id leads out of the worker's directory
    joined = (settings.directory / "jobs" / "../../victimdir").resolve()
    assert joined == victim.resolve()
    for bad in ({"job": 1}, "A" * 32, "0" * 31):
        with pytest.raises(RemoteError):
            _rebuild_task(settings, bad, "", 1, "standard", "0" * 64, 60.0)
    with pytest.raises(RemoteError, match="tenant"):
        _rebuild_task(settings, "0" * 32, "", 1, "standard", "../x", 60.0)


def test_a_worker_takes_its_rules_from_its_own_settings(
    tmp_path: Path, fake_config: SandboxConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task names no input policy or limits: a broker writer cannot loosen them."""
    for name, value in {
        "HERMETIC_BACKEND": "fake",
        "HERMETIC_IMAGES_DIR": str(fake_config.images_dir),
        "HERMETIC_ALLOW_ROOT": "1",
    }.items():
        monkeypatch.setenv(name, value)
    spec = FAKE_SPEC + f'\n[[inputs]]\nurl = "file:///etc/hostname"\nsha256 = "{"0" * 64}"\n'
    spec += 'dest = "d"\n'
    archive = pack_source(write_spec(tmp_path / "src", spec).parent, tmp_path / "p")
    args = ("0" * 32, base64.b64encode(archive).decode(), 1, "standard", "0" * 64, 600.0)
    answer = _rebuild_task(WorkerSettings(directory=tmp_path / "w"), *args)
    assert answer["outcome"] == "build-failed" and "(scheme)" in answer["reason"]
    with pytest.raises(TypeError):  # a task with a policy of its own is no task
        _rebuild_task(WorkerSettings(directory=tmp_path / "w"), *args, {"allow": ["file://"]})  # type: ignore[call-arg]
    # control: the worker's own ceilings apply as configured
    low = WorkerSettings(
        directory=tmp_path / "w2",
        limits=RequestLimits(ceilings=Limits(timeout_s=60)),
    )
    fine = pack_source(write_spec(tmp_path / "fine", FAKE_SPEC).parent, tmp_path / "q")
    args = ("1" * 32, base64.b64encode(fine).decode(), 1, "standard", "0" * 64, 600.0)
    assert "limits.timeout" in _rebuild_task(low, *args)["reason"]
    assert _rebuild_task(WorkerSettings(directory=tmp_path / "w3"), *args)["outcome"] == "built"


# --- 13 and the suspicions: labels, tenants, subjects ---------------------------------------


def test_the_executor_label_is_keyed_with_the_node_s_secret(
    tmp_path: Path, fake_config: SandboxConfig, signer_file: Path
) -> None:
    executor = "vm:hermetic-worker-0"
    one = make_node(tmp_path / "one", fake_config, signer_file)
    other = make_node(tmp_path / "other", fake_config, signer_file)
    label = one.executor_label(executor)
    # negative control: the unkeyed label is found back from a guess
    guessed = hashlib.sha256(executor.encode()).hexdigest()[:16]
    assert label != guessed and len(label) == 16
    assert one.executor_label(executor) == label  # stable on one node
    assert other.executor_label(executor) != label
    one.close()
    other.close()
    again = make_node(tmp_path / "one", fake_config, signer_file)
    assert again.executor_label(executor) == label  # its secret survives a restart
    again.close()
    # a job an older node recorded with the host itself is shown as a label, not the host
    jobs = JobStore(tmp_path / "old.sqlite")
    job_id = jobs.submit(spec_sha256="0" * 64, submitted_by="t", deadline_s=60, max_attempts=1)
    assert jobs.claim("w", lease_s=60) is not None
    assert jobs.finish(job_id, "w", outcome=Outcome.BUILT, executor=executor)
    old = jobs.get(job_id)
    assert old is not None and "worker" not in json.dumps(old.to_json())


def test_tokens_and_certificates_are_separate_tenants_and_names_are_unique(
    tmp_path: Path,
) -> None:
    tokens = tmp_path / "tokens.json"
    token = add_token(tokens, "CN=ci,O=Acme", ["read"])
    with pytest.raises(AuthConfigError, match="exists"):
        add_token(tokens, "CN=ci,O=Acme", ["read", "submit"])
    document = json.loads(tokens.read_text())
    document["tokens"].append(dict(document["tokens"][0], sha256="1" * 64))
    tokens.write_text(json.dumps(document))
    with pytest.raises(AuthConfigError, match="given twice"):
        TokenRegistry.load(tokens)
    document["tokens"].pop()
    tokens.write_text(json.dumps(document))
    by_token = TokenRegistry.load(tokens).principal(token)
    scopes = tmp_path / "clients.toml"
    scopes.write_text('[[client]]\nsubject = "CN=ci,O=Acme"\nscopes = ["read"]\n')
    by_cert = ClientScopes.load(scopes).principal("CN=ci,O=Acme")
    assert by_token is not None and by_cert is not None
    # negative control: the two share a name; they are still two tenants
    assert by_token.name == by_cert.name and by_token.tenant != by_cert.tenant


def test_a_subject_with_non_ascii_characters_matches_as_openssl_prints_it(
    tmp_path: Path,
) -> None:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme"),
            x509.NameAttribute(NameOID.COMMON_NAME, "réviseur"),
        ]
    ).rfc4514_string()  # what the node reads from a client's certificate
    printed = r"CN=r\C3\A9viseur,O=Acme"  # openssl x509 -noout -subject -nameopt RFC2253
    assert printed != subject  # negative control: compared as text they never match
    scopes = tmp_path / "clients.toml"
    scopes.write_text(f"[[client]]\nsubject = '{printed}'\nscopes = [\"read\"]\n")
    found = ClientScopes.load(scopes).principal(subject)
    assert found is not None and found.scopes == {"read"}
    assert ClientScopes.load(scopes).principal("CN=someone,O=Acme") is None  # control


# --- 8: connections: the descriptor limit -------------------------------------------------


def test_the_node_raises_its_descriptor_limit_to_the_hard_limit() -> None:
    import subprocess

    probe = (
        "import resource\n"
        "from rebuilder.node.serve import raise_descriptor_limit\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "before = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "print(before[0], before[1], raise_descriptor_limit())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    before, hard, after = (int(value) for value in done.stdout.split())
    assert before == 256 < hard  # negative control: the soft limit was below the hard one
    assert after == hard


def test_a_stopped_node_stops_its_builds_and_gives_their_jobs_back(
    tmp_path: Path, fake_config: SandboxConfig, signer_file: Path
) -> None:
    from sandbox.fake import FakeBackend, FakeRun

    started = threading.Event()
    backends: list[FakeBackend] = []

    def long_build(build_dir: Path, plan: object) -> FakeRun:
        started.set()
        return FakeRun(hold_s=3600)

    @contextlib.contextmanager
    def connect(config: SandboxConfig) -> Iterator[FakeBackend]:
        backends.append(FakeBackend(script=long_build))
        yield backends[-1]

    settings = NodeSettings(directory=tmp_path / "node", builder_id="https://t/n", lease_s=5)
    node = Node(settings, load_signer(str(signer_file)), config=fake_config, connect=connect)
    archive = pack_source(write_spec(tmp_path / "src", FAKE_SPEC).parent, tmp_path / "p")
    job = node.submit(archive, "token:alice")
    node.start()
    assert started.wait(60)
    node.stop()
    after = node.job(job.id)
    assert [b for b in backends if b.cancelled], "the build in flight was stopped"
    assert after.state is JobState.QUEUED and after.attempts == 0  # to run again
    assert after.outcome is None
    node.close()
