"""Rebuilder nodes without podman: the job queue, request unpacking, tokens and limits,
and the HTTP API on the fake backend."""

from __future__ import annotations

import io
import os
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from rebuilder.attest.keys import generate_keypair, load_public_key, load_signer
from rebuilder.attest.verify import verify_attestation
from rebuilder.node.api import ApiSettings, create_app
from rebuilder.node.auth import AuthConfigError, RateLimiter, TokenRegistry, add_token
from rebuilder.node.jobs import JobState, JobStore, Outcome
from rebuilder.node.node import Node, NodeBusy, NodeFull, NodeSettings
from rebuilder.node.requests import RequestError, pack_source, unpack_source
from sandbox.config import SandboxConfig
from sandbox.uris import FAILURE_PREDICATE
from tests.conftest import write_spec
from tests.unit.conftest import FAKE_SPEC

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
            "link or a file",
        ),
        ([member(".git/config"), member("hermetic.toml")], "git directory"),
        ([member("sub/.git", tarfile.DIRTYPE), member("hermetic.toml")], "git directory"),
        ([member("hermetic.toml", tarfile.SYMTYPE, "real.toml"), member("real.toml")], "regular"),
        ([member("hermetic.toml"), member("hermetic.toml")], "twice"),
    ],
)
def test_unsafe_requests_are_refused(
    tmp_path: Path, members: list[tarfile.TarInfo], reason: str
) -> None:
    with pytest.raises(RequestError, match=reason):
        unpack_source(tar(members), tmp_path / "dest")
    assert not (tmp_path / "etc").exists()


def chain_members(target: str) -> list[tarfile.TarInfo]:
    dirs = "/".join(f"x{i}" for i in range(20))
    up = "/".join([".."] * 20)
    return [
        member("hermetic.toml"),
        member(f"{dirs}/dd", tarfile.SYMTYPE, up),
        member(target, tarfile.SYMTYPE, f"{dirs}/dd/{up}/etc/passwd"),
    ]


def test_the_symlink_chain_is_refused_by_resolution(tmp_path: Path) -> None:
    from tests.chains import lexically_inside

    dirs = "/".join(f"x{i}" for i in range(20))
    up = "/".join([".."] * 20)
    # negative control: the chain passes a check by spelling
    assert lexically_inside(f"{dirs}/dd", up)
    assert lexically_inside("a", f"{dirs}/dd/{up}/etc/passwd")
    with pytest.raises(RequestError, match="leads out of the tree"):
        unpack_source(tar(chain_members("a")), tmp_path / "one")
    # as the request's spec file: refused too (never read through the link)
    spec_link = [
        m for m in chain_members("hermetic.toml") if m.name != "hermetic.toml" or m.issym()
    ]
    with pytest.raises(RequestError, match="leads out of the tree"):  # by resolution
        unpack_source(tar(spec_link), tmp_path / "two")
    # positive control: an ordinary inside link is kept
    ok = [member("hermetic.toml"), member("real.txt"), member("ok", tarfile.SYMTYPE, "real.txt")]
    unpack_source(tar(ok), tmp_path / "three")
    assert (tmp_path / "three" / "ok").readlink() == Path("real.txt")


