"""A rebuilder node's faults for real (``hermetic node serve`` processes on loopback, real
podman, a real redis-server): killed with jobs in flight, a broker restarted under its
workers, a clock step of its host, and a small soak with a chaos loop. No job is lost, none
finishes twice, every one is signed for its own output."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from bench.soak import NodeProcess, expected_outputs, judge, soak, trivial_archives
from rebuilder.attest.keys import generate_keypair, load_signer
from rebuilder.node.jobs import JobState, Outcome
from rebuilder.node.node import Node, NodeSettings
from rebuilder.node.remote import CeleryDispatch, celery_app
from sandbox.config import SandboxConfig
from sandbox.podman_api import DEFAULT_IDLE_S, shared_service
from sandbox.trace.levels import TraceLevel
from tests.conftest import HERMETIC, wait_until
from tests.integration.conftest import hermetic_env
from tests.integration.test_faults import hermetic_containers
from tests.nodes import free_port


def states(node: NodeProcess, ids: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {"queued": [], "running": [], "finished": []}
    for job_id in ids:
        found[node.status(job_id)["state"]].append(job_id)
    return found


def collect(node: NodeProcess, ids: list[str], served: dict[str, bytes]) -> int:
    """Record the attestation of each job seen finished for the first time; how many are."""
    for job_id in states(node, ids)["finished"]:
        served.setdefault(job_id, node.attestation(job_id))
    return len(served)


def test_a_node_killed_twice_with_20_jobs_finishes_each_once(
    tmp_path: Path, sandbox_config: SandboxConfig, minimal_image: str
) -> None:
    node = NodeProcess(tmp_path / "node", hermetic_env(sandbox_config), max_attempts=3)
    archives = trivial_archives(tmp_path / "req", minimal_image, 20, "sleep 1; echo {n} > out.txt")
    served: dict[str, bytes] = {}
    started = time.monotonic()
    node.start()
    try:
        ids = [node.submit(archive) for archive in archives]
        for kill in (1, 2):
            # some finished, some running, the rest queued: then the power goes
            def busy(enough: int = 4 * kill) -> object:
                return collect(node, ids, served) >= enough and states(node, ids)["running"]

            wait_until(busy, f"jobs running before kill {kill}")
            running = states(node, ids)["running"]
            node.kill()
            assert running, "a kill with no job in flight proves nothing"
            node.start()
        wait_until(lambda: collect(node, ids, served) == len(ids), "all 20 jobs")
        report = judge(node, ids, expected_outputs(ids), served, time.monotonic() - started)
    finally:
        node.stop()
    assert (report.lost, report.twice, report.unsigned) == ([], [], [])
    assert max(report.attempts.values()) <= 3
    assert sum(report.attempts.values()) > len(ids), "the builds cut short were counted"
    assert hermetic_containers() == []  # the killed nodes' containers were reaped


def test_a_small_soak_under_chaos_loses_nothing(
    tmp_path: Path, sandbox_config: SandboxConfig, minimal_image: str
) -> None:
    # CI's variant of bench/soak.py (200 jobs, a kill every 20-40s): 24 jobs, a kill every
    # 6-10s. Each job sleeps 1s, so the run outlasts the first kill on any machine, however
    # fast it builds; a kill interval well above a job's length lets every job finish.
    report = soak(
        tmp_path,
        env=hermetic_env(sandbox_config),
        image=minimal_image,
        jobs=24,
        chaos=(6, 10),
        seed=7,
        script="sleep 1; echo {n} > out.txt",
        timeout_s=900,
    )
    assert report.restarts >= 1, "the chaos loop never struck"
    assert (report.lost, report.twice, report.unsigned) == ([], [], [])
    assert hermetic_containers() == []


def test_a_wall_clock_step_of_the_node_host_moves_no_lease_or_deadline(
    tmp_path: Path, sandbox_config: SandboxConfig, minimal_image: str
) -> None:
    shared_service().ensure(podman_bin="podman", idle_s=DEFAULT_IDLE_S)  # not under faketime
    clock = tmp_path / "faketime"
    clock.write_text("+0\n")
    env = hermetic_env(
        sandbox_config,
        # libfaketime steps the node's wall clock (read from the file at every call) and
        # leaves its monotonic clock alone, as an NTP step does.
        LD_PRELOAD=str(sandbox_config.faketime),
        FAKETIME_TIMESTAMP_FILE=str(clock),
        FAKETIME_NO_CACHE="1",
        FAKETIME_DONT_FAKE_MONOTONIC="1",
        HERMETIC_TRACE="off",  # the tracer's sleeps trip libfaketime 0.9.10 in this mode
    )
    node = NodeProcess(tmp_path / "node", env, lease_s=3)
    node.deadline_s = 600
    archives = trivial_archives(tmp_path / "req", minimal_image, 4, "sleep 3; echo {n} > out.txt")
    node.start()
    try:
        first = [node.submit(archive) for archive in archives[:2]]
        wait_until(lambda: states(node, first)["running"], "a running job")
        clock.write_text("+7200\n")  # two hours ahead: every wall-clock deadline has passed
        wait_until(lambda: not set(first) - set(states(node, first)["finished"]), "the jobs")
        assert [node.status(j)["outcome"] for j in first] == ["built", "built"]
        # the step did happen: a job submitted now is dated two hours ahead
        late = node.submit(archives[2])
        assert node.status(late)["created"] - time.time() > 3600
        wait_until(lambda: node.status(late)["state"] == "finished", "the late job")
        # A node killed mid-build comes back with its clock two hours behind: the lost
        # job's 3 s lease lapses on the monotonic clock, not two hours later.
        lost = node.submit(archives[3])
        wait_until(lambda: node.status(lost)["state"] == "running", "the job to run")
        node.kill()
        clock.write_text("-7200\n")
        node.start()
        wait_until(lambda: node.status(lost)["state"] == "finished", "the lost job", 300)
        status, late_status = node.status(lost), node.status(late)
    finally:
        node.stop()
    assert status["outcome"] == "built" and status["attempts"] == 2
    assert late_status["outcome"] == "built"


# --- a broker restarted under its workers -------------------------------------------------


def _redis(port: int, directory: Path) -> subprocess.Popen[bytes]:
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server; .ci/setup does)")
    process = subprocess.Popen(
        # durable, as a broker in production is: nothing queued is lost by a restart
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--dir",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return process
        assert time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.05)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[tuple[str, list[subprocess.Popen[bytes]]]]:
    port = free_port()
    (tmp_path / "redis").mkdir()
    servers = [_redis(port, tmp_path / "redis")]
    try:
        yield f"redis://127.0.0.1:{port}/0", servers
    finally:
        for server in servers:
            if server.poll() is None:
                server.terminate()
                server.wait(30)


def test_redis_restarted_while_workers_hold_jobs_finishes_every_job_once(
    tmp_path: Path,
    broker: tuple[str, list[subprocess.Popen[bytes]]],
    sandbox_config: SandboxConfig,
    minimal_image: str,
) -> None:
    url, servers = broker
    env = {**hermetic_env(sandbox_config)}
    workers = [
        subprocess.Popen(
            [str(HERMETIC), "node", "worker", "--broker", url, "--dir", str(tmp_path / f"w{i}")],
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / f"worker-{i}.log").open("wb"),
        )
        for i in range(2)
    ]
    generate_keypair(tmp_path / "key")
    settings = NodeSettings(
        directory=tmp_path / "node",
        builder_id="https://hermetic.test/celery",
        workers=2,
        lease_s=5,
        max_attempts=3,
        backoff_s=1,
    )
    node = Node(
        settings,
        load_signer(str(tmp_path / "key")),
        config=replace(sandbox_config, store_dir=tmp_path / "store", work_dir=tmp_path / "work"),
    )
    node.dispatch = CeleryDispatch(
        celery_app(url),
        builder_id=settings.builder_id,
        trace=TraceLevel.STANDARD,
        config=node.config,
    )
    archives = trivial_archives(tmp_path / "req", minimal_image, 4, "sleep 4; echo {n} > out.txt")
    ids = [node.submit(archive, "tester").id for archive in archives]
    node.start()
    try:
        # A worker makes the job's directory when it starts the task: then it holds it.
        wait_until(
            lambda: sum(len(list((tmp_path / f"w{i}" / "jobs").glob("*"))) for i in range(2)) >= 2,
            "two jobs held by the workers",
        )
        servers[0].send_signal(signal.SIGTERM)  # a restart: redis writes its log and exits
        servers[0].wait(30)
        servers.append(_redis(int(url.rsplit(":", 1)[1].split("/")[0]), tmp_path / "redis"))
        wait_until(
            lambda: all(node.job(j).state is JobState.FINISHED for j in ids), "every job", 600
        )
    finally:
        node.close()
        for worker in workers:
            os.killpg(worker.pid, signal.SIGTERM)
        for worker in workers:
            worker.wait(60)
    # the restart did hit the workers while they built
    logs = [(tmp_path / f"worker-{i}.log").read_text() for i in range(2)]
    assert all("Connection to broker lost" in text for text in logs), logs
    reopened = Node(settings, load_signer(str(tmp_path / "key")))
    try:
        done = [reopened.job(j) for j in ids]
        assert [j.outcome for j in done] == [Outcome.BUILT] * 4, [j.reason for j in done]
        expected = expected_outputs(ids)
        for job in done:
            # finished once: one result recorded, for its own output
            assert reopened.store.by_subject(expected[job.id]) == [job.id]
            rows = reopened.store._db.execute(
                "SELECT COUNT(*) FROM subjects WHERE job_id = ?", (job.id,)
            ).fetchone()
            assert rows[0] == 1
    finally:
        reopened.close()
