"""Scale-out for real: a node hands builds to two Celery workers over a real redis-server
that requires a password; a worker that lies about what it built is not signed for."""

from __future__ import annotations

import base64
import json
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
from sandbox.digests import sha256_bytes
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
QUICK_SPEC = """
[build]
image = "{image}"
command = ["sh", "-c", "echo out > out.txt"]
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


EVIL_WORKER = """
import base64, json, os, sys
from pathlib import Path
from rebuilder.node import remote

real = remote._rebuild_task
directory, key = Path(sys.argv[2]), sys.argv[3]


def encoded(data):
    return base64.b64encode(data).decode()


def evil(settings, *args):
    mode = (directory / "mode").read_text().strip()
    if mode == "plant":  # the review's links: "x" -> "..", then one through it
        links = {"x": "..", "x/failure.intoto.json": key}
        return {"outcome": "built", "reason": "", "files": {}, "modes": {}, "links": links,
                "executor": "evil"}
    answer = real(settings, *args)
    files = answer["files"]
    if mode == "outputs":  # other bytes for the output; result.json states the real ones
        files["artifacts/out.txt"] = encoded(b"backdoored\\n")
    elif mode == "statement":  # a statement of its own, with a git claim a gate would take
        commit = "c0ffee" * 6 + "c0ff"
        answer["statement"] = encoded(json.dumps({"predicate": {"buildDefinition": {
            "resolvedDependencies": [{"name": "source", "digest": {"gitCommit": commit}}]}}}
        ).encode())
    elif mode == "environment":  # result.json claims another environment
        result = json.loads(base64.b64decode(files["result.json"]))
        result["environment"]["LD_PRELOAD"] = "/evil.so"
        files["result.json"] = encoded(json.dumps(result).encode())
    elif mode == "huge":  # an answer larger than the node reads
        files["padding"] = encoded(os.urandom(3 << 20))
        answer["modes"]["padding"] = 0o644
    return answer


remote._rebuild_task = evil
remote.run_worker(sys.argv[1], remote.WorkerSettings(directory=directory))
"""


def test_a_worker_s_lies_and_planted_links_are_not_signed(
    tmp_path: Path, broker: str, sandbox_config: SandboxConfig, minimal_image: str
) -> None:
    key = tmp_path / "key"
    generate_keypair(key)
    script = tmp_path / "evil_worker.py"
    script.write_text(EVIL_WORKER)
    evil_dir = tmp_path / "evil"
    evil_dir.mkdir()
    env = {**os.environ, "HERMETIC_IMAGES_DIR": str(sandbox_config.images_dir)}
    worker = subprocess.Popen(
        [sys.executable, str(script), broker, str(evil_dir), str(key)],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    settings = NodeSettings(
        directory=tmp_path / "node",
        builder_id="https://hermetic.test/checked",
        max_attempts=1,
        max_client_jobs=10,
    )
    node = Node(
        settings,
        load_signer(str(key)),
        config=replace(sandbox_config, store_dir=tmp_path / "store", work_dir=tmp_path / "work"),
    )
    node.dispatch = CeleryDispatch(
        celery_app(broker),
        builder_id=settings.builder_id,
        trace=TraceLevel.STANDARD,
        config=node.config,
        max_answer_bytes=2 * 1024**2,
    )
    spec = write_spec(tmp_path / "src", QUICK_SPEC.format(image=minimal_image))
    archive = pack_source(spec.parent, tmp_path / "pack")
    outcomes = {}
    node.start()
    try:
        for mode in ("plant", "outputs", "environment", "huge", "statement", "honest"):
            (evil_dir / "mode").write_text(mode)
            job = node.submit(archive, "token:tester")
            deadline = time.monotonic() + 300
            while node.job(job.id).state is not JobState.FINISHED:
                assert time.monotonic() < deadline, node.job(job.id)
                time.sleep(0.2)
            outcomes[mode] = node.job(job.id)
    finally:
        node.close()
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)
    node = Node(settings, load_signer(str(key)))
    public = load_public_key(tmp_path / "key.pub")
    for mode in ("plant", "outputs", "environment", "huge"):
        done = outcomes[mode]
        assert done.outcome is Outcome.INFRASTRUCTURE_FAILED, (mode, done)
        directory = tmp_path / "node" / "jobs" / done.id
        assert not (directory / "out" / "provenance.intoto.json").exists(), mode
        served = node.attestation(done.id)  # a signed failure, never the node's key
        assert served is not None and key.read_bytes() not in served, mode
        assert not any(p.is_symlink() for p in directory.iterdir()), mode
    assert node.store.by_subject(sha256_bytes(b"backdoored\n")) == []
    # a worker's own statement is not what the node signs: built (the build was honest),
    # and the signed source is the tree alone, with no git claim for a gate to admit
    for mode in ("statement", "honest"):  # positive control: honest results are signed
        done = outcomes[mode]
        assert done.outcome is Outcome.BUILT, (mode, done)
        provenance = tmp_path / "node" / "jobs" / done.id / "out" / "provenance.intoto.json"
        assert verify_attestation(provenance, [public]).ok
        envelope = json.loads(provenance.read_text())
        statement = json.loads(base64.b64decode(envelope["payload"]))
        assert "gitCommit" not in json.dumps(statement), mode
        assert statement["predicate"]["runDetails"]["builder"]["id"] == settings.builder_id
    node.close()
