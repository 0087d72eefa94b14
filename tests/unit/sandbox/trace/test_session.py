"""The tracing helpers are started before the container and waited for only when needed:
the supervisor says when it listens; the fanotify helper waits for the container's pid.
Real processes, no container: what does not need a user namespace."""

from __future__ import annotations

import json
import select
import socket as socketlib
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.errors import SandboxError
from sandbox.trace.fanotify import FanotifyError, PendingGroup
from sandbox.trace.levels import TraceLevel
from sandbox.trace.session import TraceFiles, TraceSession
from sandbox.trace.supervisor import read_record

PODMAN_DEFAULT = Path("/usr/share/containers/seccomp.json")


def session_at(tmp_path: Path, socket: Path) -> TraceSession:
    return TraceSession(
        level=TraceLevel.STANDARD,
        token="build-ended-test",
        files=TraceFiles(
            profile=tmp_path / "seccomp.json",
            socket=socket,
            events=tmp_path / "trace-events.json",
            gate=tmp_path / "gate",
        ),
        base_profile=json.loads(PODMAN_DEFAULT.read_text()),
        build_dir="/build",
        initial_paths=set(),
    )


def start_supervisor(tmp_path: Path) -> subprocess.Popen[bytes]:
    """A supervisor on a socket in ``tmp_path``, once it has said it listens."""
    argv = [sys.executable, "-m", "sandbox.trace.supervisor", "--socket", str(tmp_path / "s.sock")]
    process = subprocess.Popen(
        [*argv, "--out", str(tmp_path / "events.json")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    assert select.select([process.stdout], [], [], 60)[0], "no ready line within a minute"
    assert process.stdout.readline() == b"ready\n"
    return process


def test_the_supervisor_says_when_it_listens_and_leaves_a_record(tmp_path: Path) -> None:
    process = start_supervisor(tmp_path)
    process.terminate()  # no container came: it writes what it has and leaves
    process.wait(timeout=30)
    assert process.returncode == 0
    header, recorded = read_record(tmp_path / "events.json")
    assert list(recorded) == []
    assert header["trailer"]["notifications"] == 0


def test_the_ready_supervisor_accepts_and_refuses_a_peer_without_a_notification_fd(
    tmp_path: Path,
) -> None:
    process = start_supervisor(tmp_path)
    with socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM) as stranger:
        stranger.connect(str(tmp_path / "s.sock"))  # it listened when it said so
    _, stderr = process.communicate(timeout=30)
    assert process.returncode != 0
    assert b"sent no seccomp notification fd" in stderr
    header, recorded = read_record(tmp_path / "events.json")  # left even so
    assert list(recorded) == [] and header["container_pid"] is None


def test_a_session_waits_for_its_supervisor_before_the_container_starts(tmp_path: Path) -> None:
    session = session_at(tmp_path, tmp_path / "s.sock")
    try:
        session.before_create()
        assert (tmp_path / "seccomp.json").exists() and (tmp_path / "gate").exists()
        session.before_start()
        assert (tmp_path / "s.sock").exists()
    finally:
        session.close()
    assert not (tmp_path / "s.sock").exists()


def test_a_supervisor_that_cannot_listen_fails_the_start_with_its_reason(tmp_path: Path) -> None:
    session = session_at(tmp_path, tmp_path / "no-such-directory" / "s.sock")
    try:
        session.before_create()
        with pytest.raises(SandboxError, match="exited at start") as raised:
            session.before_start()
        assert "FileNotFoundError" in str(raised.value)
    finally:
        session.close()


def test_a_fanotify_helper_never_told_a_pid_leaves_quietly() -> None:
    pending = PendingGroup(["/build", "/.hermetic/state"])
    pending.close()  # the container never reached its gate
    assert pending._process.returncode == 0  # it left by itself, and was reaped


def test_a_fanotify_helper_told_a_pid_that_does_not_exist_says_why() -> None:
    pid = 2**22 + 1  # above pid_max's ceiling: no such process, ever
    with open("/proc/sys/kernel/pid_max") as limit:
        assert int(limit.read()) < pid
    pending = PendingGroup(["/build"])
    with pytest.raises(FanotifyError, match="fanotify watch refused") as raised:
        pending.open(pid)
    assert str(pid) in str(raised.value)
    assert pending._process.returncode == 1  # it ended, and was reaped
