"""Rebuilder nodes without podman: the job queue, request unpacking, tokens and limits,
and the HTTP API on the fake backend."""

from __future__ import annotations

import io
import tarfile
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from rebuilder.attest.keys import generate_keypair, load_public_key, load_signer
from rebuilder.attest.verify import verify_attestation
from rebuilder.node.api import ApiSettings, create_app
from rebuilder.node.auth import AuthConfigError, RateLimiter, TokenRegistry, add_token
from rebuilder.node.jobs import JobState, JobStore, Outcome
from rebuilder.node.node import Node, NodeBusy, NodeSettings
from rebuilder.node.requests import RequestError, pack_source, unpack_source
from rebuilder.node.statements import FAILURE_PREDICATE
from sandbox.config import SandboxConfig
from tests.conftest import write_spec
from tests.unit.rebuilder.conftest import FAKE_SPEC

SPEC = FAKE_SPEC


def store(tmp_path: Path) -> JobStore:
    return JobStore(tmp_path / "q.sqlite")


def submit(jobs: JobStore, *, deadline_s: float = 60, attempts: int = 3) -> str:
    return jobs.submit(
        spec_sha256="0" * 64, submitted_by="t", deadline_s=deadline_s, max_attempts=attempts
    )


def test_a_claimed_job_is_leased_and_finished_once(tmp_path: Path) -> None:
    jobs = store(tmp_path)
    job_id = submit(jobs)
    job = jobs.claim("w1", lease_s=60)
    assert job is not None and job.id == job_id and job.attempts == 1
    assert jobs.claim("w2", lease_s=60) is None  # leased: nobody else gets it
    assert not jobs.finish(job_id, "w2", outcome=Outcome.BUILT)  # not w2's
    assert jobs.finish(
        job_id, "w1", outcome=Outcome.BUILT, digest="sha256:x", subjects=(("a", "1" * 64),)
    )
    assert not jobs.finish(job_id, "w1", outcome=Outcome.BUILT)  # once
    assert jobs.by_subject("1" * 64) == [job_id]


def test_a_lost_worker_s_job_is_reclaimed_after_its_lease(tmp_path: Path) -> None:
    jobs = store(tmp_path)
    job_id = submit(jobs)
    assert jobs.claim("dead", lease_s=0.05) is not None
    time.sleep(0.1)
    again = jobs.claim("alive", lease_s=60)
    assert again is not None and again.id == job_id and again.attempts == 2
    assert not jobs.renew(job_id, "dead", 60)  # the lost worker cannot take it back
    assert jobs.finish(job_id, "alive", outcome=Outcome.BUILT)


def test_attempts_are_capped(tmp_path: Path) -> None:
    jobs = store(tmp_path)
    job_id = submit(jobs, attempts=2)
    for owner in ("a", "b"):
        assert jobs.claim(owner, lease_s=0.01) is not None
        time.sleep(0.03)
    assert jobs.claim("c", lease_s=60) is None
    job = jobs.get(job_id)
    assert job is not None and job.outcome is Outcome.INFRASTRUCTURE_FAILED
    assert "attempts used up" in job.reason


def test_infrastructure_failures_retry_with_backoff_then_stop(tmp_path: Path) -> None:
    jobs = store(tmp_path)
    job_id = submit(jobs, attempts=2)
    assert jobs.claim("w", lease_s=60) is not None
    jobs.retry_later(job_id, "w", backoff_s=0.2, reason="podman died")
    assert jobs.claim("w", lease_s=60) is None  # backing off
    time.sleep(0.25)
    assert jobs.claim("w", lease_s=60) is not None
    jobs.retry_later(job_id, "w", backoff_s=0, reason="podman died again")
    job = jobs.get(job_id)
    assert job is not None and job.state is JobState.FINISHED
    assert job.outcome is Outcome.INFRASTRUCTURE_FAILED and job.reason == "podman died again"


