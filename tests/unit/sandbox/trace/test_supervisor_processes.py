"""The supervisor's view of processes: placed in the container's pid namespace (found at
its depth), a program's stdout and stderr, and an exec settled in the process that made it."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.trace.supervisor import Recorder, namespace_depth
from sandbox.trace.syscalls import AT_FDCWD
from tests.conftest import wait_until

ME = os.getpid()


def _status(pid: int) -> dict[str, list[int]]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Tgid", "PPid", "NSpid"):
            fields[key] = [int(v) for v in value.split()]
    return fields


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []  # it ended meanwhile


def _descendants(pid: int) -> list[int]:
    found = []
    for child in _children(pid):
        found += [child, *_descendants(child)]
    return found


def _namespaces(script: str, ready: Callable[[list[int]], bool]) -> Iterator[list[int]]:
    """Run ``script`` as the init of a new pid namespace (in a new user namespace, as an
    unprivileged user can); yield unshare's descendants once ``ready`` says so."""
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--pid", "--fork", "true"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(f"no unprivileged user and pid namespaces here: {probe.stderr[-200:]!r}")
    if not Path(f"/proc/{ME}/task/{ME}/children").exists():
        pytest.skip("this kernel does not list a process's children (CONFIG_PROC_CHILDREN)")
    outer = subprocess.Popen(
        ["unshare", "--user", "--map-root-user", "--pid", "--fork", "sh", "-c", script]
    )
    init = None
    try:
        deadline = time.monotonic() + 10
        while True:
            tree = _descendants(outer.pid)
            if tree and ready(tree):
                init = tree[0]
                break
            if outer.poll() is not None or time.monotonic() > deadline:
                pytest.fail("unshare did not start its pid namespace")
            time.sleep(0.02)
        yield tree
    finally:
        if init is not None:
            # The namespace's init: killing it ends every process in the namespace.
            os.kill(init, signal.SIGKILL)
        outer.kill()
        outer.wait()


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


@pytest.fixture
def namespaced() -> Iterator[tuple[int, int]]:
    """(the namespace's init, a sleep it started): a pid namespace like a container's."""
    for tree in _namespaces("sleep 60 & wait", lambda t: len(t) >= 2):
        yield tree[0], tree[1]


@pytest.fixture
def nested() -> Iterator[tuple[int, int]]:
    """(the outer namespace's init, a sleep that is the init of a namespace within it)."""
    script = "unshare --pid --fork sleep 60 & wait"
    for tree in _namespaces(script, lambda t: any(_comm(p) == "sleep" for p in t)):
        yield tree[0], next(p for p in tree if _comm(p) == "sleep")


def test_know_places_a_process_and_its_ancestors_up_to_the_namespace(
    namespaced: tuple[int, int],
) -> None:
    init, sleeper = namespaced
    assert namespace_depth(init, 7) == 1  # /proc is the namespace just above it
    recorder = Recorder()
    recorder.know(sleeper)
    placed = [e for e in recorder.events if e[0] == "pid"]
    outer = _status(init)["PPid"][0]  # unshare: outside, as conmon is outside a container
    assert placed == [["pid", sleeper, 2, init, sleeper], ["pid", init, 1, outer, init]]


def test_a_namespace_the_build_nests_keeps_the_containers_pids(nested: tuple[int, int]) -> None:
    _, sleeper = nested
    ids = _status(sleeper)["NSpid"]
    assert len(ids) == 3 and ids[2] == 1  # the negative control: innermost, it is 1
    recorder = Recorder()
    recorder.know(sleeper)
    placed = next(e for e in recorder.events if e[0] == "pid" and e[1] == sleeper)
    assert placed[2] == ids[1] != 1


def test_the_containers_namespace_is_found_at_its_depth(nested: tuple[int, int]) -> None:
    # Here the inner namespace is the container's, two levels below /proc's.
    outer_init, inner_init = nested
    depth = namespace_depth(inner_init, 1)
    assert depth == 2 and namespace_depth(outer_init, 1) == 1
    assert namespace_depth(_status(inner_init)["PPid"][0], 5) == 5  # no namespace's init
    recorder = Recorder()
    recorder.depth = depth
    recorder.know(inner_init)
    placed = [e for e in recorder.events if e[0] == "pid"]
    # its parent (the inner unshare) is above the container, as conmon is
    assert placed == [["pid", inner_init, 1, _status(inner_init)["PPid"][0], inner_init]]


