"""The shared podman service's reuse logic, against a stand-in service (no podman): started
once, reused while it answers, replaced when stale or dead, never taken from another user,
and started once when two processes need it at the same moment."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import podman.errors
import psutil
import pytest
import requests

from sandbox.errors import SandboxError
from sandbox.podman_api import (
    PodmanService,
    SharedService,
    _foreign_socket,
    _own_private_dir,
    _translated,
    ping,
    refuses,
)

STAND_IN = Path(__file__).with_name("podman_stand_in.py")


@pytest.fixture
def program(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A 'podman' whose 'system service' is the stand-in; each start is logged."""
    monkeypatch.setenv("STAND_IN_LOG", str(tmp_path / "starts.log"))
    (tmp_path / "starts.log").touch()
    path = tmp_path / "podman"
    path.write_text(f'#!/bin/sh\nexec {sys.executable} {STAND_IN} "$@"\n')
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[SharedService]:
    shared = SharedService(directory=tmp_path / "svc")
    try:
        yield shared
    finally:
        shared.stop()


def starts(tmp_path: Path) -> list[int]:
    return [int(line) for line in (tmp_path / "starts.log").read_text().split()]


def test_started_on_demand_then_reused(
    tmp_path: Path, program: str, service: SharedService
) -> None:
    assert not ping(service.url)
    assert service.ensure(podman_bin=program, idle_s=60) is True
    assert ping(service.url)
    assert service.ensure(podman_bin=program, idle_s=60) is False  # reused, not restarted
    assert starts(tmp_path) == [service.pid()]
    assert (service.directory.stat().st_mode & 0o777) == 0o700
    # detached: not a child of this process, so nobody has to wait for it
    pid = service.pid()
    assert pid is not None and psutil.Process(pid).ppid() != os.getpid()


def test_a_stale_socket_is_replaced(tmp_path: Path, program: str, service: SharedService) -> None:
    service.directory.mkdir(mode=0o700)
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(service.socket))  # left behind: the file exists, nothing listens
    assert service.socket.exists() and not ping(service.url)
    assert service.ensure(podman_bin=program, idle_s=60) is True
    assert ping(service.url) and len(starts(tmp_path)) == 1


def test_a_dead_service_is_replaced(tmp_path: Path, program: str, service: SharedService) -> None:
    service.ensure(podman_bin=program, idle_s=60)
    first = service.pid()
    assert first is not None
    os.kill(first, signal.SIGKILL)
    psutil.wait_procs([psutil.Process(first)], timeout=10)
    assert service.socket.exists() and not ping(service.url)  # it died with its socket left
    assert service.pid() is None
    assert service.ensure(podman_bin=program, idle_s=60) is True
    assert service.pid() not in (None, first)
    assert ping(service.url) and len(starts(tmp_path)) == 2


def test_a_dead_service_refuses_a_live_one_does_not(
    tmp_path: Path, program: str, service: SharedService
) -> None:
    # What a build checks while it runs: a slow service must not count as a dead one.
    assert refuses(service.url)  # no socket at all
    service.ensure(podman_bin=program, idle_s=60)
    assert not refuses(service.url)
    pid = service.pid()
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # alive but answering nothing: slow, not gone
    try:
        assert not ping(service.url, timeout=0.5) and not refuses(service.url)
    finally:
        os.kill(pid, signal.SIGCONT)
    os.kill(pid, signal.SIGKILL)
    psutil.wait_procs([psutil.Process(pid)], timeout=10)
    assert service.socket.exists() and refuses(service.url)  # dead, its socket left


STARTER = """
import os, sys, time
from contextlib import nullcontext
from pathlib import Path
import sandbox.podman_api as api
if sys.argv[3] == "unlocked":  # the negative control: no lock (and no clean-up of
    api.file_lock = lambda path: nullcontext()  # the other's start, which would hide it)
    api.SharedService.stop = lambda self: False
barrier = Path(sys.argv[4])
(barrier / str(os.getpid())).touch()
while len(list(barrier.iterdir())) < 2:  # both imported: go at the same moment
    time.sleep(0.005)
shared = api.SharedService(directory=Path(sys.argv[1]))
print(shared.ensure(podman_bin=sys.argv[2], idle_s=60))
"""


