"""Scale-out for real: a node hands builds to two Celery workers over a real redis-server."""

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

from rebuilder.attest.keys import generate_keypair, load_public_key, load_signer
from rebuilder.attest.verify import verify_attestation
from rebuilder.node.jobs import JobState, Outcome
from rebuilder.node.node import Node, NodeSettings
from rebuilder.node.remote import CeleryDispatch, celery_app
from rebuilder.node.requests import pack_source
from sandbox.config import SandboxConfig
from sandbox.trace.levels import TraceLevel
from tests.conftest import HERMETIC, write_spec
from tests.integration.nodes import free_port

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
    process = subprocess.Popen(
        [
            server,
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
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def workers(tmp_path: Path, broker: str, sandbox_config: SandboxConfig) -> Iterator[None]:
    env = {**os.environ, "HERMETIC_IMAGES_DIR": str(sandbox_config.images_dir)}
    started = [
        subprocess.Popen(
            [str(HERMETIC), "node", "worker", "--broker", broker, "--dir", str(tmp_path / f"w{i}")],
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
        celery_app(broker), builder_id=settings.builder_id, trace=TraceLevel.STANDARD
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