def _event(pid: int) -> list[Any]:
    return ["exec", pid, b"/bin/sleep", [b"sleep"], None, [], False]


def _stat(pid: int) -> int:
    return os.open(f"/proc/{pid}/stat", os.O_RDONLY)


def test_outputs_are_recorded_while_the_process_is_there(tmp_path: Path) -> None:
    recorder = Recorder()
    with (tmp_path / "out").open("w") as out:
        child = subprocess.Popen(["sleep", "60"], stdout=out, stderr=subprocess.DEVNULL)
    stat_fd = _stat(child.pid)
    try:
        event = _event(child.pid)
        recorder._outputs_of(event, child.pid, stat_fd)
        assert event[5] == [os.fsencode(tmp_path / "out"), b"/dev/null"]
    finally:
        os.close(stat_fd)
        child.kill()
        child.wait()


def test_outputs_of_a_pid_given_to_another_process_are_not_recorded(tmp_path: Path) -> None:
    recorder = Recorder()
    ended = subprocess.Popen(["true"])
    stat_fd = _stat(ended.pid)  # held from the exec's notification on
    ended.wait()
    # Another process now has the pid the reads go to (as after a pid was given again).
    with (tmp_path / "other").open("w") as out:
        other = subprocess.Popen(["sleep", "60"], stdout=out, stderr=out)
    other_stat = _stat(other.pid)
    try:
        unchecked = _event(other.pid)
        recorder._outputs_of(unchecked, other.pid, other_stat)
        assert unchecked[5] != []  # the negative control: the other's own are taken
        event = _event(other.pid)
        recorder._outputs_of(event, other.pid, stat_fd)
        assert event[5] == []
    finally:
        os.close(stat_fd)
        os.close(other_stat)
        other.kill()
        other.wait()


def test_the_callers_stat_is_taken_only_while_the_notification_is_valid() -> None:
    # The caller could have been killed, its pid given to another process: the kernel's
    # word on the notification decides (here an fd that is no notification fd, so the
    # kernel confirms nothing).
    with open(os.devnull, "rb") as unconfirmed:
        assert Recorder(notify_fd=unconfirmed.fileno())._stat_of_caller(ME) is None
    stat_fd = Recorder()._stat_of_caller(ME)  # the positive control: nothing to confirm
    assert stat_fd is not None
    os.close(stat_fd)


def _soon(condition: Callable[[], object], what: str) -> None:
    wait_until(condition, what, timeout_s=10, interval_s=0.005)


def _image_once_started(stat_fd: int) -> bytes:
    """The program's image, once its exec has set it up (Popen returns before that)."""
    _soon(lambda: Recorder._image(stat_fd) is not None, "the program to start")
    image = Recorder._image(stat_fd)
    assert image is not None
    return image


def _pending_exec(recorder: Recorder, pid: int) -> list[Any]:
    """An exec of ``pid`` waiting to be settled, as ``_exec`` leaves it."""
    event = _event(pid)
    stat_fd = _stat(pid)
    group = recorder._group.get(pid, pid)
    recorder._pending[pid] = (event, _image_once_started(stat_fd), stat_fd, group)
    recorder._pending_in[group] = pid
    return event


_PID_REUSE = """
import json, os, subprocess, sys, time
from sandbox.trace.supervisor import Recorder

def image(stat_fd):
    deadline = time.monotonic() + 10
    while (found := Recorder._image(stat_fd)) is None and time.monotonic() < deadline:
        time.sleep(0.005)
    return found

recorder = Recorder()
ended = subprocess.Popen(["sleep", "60"])
held = os.open(f"/proc/{ended.pid}/stat", os.O_RDONLY)
event = ["exec", ended.pid, b"/bin/sleep", [b"sleep"], None, [], False]
before = image(held)
recorder._pending[ended.pid] = (event, before, held, ended.pid)
ended.kill()
ended.wait()
with open("/proc/sys/kernel/ns_last_pid", "w") as last:  # the next process gets its pid
    last.write(str(ended.pid - 1))
other = subprocess.Popen(["cat"], stdin=subprocess.PIPE)
fresh = os.open(f"/proc/{ended.pid}/stat", os.O_RDONLY)
by_number = image(fresh)
recorder.settle(ended.pid)  # the next call of that pid: the other process's
unchanged = ["exec", other.pid, b"/bin/cat", [b"cat"], None, [], False]
recorder._pending[other.pid] = (unchanged, image(fresh), fresh, other.pid)
recorder.settle(other.pid)
other.kill()
print(json.dumps({
    "reused": other.pid == ended.pid,
    "by_number_differs": by_number not in (None, before),
    "outcome": event[4],
    "unchanged": unchanged[4],
}))
"""