def _start_two_at_once(directory: Path, program: str, mode: str) -> list[str]:
    """What each of two processes that need the service at the same moment said."""
    barrier = directory.with_name(f"{directory.name}-barrier")
    barrier.mkdir()
    argv = [sys.executable, "-c", STARTER, str(directory), program, mode, str(barrier)]
    env = {**os.environ, "STAND_IN_DELAY": "1"}  # both find nothing answering
    both = [
        subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in "ab"
    ]
    answers = []
    for process in both:
        out, err = process.communicate(timeout=60)
        answers.append(out.strip() if process.returncode == 0 else f"failed: {err[-300:]}")
    return answers


def test_two_processes_starting_it_at_once_start_one(
    tmp_path: Path, program: str, service: SharedService
) -> None:
    answers = _start_two_at_once(service.directory, program, "locked")
    assert sorted(answers) == ["False", "True"]  # one started it, the other reused it
    assert len(starts(tmp_path)) == 1 and ping(service.url)


def test_without_the_lock_two_would_start(tmp_path: Path, program: str) -> None:
    # Negative control: the same race without the lock starts two services.
    directory = tmp_path / "unlocked"
    try:
        _start_two_at_once(directory, program, "unlocked")  # one may fail, or both "start"
        assert len(starts(tmp_path)) == 2
    finally:
        for pid in starts(tmp_path):
            if psutil.pid_exists(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_socket_of_another_user_is_refused(
    tmp_path: Path, program: str, service: SharedService
) -> None:
    service.ensure(podman_bin=program, idle_s=60)
    me, other = os.geteuid(), os.geteuid() + 1
    assert _foreign_socket(service.url, me) is None  # control: our own socket is accepted
    problem = _foreign_socket(service.url, other)  # as another user sees it
    assert problem is not None and "belongs to uid" in problem
    with pytest.raises(SandboxError, match="not a private directory"):
        replace(service, owner=other).ensure(podman_bin=program, idle_s=60)
    with (
        pytest.raises(SandboxError, match="refusing the podman socket"),
        PodmanService(url=service.url, owner=other),
    ):
        pass
    with PodmanService(url=service.url, owner=me) as session:  # control: ours is used
        assert session is not None


def test_a_link_in_place_of_the_socket_is_refused(
    tmp_path: Path, program: str, service: SharedService
) -> None:
    service.ensure(podman_bin=program, idle_s=60)
    link = tmp_path / "link.sock"
    link.symlink_to(service.socket)
    assert ping(f"unix://{link}")  # it would answer
    problem = _foreign_socket(f"unix://{link}", os.geteuid())
    assert problem is not None and "not a socket" in problem


def test_a_directory_others_may_write_in_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o770)
    with pytest.raises(SandboxError, match="not a private directory"):
        _own_private_dir(shared, os.geteuid())
    fresh = _own_private_dir(tmp_path / "fresh", os.geteuid())
    assert fresh.stat().st_mode & 0o777 == 0o700  # control
    with pytest.raises(SandboxError, match="not a private directory"):
        _own_private_dir(fresh, os.geteuid() + 1)  # ours: not another user's


def test_the_service_ends_by_itself_when_idle(
    tmp_path: Path, program: str, service: SharedService
) -> None:
    service.ensure(podman_bin=program, idle_s=1)
    pid = service.pid()
    assert pid is not None
    gone, _ = psutil.wait_procs([psutil.Process(pid)], timeout=60)
    assert gone and not ping(service.url)
    assert service.ensure(podman_bin=program, idle_s=60) is True  # and comes back on demand


@pytest.mark.parametrize(
    ("cause", "gone"),
    [
        (requests.ConnectionError("refused"), True),
        (requests.exceptions.ChunkedEncodingError("cut off mid-body"), True),
        (ConnectionResetError(104, "reset"), True),
        (FileNotFoundError(2, "no socket"), True),
        (requests.ReadTimeout("slow"), False),  # slow is not gone
        (None, False),  # an answer of podman's own (404, 500): not a dead service
    ],
)
def test_a_request_the_dead_service_broke_says_so(cause: OSError | None, gone: bool) -> None:
    # podman-py wraps every OSError of a request as "GET operation failed"
    error = podman.errors.APIError("http://d/v5.0.0/libpod/containers/x/json")
    error.__cause__ = cause
    with pytest.raises(SandboxError) as raised, _translated("inspect the build container"):
        raise error
    assert ("the podman service stopped answering" in str(raised.value)) is gone
