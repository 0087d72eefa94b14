"""Scale-out for real: a node hands builds to two Celery workers over a real redis-server
that requires a password; a worker that lies about what it built is not signed for."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from rebuilder.attest.keys import generate_keypair, load_public_key, load_signer
from rebuilder.attest.verify import verify_attestation
from rebuilder.node.jobs import JobState, Outcome
from rebuilder.node.node import Node, NodeSettings
from rebuilder.node.remote import CeleryDispatch, celery_app
from rebuilder.node.requests import pack_source
from sandbox.config import SandboxConfig
from sandbox.trace.levels import TraceLevel
from tests.conftest import HERMETIC, write_spec
from tests.nodes import free_port

SPEC = """
[build]
image = "{image}"
command = ["sh", "-c", "sleep 3; echo {word} > out.txt"]
outputs = ["out.txt"]
source_date_epoch = 1700000000
"""


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[str]:
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server; .ci/setup does)")
    port = free_port()
    password = secrets.token_hex(16)
    process = subprocess.Popen(
        [
            server,
            "--requirepass",
            password,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        for _ in range(100):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield f"redis://:{password}@127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


def test_the_broker_refuses_clients_without_its_password(broker: str) -> None:
    with redis.Redis.from_url(broker) as authenticated:
        assert authenticated.ping()  # control: the node's and the workers' URL works
    anonymous = broker.replace(broker.split("@")[0].split("//")[1] + "@", "")
    with redis.Redis.from_url(anonymous) as stranger, pytest.raises(redis.AuthenticationError):
        stranger.ping()


@pytest.fixture
def workers(tmp_path: Path, broker: str, sandbox_config: SandboxConfig) -> Iterator[None]:
    # the password reaches the workers in the environment, not on their command line
    env = {
        **os.environ,
        "HERMETIC_IMAGES_DIR": str(sandbox_config.images_dir),
        "HERMETIC_BROKER": broker,
    }
    started = [
        subprocess.Popen(
            [str(HERMETIC), "node", "worker", "--dir", str(tmp_path / f"w{i}")],
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(2)
    ]
    try:
        yield
    finally:
        for process in started:
            os.killpg(process.pid, signal.SIGTERM)
        for process in started:
            process.wait(30)


def test_two_celery_workers_build_for_one_node(
    tmp_path: Path,
    broker: str,
    workers: None,
    sandbox_config: SandboxConfig,
    minimal_image: str,
) -> None:
    generate_keypair(tmp_path / "key")
    settings = NodeSettings(
        directory=tmp_path / "node", builder_id="https://hermetic.test/scaled", workers=2
    )
    node = Node(
        settings,
        load_signer(str(tmp_path / "key")),
        config=replace(sandbox_config, store_dir=tmp_path / "store", work_dir=tmp_path / "work"),
    )
    node.dispatch = CeleryDispatch(
        celery_app(broker),
        builder_id=settings.builder_id,
        trace=TraceLevel.STANDARD,
        config=node.config,
    )
    jobs = []
    for word in ("one", "two"):
        spec = write_spec(tmp_path / word, SPEC.format(image=minimal_image, word=word))
        jobs.append(node.submit(pack_source(spec.parent, tmp_path / f"pack-{word}"), "tester"))
    node.start()
    try:
        deadline = time.monotonic() + 300
        while any(node.job(j.id).state is not JobState.FINISHED for j in jobs):
            assert time.monotonic() < deadline, [node.job(j.id) for j in jobs]
            time.sleep(0.5)
    finally:
        node.close()
    node = Node(settings, load_signer(str(tmp_path / "key")))  # reopened: results persisted
    done = [node.job(j.id) for j in jobs]
    assert [j.outcome for j in done] == [Outcome.BUILT, Outcome.BUILT], [j.reason for j in done]
    assert len({j.executor for j in done}) == 2, "each worker built one"
    key = load_public_key(tmp_path / "key.pub")
    for job in done:
        attestation = tmp_path / "node" / "jobs" / job.id / "out" / "provenance.intoto.json"
        assert verify_attestation(attestation, [key]).ok
        assert (tmp_path / "node" / "jobs" / job.id / "out" / "artifacts" / "out.txt").is_file()
    node.close()


LYING_WORKER = """
import base64, json, sys
from rebuilder.node import remote

real = remote._rebuild_task


def lying(*args, **kwargs):
    answer = real(*args, **kwargs)
    # a statement for other outputs: the subjects and the listed outputs agree with
    # each other, but not with the files the worker built and returns
    statement = json.loads(base64.b64decode(answer["statement"]))
    for item in statement["subject"]:
        item["digest"]["sha256"] = "ab" * 32
    answer["statement"] = base64.b64encode(json.dumps(statement).encode()).decode()
    answer["outputs"] = [[name, "ab" * 32] for name, _ in answer["outputs"]]
    return answer


remote._rebuild_task = lying
remote.run_worker(sys.argv[1], __import__("pathlib").Path(sys.argv[2]))
"""


def test_a_worker_s_statement_for_other_outputs_is_not_signed(
    tmp_path: Path, broker: str, sandbox_config: SandboxConfig, minimal_image: str
) -> None:
    script = tmp_path / "lying_worker.py"
    script.write_text(LYING_WORKER)
    env = {**os.environ, "HERMETIC_IMAGES_DIR": str(sandbox_config.images_dir)}
    worker = subprocess.Popen(
        [sys.executable, str(script), broker, str(tmp_path / "liar")],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    generate_keypair(tmp_path / "key")
    settings = NodeSettings(
        directory=tmp_path / "node", builder_id="https://hermetic.test/checked", max_attempts=1
    )
    node = Node(
        settings,
        load_signer(str(tmp_path / "key")),
        config=replace(sandbox_config, store_dir=tmp_path / "store", work_dir=tmp_path / "work"),
    )
    node.dispatch = CeleryDispatch(
        celery_app(broker),
        builder_id=settings.builder_id,
        trace=TraceLevel.STANDARD,
        config=node.config,
    )
    spec = write_spec(tmp_path / "src", SPEC.format(image=minimal_image, word="lie"))
    job = node.submit(pack_source(spec.parent, tmp_path / "pack"), "tester")
    node.start()
    try:
        deadline = time.monotonic() + 300
        while node.job(job.id).state is not JobState.FINISHED:
            assert time.monotonic() < deadline, node.job(job.id)
            time.sleep(0.5)
    finally:
        node.close()
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)
    node = Node(settings, load_signer(str(tmp_path / "key")))
    done = node.job(job.id)
    assert done.outcome is Outcome.INFRASTRUCTURE_FAILED, done
    assert "RemoteError" in done.reason
    out = tmp_path / "node" / "jobs" / job.id / "out"
    assert not (out / "provenance.intoto.json").exists()  # nothing signed for it
    assert node.store.by_subject("ab" * 32) == []
    node.close()
