"""A process's stdout read through a pidfd, as /proc says it, and only while it is the
process the pidfd was opened for; processes placed in their pid namespace."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.trace.pidfd import fd_target, open_pidfd
from sandbox.trace.supervisor import Recorder

ME = os.getpid()


def _status(pid: int) -> dict[str, list[int]]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Tgid", "PPid", "NSpid"):
            fields[key] = [int(v) for v in value.split()]
    return fields


@pytest.fixture
def namespaced() -> Iterator[tuple[int, int]]:
    """(host pid of unshare's child, the pid namespace's init) and a process in it: a
    pid namespace like a container's, made by an unprivileged user."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    # unshare forks the namespace's init (sh), which starts one sleep and waits.
    outer = subprocess.Popen(
        ["unshare", "--user", "--map-root-user", "--pid", "--fork", "sh", "-c", "sleep 60 & wait"]
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            init = [int(p) for p in _children(outer.pid)]
            sleeper = [int(p) for p in _children(init[0])] if init else []
            if sleeper:
                break
            if outer.poll() is not None or time.monotonic() > deadline:
                pytest.fail("unshare did not start a pid namespace")
            time.sleep(0.02)
        yield init[0], sleeper[0]
    finally:
        outer.kill()
        subprocess.run(["pkill", "-KILL", "-P", str(outer.pid)], check=False)
        outer.wait()


def _children(pid: int) -> list[str]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return path.read_text().split() if path.exists() else []


def test_know_places_a_process_and_its_ancestors_up_to_the_namespace(
    namespaced: tuple[int, int],
) -> None:
    init, sleeper = namespaced
    recorder = Recorder()
    recorder.know(sleeper)
    placed = [e for e in recorder.events if e[0] == "pid"]
    outer = _status(init)["PPid"][0]  # unshare: outside, as conmon is outside a container
    assert placed == [["pid", sleeper, 2, init, sleeper], ["pid", init, 1, outer, init]]


def test_a_process_fd_target_is_what_proc_says(tmp_path: Path) -> None:
    path = tmp_path / "log"
    before = len(os.listdir("/proc/self/fd"))
    with path.open("w") as log:
        pidfd = open_pidfd(ME)
        try:
            assert fd_target(pidfd, log.fileno()) == os.fsencode(path)
            assert fd_target(pidfd, 1) == os.readlink(b"/proc/self/fd/1")
            read_end, write_end = os.pipe()
            os.close(write_end)
            os.close(read_end)
            with pytest.raises(OSError):
                fd_target(pidfd, read_end)  # closed: nothing to name
        finally:
            os.close(pidfd)
    assert len(os.listdir("/proc/self/fd")) == before  # every copy was closed


def test_outputs_come_from_the_process_the_pidfd_was_opened_for(tmp_path: Path) -> None:
    recorder = Recorder()
    with (tmp_path / "out").open("w") as out:
        child = subprocess.Popen(["sleep", "60"], stdout=out, stderr=subprocess.DEVNULL)
    try:
        event: list[object] = ["exec", child.pid, b"/bin/sleep", [b"sleep"], None, [], False]
        recorder._outputs_of(event, open_pidfd(child.pid))
        assert event[5] == [os.fsencode(tmp_path / "out"), b"/dev/null"]
        gone: list[object] = ["exec", child.pid, b"/bin/sleep", [b"sleep"], None, [], False]
        pidfd = open_pidfd(child.pid)
        child.kill()
        child.wait()
        # Gone: its pid may be another process's by now; the pidfd says nothing of it.
        recorder._outputs_of(gone, pidfd)
        assert gone[5] == []
        with pytest.raises(OSError):
            os.fstat(pidfd)  # and the pidfd was closed
    finally:
        child.kill()
        child.wait()


def test_a_namespace_the_build_nests_keeps_the_containers_pids() -> None:
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    # The outer namespace stands for the container; the inner one the build made.
    outer = subprocess.Popen(
        [
            "unshare", "--user", "--map-root-user", "--pid", "--fork",
            "sh", "-c", "unshare --pid --fork sleep 60 & wait",
        ]
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            inner = _descendants(outer.pid)
            sleeping = [p for p in inner if Path(f"/proc/{p}/comm").read_text().strip() == "sleep"]
            if sleeping:
                break
            if outer.poll() is not None or time.monotonic() > deadline:
                pytest.fail("unshare did not start nested pid namespaces")
            time.sleep(0.02)
        sleeper = sleeping[0]
        ids = _status(sleeper)["NSpid"]
        assert len(ids) == 3 and ids[2] == 1  # the negative control: innermost, it is 1
        recorder = Recorder()
        recorder.know(sleeper)
        placed = next(e for e in recorder.events if e[0] == "pid" and e[1] == sleeper)
        assert placed[2] == ids[1] != 1
    finally:
        outer.kill()
        subprocess.run(["pkill", "-KILL", "-P", str(outer.pid)], check=False)
        outer.wait()


def _descendants(pid: int) -> list[int]:
    found = []
    for child in map(int, _children(pid)):
        found += [child, *_descendants(child)]
    return found