def test_an_exec_is_settled_in_the_process_it_was_made_by() -> None:
    # In a pid namespace of its own (with its /proc), a pid can be given again on
    # purpose (ns_last_pid): the exec of the process that ended must not be settled by
    # what the next process with its pid shows.
    command = ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc"]
    done = subprocess.run(
        [*command, sys.executable, "-c", _PID_REUSE], capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0 and "unshare" in done.stderr:
        pytest.skip(f"no unprivileged user, pid and mount namespaces here: {done.stderr[-200:]}")
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["reused"], "the pid was not given again"
    # The negative control: looked up by number again, it would pass for a program
    # that ran (another program is there now).
    assert found["by_number_differs"]
    assert found["outcome"] == "unknown"
    assert found["unchanged"] == "failed"  # the positive control: a held fd still reads


def test_a_thread_s_exec_is_settled_by_the_thread_alone() -> None:
    recorder = Recorder()
    path = ctypes.create_string_buffer(b"/bin/true\0")
    name = ctypes.create_string_buffer(b"true\0")
    argv = (ctypes.c_uint64 * 2)(ctypes.addressof(name), 0)
    tids: list[int] = []

    def thread() -> None:
        tid = threading.get_native_id()
        tids.append(tid)
        recorder.know(tid)
        recorder._group[tid] = ME  # as know() places a thread of a container process
        recorder._members.setdefault(ME, set()).add(tid)
        recorder._exec(tid, AT_FDCWD, ctypes.addressof(path), ctypes.addressof(argv))
        for work in recorder.later:
            work()

    worker = threading.Thread(target=thread)
    worker.start()
    worker.join()
    event = next(e for e in recorder.events if e[0] == "exec")
    # A thread's /proc/TID/stat says it is there: the process's stdout and stderr.
    assert event[5] == [os.readlink(f"/proc/{ME}/fd/{fd}").encode() for fd in (1, 2)]
    # A call of the leader could come before a successful exec replaced the program:
    # it must not settle the exec (it would look failed).
    assert list(recorder._pending) == tids and ME not in recorder._pending
    recorder.forget(ME)  # the thread group ends: the exec was never settled
    assert event[4] == "unknown" and recorder._pending == {}


_THREAD_EXECS = """
import ctypes, os, sys, threading
path = ctypes.create_string_buffer(b"/bin/sleep")
words = [ctypes.create_string_buffer(b"sleep"), ctypes.create_string_buffer(b"60")]
argv = (ctypes.c_uint64 * 3)(*map(ctypes.addressof, words), 0)
def run():
    print(threading.get_native_id(), ctypes.addressof(path), ctypes.addressof(argv), flush=True)
    sys.stdin.readline()
    os.execv("/bin/sleep", ["sleep", "60"])
threading.Thread(target=run).start()
"""


def test_an_exec_by_another_thread_leaves_the_leaders_pending_exec_unknown() -> None:
    # The leader's exec failed (it still runs python); then another thread execs: the
    # kernel gives that thread the leader's pid, so the leader's stat shows the new
    # program, and the failed exec would pass for one that ran.
    child = subprocess.Popen(
        [sys.executable, "-c", _THREAD_EXECS],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        tid, path, argv = map(int, child.stdout.readline().split())
        recorder, unguarded = Recorder(), Recorder()
        for r in (recorder, unguarded):
            r._group.update({tid: child.pid, child.pid: child.pid})
            r._members[child.pid] = {child.pid, tid}
        leaders = _pending_exec(recorder, child.pid)
        unguarded_leaders = _pending_exec(unguarded, child.pid)
        before = recorder._pending[child.pid][1]
        recorder._exec(tid, AT_FDCWD, path, argv)  # the thread's exec, as notified
        assert leaders[4] == "unknown" and child.pid not in recorder._pending
        child.stdin.write("\n")
        child.stdin.flush()
        fresh = _stat(child.pid)
        try:
            _soon(lambda: Recorder._image(fresh) not in (None, before), "the thread's exec")
        finally:
            os.close(fresh)
        unguarded.settle(child.pid)  # the negative control: the leader's next call
        assert unguarded_leaders[4] == "ran"
        recorder.settle(tid)  # the thread's exec: its tid is gone with it
        assert recorder.events[-1][4] == "unknown"
    finally:
        child.kill()
        child.wait()


def test_a_program_that_renames_itself_still_failed_its_exec() -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import ctypes, sys; sys.stdin.readline(); "
            "ctypes.CDLL(None).prctl(15, b'renamed', 0, 0, 0); sys.stdin.readline()",
        ],
        stdin=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None
    try:
        recorder = Recorder()
        event = _pending_exec(recorder, child.pid)
        child.stdin.write("\n")  # after its failed exec, it renames itself (PR_SET_NAME)
        child.stdin.flush()
        # what the stat's name field shows now
        _soon(lambda: _comm(child.pid) == "renamed", "the rename")
        recorder.settle(child.pid)
        assert event[4] == "failed"
    finally:
        child.kill()
        child.wait()


def test_stat_fds_of_processes_that_ended_unsettled_are_closed() -> None:
    # exit(2) and a signal end a process without a traced call: nothing settles its
    # exec, and its held fd would stay open for the rest of the build.
    recorder = Recorder()
    ended = subprocess.Popen(["sleep", "60"])
    alive = subprocess.Popen(["sleep", "60"])
    try:
        gone = _pending_exec(recorder, ended.pid)
        running = _pending_exec(recorder, alive.pid)
        ended.kill()
        ended.wait()
        held = recorder._pending[ended.pid][2]
        assert held is not None
        stat_path = f"/proc/{ended.pid}/stat"
        assert _fd_target(held) == stat_path  # open until a sweep
        recorder._sweep()
        assert gone[4] == "unknown" and ended.pid not in recorder._pending
        assert _fd_target(held) != stat_path
        assert running[4] is None and alive.pid in recorder._pending  # still to settle
    finally:
        alive.kill()
        alive.wait()


def _fd_target(fd: int) -> str | None:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def test_execs_sweep_the_stat_fds_of_ended_processes() -> None:
    # The sweep as execs call it: once as many execs are pending as _sweep_at says.
    recorder = Recorder()
    ended = subprocess.Popen(["sleep", "60"])
    gone = _pending_exec(recorder, ended.pid)
    ended.kill()
    ended.wait()
    recorder._sweep_at = 1
    path = ctypes.create_string_buffer(b"/bin/true")
    name = ctypes.create_string_buffer(b"true")
    argv = (ctypes.c_uint64 * 2)(ctypes.addressof(name), 0)
    recorder._exec(ME, AT_FDCWD, ctypes.addressof(path), ctypes.addressof(argv))
    assert gone[4] == "unknown" and list(recorder._pending) == [ME]
    recorder.unsettled()


def test_values_hidden_from_the_supervisor_are_no_image(tmp_path: Path) -> None:
    # What /proc/PID/stat shows of a process whose memory the reader may not see: code
    # "1 1", stack 0 (of an ended one: 0 0 0). Compared, two such would pass for a
    # program that did not change.
    fields = ["S", *["7"] * 22, "1", "1", "0", *["7"] * 19, *["9"] * 7]
    hidden = tmp_path / "stat"
    hidden.write_text("42 (x) " + " ".join(fields) + "\n")
    visible = tmp_path / "visible"
    fields[25] = "140000"
    visible.write_text("42 (x) " + " ".join(fields) + "\n")
    for text, expected in ((hidden, None), (visible, b"1 1 140000 9 9 9 9")):
        fd = os.open(text, os.O_RDONLY)
        try:
            assert Recorder._image(fd) == expected
        finally:
            os.close(fd)