def test_every_job_has_a_deadline(tmp_path: Path) -> None:
    jobs = store(tmp_path)
    job_id = submit(jobs, deadline_s=0.05)
    time.sleep(0.1)
    assert jobs.claim("w", lease_s=60) is None
    job = jobs.get(job_id)
    assert job is not None and job.outcome is Outcome.DEADLINE_EXCEEDED


def test_jobs_survive_a_restart(tmp_path: Path) -> None:
    jobs = store(tmp_path)
    job_id = submit(jobs)
    jobs.close()
    reopened = store(tmp_path)
    job = reopened.claim("w", lease_s=60)
    assert job is not None and job.id == job_id


def tar(members: list[tarfile.TarInfo], data: bytes = b"x") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for member in members:
            if member.isfile():
                member.size = len(data)
                archive.addfile(member, io.BytesIO(data))
            else:
                archive.addfile(member)
    return buffer.getvalue()


def member(
    name: str, kind: bytes = tarfile.REGTYPE, link: str = "", mode: int = 0o644
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, mode
    return info


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        ([member("/etc/passwd")], "outside the tree"),
        ([member("../x")], "outside the tree"),
        ([member("a/../../x")], "outside the tree"),
        ([member("l", tarfile.SYMTYPE, "../../etc")], "symlink leaving"),
        ([member("l", tarfile.SYMTYPE, "/etc/passwd")], "symlink leaving"),
        ([member("dev", tarfile.CHRTYPE)], "not a file"),
        ([member("s", mode=0o4755)], "setuid"),
        ([member("other.txt")], "no hermetic.toml"),
        (
            [
                member("x/y", tarfile.SYMTYPE, ".."),
                member("x/y/z", tarfile.SYMTYPE, ".."),
                member("x/y/z/escaped"),
            ],
            "outside the tree",
        ),
        ([member("hermetic.toml"), member("hermetic.toml")], "twice"),
    ],
)
def test_unsafe_requests_are_refused(
    tmp_path: Path, members: list[tarfile.TarInfo], reason: str
) -> None:
    with pytest.raises(RequestError, match=reason):
        unpack_source(tar(members), tmp_path / "dest")
    assert not (tmp_path / "etc").exists()


def test_a_packed_source_unpacks_as_it_was(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "src", SPEC)
    (spec.parent / "tool.sh").write_text("#!/bin/sh\n")
    (spec.parent / "tool.sh").chmod(0o755)
    (spec.parent / "link").symlink_to("tool.sh")
    unpack_source(pack_source(spec.parent, tmp_path / "scratch"), tmp_path / "dest")
    assert (tmp_path / "dest" / "hermetic.toml").read_text() == SPEC
    assert (tmp_path / "dest" / "tool.sh").stat().st_mode & 0o111
    assert (tmp_path / "dest" / "link").readlink() == Path("tool.sh")
    with pytest.raises(RequestError, match="cannot be read"):
        unpack_source(b"not gzip", tmp_path / "dest2")