def _bomb(size: int) -> bytes:
    """A tar.gz of one file of zeros: about 1000:1."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("hermetic.toml")
        info.size = size

        class Zeros(io.RawIOBase):
            left = size

            def readable(self) -> bool:
                return True

            def readinto(self, view: memoryview) -> int:  # type: ignore[override]
                n = min(len(view), self.left)
                view[:n] = bytes(n)
                self.left -= n
                return n

        archive.addfile(info, io.BufferedReader(Zeros()))
    return buffer.getvalue()


def test_an_archive_bomb_is_refused_early_with_bounded_memory(tmp_path: Path) -> None:
    import tracemalloc

    from rebuilder.node.requests import RequestLimits

    bomb = _bomb(128 * 1024**2)
    assert len(bomb) * 500 < 128 * 1024**2  # it is a bomb: hundreds to one
    limits = RequestLimits(max_unpacked_bytes=16 * 1024**2)
    tracemalloc.start()
    try:
        with pytest.raises(RequestError, match="unpacks to more than"):
            unpack_source(bomb, tmp_path / "bomb", limits)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024**2, peak
    assert not any((tmp_path / "bomb").iterdir())  # refused at its header: nothing written
    # control: the same archive within a cap that fits it unpacks
    small = _bomb(1024**2)
    unpack_source(small, tmp_path / "fits", RequestLimits(max_unpacked_bytes=2 * 1024**2))
    assert (tmp_path / "fits" / "hermetic.toml").stat().st_size == 1024**2


def test_a_huge_extended_header_is_refused_before_it_is_read(tmp_path: Path) -> None:
    import tracemalloc

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo("hermetic.toml")
        info.pax_headers = {"comment": "x" * (64 * 1024**2)}
        archive.addfile(info, io.BytesIO(b""))
    tracemalloc.start()
    try:  # negative control: tarfile alone reads the whole header into memory
        with tarfile.open(fileobj=io.BytesIO(buffer.getvalue()), mode="r:gz") as plain:
            plain.getmembers()
        _, unguarded = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert unguarded > 64 * 1024**2
    tracemalloc.start()
    try:
        with pytest.raises(RequestError, match="extended header"):
            unpack_source(buffer.getvalue(), tmp_path / "pax")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024**2, peak


def test_the_member_count_is_capped(tmp_path: Path) -> None:
    from rebuilder.node.requests import RequestLimits

    many = tar([member("hermetic.toml")] + [member(f"f{i}") for i in range(50)])
    with pytest.raises(RequestError, match="more than 20 members"):
        unpack_source(many, tmp_path / "many", RequestLimits(max_members=20))
    unpack_source(many, tmp_path / "ok", RequestLimits(max_members=51))  # control


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
    node: Node, tmp_path: Path, scopes: list[str], **options: Any
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
    assert checked.statement.predicate_type == FAILURE_PREDICATE


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


# --- tenants, serving, reasons and disk (issue 11) -----------------------------------------


def tenants(node: Node, tmp_path: Path) -> tuple[TestClient, dict[str, dict[str, str]]]:
    tokens = tmp_path / "tenants.json"
    auth = {
        name: {"Authorization": f"Bearer {add_token(tokens, name, scopes)}"}
        for name, scopes in (
            ("alice", ["submit", "read", "cosign"]),
            ("bob", ["submit", "read", "cosign"]),
            ("auditor", ["read-all"]),
        )
    }
    return TestClient(create_app(node, ApiSettings(tokens=TokenRegistry.load(tokens)))), auth


def test_a_tenant_cannot_read_another_tenants_job(tmp_path: Path, node: Node) -> None:
    http, auth = tenants(node, tmp_path)
    archive = pack_source(write_spec(tmp_path / "src", SPEC).parent, tmp_path / "p")
    job_id = http.post("/v1/rebuilds", content=archive, headers=auth["alice"]).json()["id"]
    run_until_finished(node, http, auth["alice"], job_id)
    base = f"/v1/rebuilds/{job_id}"
    digest = node.job(job_id).digest
    subject = dict(node.own_outputs(job_id) or ())["hermetic.toml"]
    # control: the owner reads everything of its job
    for path in (base, f"{base}/attestation", f"{base}/artifacts/hermetic.toml"):
        assert http.get(path, headers=auth["alice"]).status_code == 200, path
    mine = http.get(
        "/v1/attestations", params={"subject": f"sha256:{subject}"}, headers=auth["alice"]
    )
    assert [j["id"] for j in mine.json()["jobs"]] == [job_id] and digest
    # another tenant: as if the job did not exist
    for path in (base, f"{base}/attestation", f"{base}/artifacts/hermetic.toml"):
        answer = http.get(path, headers=auth["bob"])
        assert answer.status_code == 404 and "alice" not in answer.text, path
    assert http.post(f"{base}/cosign", content=b"{}", headers=auth["bob"]).status_code == 404
    theirs = http.get(
        "/v1/attestations", params={"subject": f"sha256:{subject}"}, headers=auth["bob"]
    )
    assert theirs.json()["jobs"] == []
    # read-all sees every tenant's jobs
    assert http.get(base, headers=auth["auditor"]).json()["submitted_by"] == "token:alice"
    every = http.get(
        "/v1/attestations", params={"subject": f"sha256:{subject}"}, headers=auth["auditor"]
    )
    assert [j["id"] for j in every.json()["jobs"]] == [job_id]


def test_the_api_description_needs_read(tmp_path: Path, node: Node) -> None:
    http, auth = client_for(node, tmp_path, ["read"])
    for path in ("/docs", "/openapi.json", "/redoc"):
        assert http.get(path).status_code in (401, 404), path
    assert http.get("/openapi.json", headers=auth).json()["info"]["title"]
    assert "swagger" in http.get("/docs", headers=auth).text.lower()


def test_artifacts_are_served_without_following_links(tmp_path: Path, node: Node) -> None:
    from tests.chains import make_chain

    http, auth = client_for(node, tmp_path, ["submit", "read"])
    archive = pack_source(write_spec(tmp_path / "src", SPEC).parent, tmp_path / "p")
    job_id = http.post("/v1/rebuilds", content=archive, headers=auth).json()["id"]
    run_until_finished(node, http, auth, job_id)
    artifacts = node.jobs_dir / job_id / "out" / "artifacts"
    escape = make_chain(artifacts)  # as if a link had got past every other defence
    (artifacts / "sub").mkdir()
    (artifacts / "sub" / "f").write_text("inside")
    (artifacts / "via").symlink_to("sub")
    # negative control: the planted link does reach the host file
    assert escape.read_bytes() == Path("/etc/passwd").read_bytes()
    base = f"/v1/rebuilds/{job_id}/artifacts"
    passwd = Path("/etc/passwd").read_bytes()
    for path in ("a/", "via/f", "x0/" + "/".join(f"x{i}" for i in range(1, 20)) + "/dd/etc/passwd"):
        answer = http.get(f"{base}/{path}", headers=auth)
        assert answer.status_code == 404 and passwd not in answer.content, path
    linked = http.get(f"{base}/a", headers=auth)  # the link itself: its text, not its target
    assert linked.status_code == 200 and linked.headers["X-Hermetic-Symlink"] == "1"
    assert linked.content == os.readlink(escape).encode() and passwd not in linked.content
    # control: regular files are served
    assert http.get(f"{base}/sub/f", headers=auth).content == b"inside"
    assert http.get(f"{base}/hermetic.toml", headers=auth).content == SPEC.encode()


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("file:///etc/hostname", "scheme"),
        ("https://169.254.169.254/latest/meta-data/", "address"),
        ("http://127.0.0.1:9/x", "allow-input"),
        ("https://localhost/x", "address"),
    ],
)
def test_a_refused_input_is_a_400_at_submission(
    tmp_path: Path, node: Node, url: str, rule: str
) -> None:
    http, auth = client_for(node, tmp_path, ["submit", "read"])
    spec = SPEC + f'\n[[inputs]]\nurl = "{url}"\nsha256 = "{"0" * 64}"\ndest = "dep"\n'
    archive = pack_source(write_spec(tmp_path / "src", spec).parent, tmp_path / "p")
    answer = http.post("/v1/rebuilds", content=archive, headers=auth)
    assert answer.status_code == 400 and f"({rule})" in answer.json()["detail"], answer.text
    assert node.store.active() == 0
    # control: the same spec with an allowed URL is accepted
    allowed = spec.replace(url, "https://deb.debian.org/debian/x")
    archive = pack_source(write_spec(tmp_path / "ok", allowed).parent, tmp_path / "q")
    assert http.post("/v1/rebuilds", content=archive, headers=auth).status_code == 202


def test_a_spec_error_names_no_path_of_the_node(tmp_path: Path, node: Node) -> None:
    http, auth = client_for(node, tmp_path, ["submit", "read"])
    archive = pack_source(
        write_spec(tmp_path / "src", SPEC + "\nbogus = 1\n").parent, tmp_path / "p"
    )
    job_id = http.post("/v1/rebuilds", content=archive, headers=auth).json()["id"]
    run_until_finished(node, http, auth, job_id)
    status = http.get(f"/v1/rebuilds/{job_id}", headers=auth).json()
    assert status["outcome"] == "build-failed"
    assert status["reason"].startswith("hermetic.toml: build.bogus: unknown key"), status
    assert str(tmp_path) not in status["reason"]
    # negative control: the same error, unscrubbed, names the file where the node put it
    from sandbox.errors import SpecError
    from sandbox.spec import Spec

    with pytest.raises(SpecError) as raw:
        Spec.from_toml(tmp_path / "src" / "hermetic.toml")
    assert str(tmp_path) in str(raw.value)
    failure = http.get(f"/v1/rebuilds/{job_id}/attestation", headers=auth).text
    assert str(tmp_path) not in failure and "hermetic" not in status["executor"]


def test_a_full_disk_starts_no_build_and_uses_no_attempt(
    tmp_path: Path, fake_config: SandboxConfig
) -> None:
    generate_keypair(tmp_path / "key")
    signer = load_signer(str(tmp_path / "key"))
    archive = pack_source(write_spec(tmp_path / "src", SPEC).parent, tmp_path / "p")
    roomy_settings = NodeSettings(directory=tmp_path / "node", builder_id="https://t/n")
    roomy = Node(roomy_settings, signer, config=fake_config)
    job = roomy.submit(archive, "t")  # queued while there was room
    roomy.close()
    full = NodeSettings(directory=tmp_path / "node", builder_id="https://t/n", min_free_bytes=2**62)
    node = Node(full, signer, config=fake_config)
    assert node.claim_next("w") is None
    waiting = node.job(job.id)
    assert waiting.state is JobState.QUEUED and waiting.attempts == 0
    assert "node disk full" in waiting.reason
    with pytest.raises(NodeFull, match="node disk full"):  # and no new request is taken
        node.submit(archive, "t")
    node.close()
    # control: with room, the same job is claimed on its first attempt
    roomy = Node(roomy_settings, signer, config=fake_config)
    claimed = roomy.claim_next("w")
    assert claimed is not None and claimed.id == job.id and claimed.attempts == 1
    roomy.close()


def test_disk_full_during_a_build_gives_the_attempt_back(
    tmp_path: Path, fake_config: SandboxConfig
) -> None:
    import errno
    from collections.abc import Iterator
    from contextlib import contextmanager

    from sandbox.backend import SandboxBackend
    from sandbox.errors import SandboxError

    failure: list[BaseException] = []

    @contextmanager
    def failing(config: SandboxConfig) -> Iterator[SandboxBackend]:
        raise failure[0]
        yield  # pragma: no cover

    generate_keypair(tmp_path / "key")
    settings = NodeSettings(directory=tmp_path / "node", builder_id="https://t/n", backoff_s=0)
    node = Node(settings, load_signer(str(tmp_path / "key")), config=fake_config, connect=failing)
    archive = pack_source(write_spec(tmp_path / "src", SPEC).parent, tmp_path / "p")
    job = node.submit(archive, "t")
    failure.append(OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "w" / "x")))
    claimed = node.claim_next("w")
    assert claimed is not None
    node.run_job(claimed, "w")
    after = node.job(job.id)
    assert after.state is JobState.QUEUED and after.attempts == 0
    assert "node disk full" in after.reason and str(tmp_path) not in after.reason
    # control: any other infrastructure failure uses the attempt, and tells no host detail
    failure[0] = SandboxError(f"podman failed under {tmp_path}/w with HOME=/home/secret")
    claimed = node.claim_next("w")
    assert claimed is not None
    node.run_job(claimed, "w")
    after = node.job(job.id)
    assert after.attempts == 1 and "infrastructure failure" in after.reason
    assert str(tmp_path) not in after.reason and "secret" not in after.reason
    node.close()


def test_the_rebuild_client_reads_a_node_s_answers_up_to_a_cap() -> None:
    import http.server
    import threading

    from rebuilder.node.client import MAX_ATTESTATION_BYTES, Credentials, NodeClient, NodeError

    sizes = {
        "/v1/rebuilds/big/attestation": MAX_ATTESTATION_BYTES + 1,
        "/v1/rebuilds/ok/attestation": 10,
    }

    class Node(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            size = sizes.get(self.path, 0)
            self.send_response(200)
            if "ok" in self.path:
                self.send_header("Content-Length", str(size))
            self.end_headers()  # "big": no length, the body just keeps coming
            for _ in range(0, size, 1 << 20):
                self.wfile.write(b"x" * min(1 << 20, size))

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Node)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = NodeClient(f"http://127.0.0.1:{server.server_address[1]}", Credentials(token="t"))
    try:
        with pytest.raises(NodeError, match="more than"):
            client.attestation("big")
        assert client.attestation("ok") == b"x" * 10  # control
    finally:
        client.close()
        server.shutdown()
        server.server_close()
