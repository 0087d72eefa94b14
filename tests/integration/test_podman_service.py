"""The podman API service for real: the user's own socket when one answers, else hermetic's
shared per-user service, started on demand, detached, reused by every command and safe when
several commands start at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from sandbox.config import SandboxConfig
from sandbox.podman_api import (
    DEFAULT_IDLE_S,
    PodmanService,
    PodmanSession,
    SharedService,
    ping,
    shared_service,
)
from tests.conftest import HERMETIC, write_spec
from tests.integration.conftest import hermetic_env

NO_IMAGE = "localhost/no-such-image@sha256:" + "0" * 64


def test_the_shared_service_serves_is_reused_and_survives_its_starter(tmp_path: Path) -> None:
    service = SharedService(directory=tmp_path / "svc")
    try:
        assert service.ensure(podman_bin="podman", idle_s=60) is True
        session = PodmanSession(service.url, create_lock=service.create_lock)
        assert session.image_exists(NO_IMAGE) is False  # a real podman answers
        session.close()
        assert service.ensure(podman_bin="podman", idle_s=60) is False
        pid = service.pid()
        assert pid is not None and psutil.Process(pid).ppid() != os.getpid()  # detached
    finally:
        service.stop()
    assert not ping(service.url)


def test_a_dead_service_is_replaced_by_the_next_command(tmp_path: Path) -> None:
    service = SharedService(directory=tmp_path / "svc")
    try:
        service.ensure(podman_bin="podman", idle_s=60)
        first = service.pid()
        assert first is not None
        os.killpg(os.getpgid(first), signal.SIGKILL)
        psutil.wait_procs([psutil.Process(first)], timeout=30)
        assert not ping(service.url)
        assert service.ensure(podman_bin="podman", idle_s=60) is True
        session = PodmanSession(service.url)
        assert session.image_exists(NO_IMAGE) is False
        session.close()
    finally:
        service.stop()


def test_a_running_user_service_is_used_and_left_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONTAINER_HOST", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    socket = tmp_path / "podman" / "podman.sock"
    socket.parent.mkdir()
    users = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{socket}"],
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not ping(f"unix://{socket}"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        service = PodmanService(url=None)
        with service as session:
            assert not service.started and session.url == f"unix://{socket}"
        assert users.poll() is None, "the user's own service must keep running"
        assert not (tmp_path / "hermetic" / "podman.sock").exists()  # none of ours started
    finally:
        users.terminate()
        users.wait()


def test_two_builds_at_once_as_the_same_user_start_one_service_and_both_build(
    tmp_path: Path, sandbox_config: SandboxConfig, minimal_image: str
) -> None:
    shared = shared_service()
    shared.stop()  # so that both commands find none and race to start it
    spec = """
[build]
image = "hermetic-minimal"
command = ["sh", "-c", "echo {word} > out.txt"]
outputs = ["out.txt"]
source_date_epoch = 1
"""
    env = hermetic_env(sandbox_config)
    commands = []
    for word in ("one", "two"):
        directory = write_spec(tmp_path / word, spec.format(word=word)).parent
        argv = [str(HERMETIC), "build", str(directory), "--out", str(tmp_path / f"out-{word}")]
        commands.append(subprocess.Popen([*argv, "--json"], env=env, stdout=subprocess.PIPE))
    try:
        results = [process.communicate(timeout=300)[0] for process in commands]
    finally:
        shared.ensure(podman_bin="podman", idle_s=DEFAULT_IDLE_S)
    assert [process.returncode for process in commands] == [0, 0]
    assert [json.loads(out)["status"] for out in results] == ["built", "built"]
    for word in ("one", "two"):
        assert (tmp_path / f"out-{word}" / "artifacts" / "out.txt").read_text() == f"{word}\n"
    services = [
        p
        for p in psutil.process_iter(["cmdline", "ppid"])
        if shared.url in (p.info["cmdline"] or []) and p.info["ppid"] == 1
    ]
    assert [p.pid for p in services] == [shared.pid()]  # one service, reused by both


def test_the_service_outlives_the_directory_it_was_started_from(
    tmp_path: Path, sandbox_config: SandboxConfig, minimal_image: str
) -> None:
    shared = shared_service()
    shared.stop()  # the first command below starts it, from a directory about to go
    spec = write_spec(
        tmp_path / "src",
        '[build]\nimage = "hermetic-minimal"\ncommand = ["sh", "-c", "echo hi > out.txt"]\n'
        'outputs = ["out.txt"]\nsource_date_epoch = 1\n',
    )
    env = hermetic_env(sandbox_config)
    started_in = tmp_path / "gone"
    started_in.mkdir()
    try:
        for out, cwd in (("first", started_in), ("second", tmp_path)):
            done = subprocess.run(
                [str(HERMETIC), "build", str(spec.parent), "--out", str(tmp_path / out)],
                env=env,
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert done.returncode == 0, done.stderr  # conmon once failed: no working dir
            if cwd == started_in:
                started_in.rmdir()
    finally:
        shared.ensure(podman_bin="podman", idle_s=DEFAULT_IDLE_S)