def test_tokens_are_stored_hashed_with_scopes(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    token = add_token(path, "ci", ["submit", "read"])
    assert token not in path.read_text() and path.stat().st_mode & 0o777 == 0o600
    principal = TokenRegistry.load(path).principal(token)
    assert principal is not None and principal.scopes == {"submit", "read"}
    assert TokenRegistry.load(path).principal(token + "x") is None
    with pytest.raises(AuthConfigError, match="scopes must be among"):
        add_token(path, "x", ["admin"])


def test_the_rate_limit_refills() -> None:
    limiter = RateLimiter(per_minute=120)  # two a second, bursts of 120
    assert all(limiter.allow("a") for _ in range(120))
    assert not limiter.allow("a")
    assert limiter.allow("b")  # per client
    time.sleep(0.6)
    assert limiter.allow("a")


@pytest.fixture
def node(tmp_path: Path, fake_config: SandboxConfig) -> Node:
    generate_keypair(tmp_path / "key")
    settings = NodeSettings(
        directory=tmp_path / "node", builder_id="https://t/node", max_active_jobs=2, lease_s=5
    )
    return Node(settings, load_signer(str(tmp_path / "key")), config=fake_config)


def client_for(
    node: Node, tmp_path: Path, scopes: list[str], **options: int
) -> tuple[TestClient, dict[str, str]]:
    token = add_token(tmp_path / "tokens.json", "tester", scopes)
    app = create_app(
        node, ApiSettings(tokens=TokenRegistry.load(tmp_path / "tokens.json"), **options)
    )
    return TestClient(app), {"Authorization": f"Bearer {token}"}


def run_until_finished(node: Node, http: TestClient, auth: dict[str, str], job_id: str) -> None:
    """Let the node's workers run until the job has finished."""
    node.start()
    try:
        while http.get(f"/v1/rebuilds/{job_id}", headers=auth).json()["state"] != "finished":
            time.sleep(0.05)
    finally:
        node.stop()


def test_the_api_runs_a_rebuild_and_signs_its_result(tmp_path: Path, node: Node) -> None:
    http, auth = client_for(node, tmp_path, ["submit", "read"])
    archive = pack_source(write_spec(tmp_path / "src", SPEC).parent, tmp_path / "p")
    answer = http.post("/v1/rebuilds", content=archive, headers=auth)
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]
    assert http.get(f"/v1/rebuilds/{job_id}/attestation", headers=auth).status_code == 409
    run_until_finished(node, http, auth, job_id)
    status = http.get(f"/v1/rebuilds/{job_id}", headers=auth).json()
    assert status["outcome"] == "built", status
    stored = http.get(f"/v1/rebuilds/{job_id}/attestation", headers=auth).content
    (tmp_path / "a.json").write_bytes(stored)
    assert verify_attestation(tmp_path / "a.json", [load_public_key(tmp_path / "key.pub")]).ok
    identity = http.get("/v1/node", headers=auth).json()
    assert identity["api"] == "hermetic-node/v1"
    assert identity["public_key"]["keyid"] == load_public_key(tmp_path / "key.pub").keyid


def test_a_failing_build_gets_a_signed_failure(tmp_path: Path, node: Node) -> None:
    http, auth = client_for(node, tmp_path, ["submit", "read"])
    broken = SPEC.replace('outputs = ["hermetic.toml"]', 'outputs = ["missing"]')
    archive = pack_source(write_spec(tmp_path / "src", broken).parent, tmp_path / "p")
    job_id = http.post("/v1/rebuilds", content=archive, headers=auth).json()["id"]
    run_until_finished(node, http, auth, job_id)
    assert http.get(f"/v1/rebuilds/{job_id}", headers=auth).json()["outcome"] == "build-failed"
    (tmp_path / "f.json").write_bytes(
        http.get(f"/v1/rebuilds/{job_id}/attestation", headers=auth).content
    )
    checked = verify_attestation(tmp_path / "f.json", [load_public_key(tmp_path / "key.pub")])
    assert checked.ok and checked.statement is not None
    assert checked.statement["predicateType"] == FAILURE_PREDICATE


def test_the_api_refuses_before_doing_anything(tmp_path: Path, node: Node) -> None:
    http, auth = client_for(node, tmp_path, ["read"], max_request_bytes=1000, requests_per_minute=5)
    assert http.post("/v1/rebuilds", content=b"x").status_code == 401
    assert http.post("/v1/rebuilds", content=b"x", headers=auth).status_code == 403
    assert http.post("/v1/rebuilds", content=b"x" * 2000, headers=auth).status_code == 413
    assert node.store.active() == 0
    statuses = [http.get("/v1/node", headers=auth).status_code for _ in range(5)]
    assert statuses[0] == 200 and statuses[-1] == 429  # served, then limited
    assert http.get("/v1/attestations", params={"subject": "md5:x"}).status_code == 401


def test_the_concurrent_job_limit(tmp_path: Path, node: Node) -> None:
    archive = pack_source(write_spec(tmp_path / "src", SPEC).parent, tmp_path / "p")
    node.submit(archive, "t")
    node.submit(archive, "t")
    with pytest.raises(NodeBusy, match="2 jobs are queued or running"):
        node.submit(archive, "t")
    http, auth = client_for(node, tmp_path, ["submit"])
    assert http.post("/v1/rebuilds", content=archive, headers=auth).status_code == 429
    assert http.post("/v1/rebuilds", content=b"junk", headers=auth).status_code == 400


def test_nodes_share_no_directory(tmp_path: Path, node: Node) -> None:
    assert node.config.store_dir == tmp_path / "node" / "store"
    assert node.config.work_dir == tmp_path / "node" / "work"
    assert node.jobs_dir.is_relative_to(tmp_path / "node")


class SteppedClock:
    """A host clock a test moves: the wall clock steps, the monotonic one only runs."""

    def __init__(self) -> None:
        self.wall_s = 2_000_000_000.0
        self.monotonic_s = 1000.0
        self.boot_id = "a" * 32

    def wall(self) -> float:
        return self.wall_s

    def monotonic(self) -> float:
        return self.monotonic_s

    def boot(self) -> str:
        return self.boot_id

    def run(self, seconds: float) -> None:
        self.wall_s += seconds
        self.monotonic_s += seconds


def test_a_wall_clock_step_forward_expires_nothing(tmp_path: Path) -> None:
    clock = SteppedClock()
    jobs = JobStore(tmp_path / "q.sqlite", clock=clock)
    first, second = submit(jobs, deadline_s=60), submit(jobs, deadline_s=60)
    assert jobs.claim("w", lease_s=30) is not None  # the first is leased
    clock.wall_s += 86400  # a day ahead: NTP, an operator, a VM resumed
    waiting = jobs.get(second)
    assert waiting is not None and waiting.remaining_s == 60
    assert jobs.claim("other", lease_s=30) is not None  # the second, still in time
    running = jobs.get(first)
    assert running is not None and running.state is JobState.RUNNING and running.attempts == 1
    assert jobs.renew(first, "w", 30)  # the lease holds: not taken from its worker
    clock.run(61)  # control: the deadline itself still passes on the monotonic clock
    assert jobs.claim("late", lease_s=30) is None
    expired = jobs.get(first)
    assert expired is not None and expired.outcome is Outcome.DEADLINE_EXCEEDED


def test_a_wall_clock_step_back_keeps_no_dead_worker_s_lease(tmp_path: Path) -> None:
    clock = SteppedClock()
    jobs = JobStore(tmp_path / "q.sqlite", clock=clock)
    job_id = submit(jobs, deadline_s=3600)
    assert jobs.claim("dead", lease_s=30) is not None
    clock.wall_s -= 86400  # a day back
    assert jobs.claim("alive", lease_s=30) is None  # the lease still runs
    clock.run(31)  # it lapses after its 30 seconds, not after a day
    again = jobs.claim("alive", lease_s=30)
    assert again is not None and again.id == job_id and again.attempts == 2


def test_after_a_reboot_leases_have_lapsed_and_deadlines_go_on(tmp_path: Path) -> None:
    clock = SteppedClock()
    jobs = JobStore(tmp_path / "q.sqlite", clock=clock)
    job_id = submit(jobs, deadline_s=3600)
    assert jobs.claim("before-reboot", lease_s=600) is not None
    jobs.close()
    clock.boot_id, clock.monotonic_s = "b" * 32, 5.0  # a new boot: its clock starts again
    clock.wall_s += 600  # ten minutes of downtime
    reopened = JobStore(tmp_path / "q.sqlite", clock=clock)
    job = reopened.claim("after-reboot", lease_s=600)  # at once, not after 600 s
    assert job is not None and job.id == job_id and job.attempts == 2
    assert job.remaining_s == 3000  # what was left of the hour, by the wall clock
