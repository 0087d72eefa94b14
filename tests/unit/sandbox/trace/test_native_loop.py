"""The native supervisor loop against the Python one, the reference: the same workload of
real processes under a real seccomp listener, once with each loop, must give the same
events. The workload takes the native loop's plain paths and each of its ways back to
the Python handlers (long argument lists, long paths and arguments, unreadable
addresses, calls it does not handle)."""

from __future__ import annotations

import ctypes
import os
import posixpath
import re
import socket
import struct
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.trace import native
from sandbox.trace.supervisor import Recorder, _placement, _placement_of, supervise
from sandbox.trace.syscalls import numbers

_SECCOMP_SET_MODE_FILTER = 1
_SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
_SYS_SECCOMP = 317
_PR_SET_NO_NEW_PRIVS = 38
_RET_ALLOW = 0x7FFF0000
_RET_USER_NOTIF = 0x7FC00000


class _Filter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


class _Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_Filter))]


def _program(traced: list[int]) -> list[tuple[int, int, int, int]]:
    """A classic BPF filter: every call in ``traced`` to the listener, the rest allowed."""
    code = [(0x20, 0, 0, 0)]  # load the syscall number
    for nr in traced:
        code += [(0x15, 0, 1, nr), (0x06, 0, 0, _RET_USER_NOTIF)]
    return [*code, (0x06, 0, 0, _RET_ALLOW)]


# A C program whose execs put their strings where the plain case does not: far apart,
# past the first 512 bytes, past what one exec keeps, and into unmapped memory.
_EXECS = r"""
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
static void run_without_argv(const char *path) {
    pid_t pid = fork();
    if (pid == 0) {
        execve(path, NULL, NULL); /* Linux 5.18+ runs it with argv [""] */
        _exit(127);
    }
    waitpid(pid, NULL, 0);
}
static void run(const char *path, char *const argv[]) {
    pid_t pid = fork();
    if (pid == 0) {
        execv(path, argv);
        _exit(127);
    }
    waitpid(pid, NULL, 0);
}
int main(void) {
    char *far = malloc(1 << 20), stack[] = "on-the-stack";
    strcpy(far + (1 << 20) - 16, "far-away");
    char *scattered[] = {"scattered", far + (1 << 20) - 16, stack, 0};
    run("/bin/true", scattered);
    static char *many[2001];
    for (int i = 0; i < 2000; i++) many[i] = i % 2 ? "odd" : "even";
    run("/bin/true", many);
    char long_path[700] = "/bin";
    for (int i = 0; i < 80; i++) strcat(long_path, "/../bin");
    strcat(long_path, "/true");
    char *plain[] = {"long-path", 0};
    run(long_path, plain);
    static char *huge[14] = {"huge"};
    for (int i = 1; i < 13; i++) {
        huge[i] = malloc(100001);
        memset(huge[i], 'a' + i, 100000);
        huge[i][100000] = 0;
    }
    run("/bin/true", huge);
    /* The path at the very end of a mapping: a read of 512 bytes there comes back short. */
    char *page = mmap(0, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    munmap(page + 4096, 4096);
    strcpy(page + 4096 - 10, "/bin/true");
    char *edge[] = {"at-the-edge", 0};
    run(page + 4096 - 10, edge);
    char *bad[] = {"bad", (char *)8, 0};
    run("/bin/true", bad);
    run((char *)8, bad);
    run_without_argv("/bin/true");
    return 0;
}
"""

WORKLOAD = r"""
set -u
mkdir -p d/sub
cd d
echo hi > out.txt
chmod 640 out.txt
cat out.txt > copy.txt
ls . sub > /dev/null; ls . > /dev/null; ls sub > /dev/null
/bin/true a b c
./missing 2>/dev/null || true
touch noexec; ./noexec 2>/dev/null || true
cp /bin/true mytrue; ./mytrue x
sh -c 'exit 3' || true
/bin/echo $(seq 1 100) > many.txt
long=$(printf 'x%.0s' $(seq 1 700)); /bin/true "$long" short
part=$(printf 'p%.0s' $(seq 1 50)); deep=$part/$part/$part/$part/$part/$part/$part/$part
mkdir -p "$deep/$deep"; rm -r "$part"
cd ./sub/../sub; mkdir a; touch ./a//b; cd ..
(cd / && cat etc/hostname > /dev/null); cat //etc//hostname > /dev/null

rm -f copy.txt; rm -rf sub
ln -s out.txt link; mv link link2; uname > /dev/null
touch "$(printf 'n\377me')"
../execs 2>/dev/null || true
exit 0
"""


def _run(
    workload_dir: Path,
    command: list[str],
    loop: str,
    monkeypatch: pytest.MonkeyPatch,
    **limits: int,
) -> Recorder:
    """``command``, run in ``workload_dir`` under a seccomp listener of its own that
    ``loop`` serves; the recorder once every process has ended."""
    monkeypatch.setenv(native.CHOICE, loop)
    parent, child = socket.socketpair()
    received: dict[str, Any] = {}

    def install() -> None:
        os.close(parent.fileno())
        libc = ctypes.CDLL(None, use_errno=True)
        # Not the sends: the listener itself goes to the supervisor by sendmsg.
        sends = {"sendto", "sendmsg", "sendmmsg"}
        code = _program(sorted({nr for name, nr in numbers().items() if name not in sends}))
        filters = (_Filter * len(code))(*(_Filter(*instruction) for instruction in code))
        program = _Program(len(code), filters)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0):
            os._exit(120)
        listener = libc.syscall(
            _SYS_SECCOMP,
            _SECCOMP_SET_MODE_FILTER,
            _SECCOMP_FILTER_FLAG_NEW_LISTENER,
            ctypes.byref(program),
        )
        if listener < 0:
            os._exit(121)
        socket.send_fds(child, [b"fd"], [listener])
        os.close(listener)

    def serve() -> None:
        _, fds, _, _ = socket.recv_fds(parent, 16, 1)
        recorder = Recorder(
            notify_fd=fds[0],
            max_events=limits.get("max_events", 1 << 62),
            max_bytes=limits.get("max_bytes", 1 << 62),
        )
        recorder.depth = 0  # this test's processes are in /proc's own namespace
        received["recorder"] = recorder
        try:
            supervise(fds[0], recorder)
        finally:
            os.close(fds[0])

    server = threading.Thread(target=serve)
    server.start()
    with open(workload_dir / "log", "wb") as log:
        process = subprocess.run(
            command,
            cwd=workload_dir,
            preexec_fn=install,  # the filter must be on before the exec
            pass_fds=(child.fileno(),),
            stdout=log,
            stderr=log,
            check=False,
            timeout=300,
        )
    child.close()
    server.join(300)
    parent.close()
    assert process.returncode == 0, (workload_dir / "log").read_text(errors="replace")
    recorder: Recorder = received["recorder"]
    recorder.unsettled()
    return recorder


def _normal(recorder: Recorder, workload_dir: Path) -> list[Any]:
    """The events with pids numbered by first appearance and the run's directory,
    pipes and sockets made alike; then the recorder's counters."""
    pids: dict[int, int] = {}

    def pid(value: int) -> int:
        return pids.setdefault(value, len(pids))

    def text(value: Any) -> Any:
        if isinstance(value, bytes):
            value = value.replace(os.fsencode(workload_dir), b"<run>")
            return re.sub(rb"^(pipe|socket):\[\d+\]$", rb"\1", value)
        if isinstance(value, list):
            return [text(item) for item in value]
        return value

    out = []
    for event in recorder.events:
        kind, who, *rest = event
        if kind == "pid":
            rest = [pid(rest[0]), pid(rest[1]) if rest[1] in pids else "outside", pid(rest[2])]
        out.append([kind, pid(who), *text(rest)])
    counters = ("kept_bytes", "unreadable", "notifications", "dropped", "ended", "_execs")
    return [*out, {name: getattr(recorder, name) for name in counters}]


@pytest.fixture
def execs_program(tmp_path: Path) -> Path:
    source = tmp_path / "bad-exec.c"
    source.write_text(_EXECS)
    binary = tmp_path / "execs"
    subprocess.run(["cc", "-w", "-o", str(binary), str(source)], check=True)
    return binary


def test_the_native_loop_is_built_and_current() -> None:
    # The set-up builds it (gcc, python3-dev): a missing or stale build is a failure here,
    # not a silent fall back to the slower loop.
    assert native.native_loop() is not None


def _workload_in_both_loops(
    tmp_path: Path, execs_program: Path, monkeypatch: pytest.MonkeyPatch, **limits: int
) -> list[Any]:
    """WORKLOAD's record, once by each loop: the same (else the test fails)."""
    runs, recorders = {}, {}
    for loop in ("native", "python"):
        workload_dir = tmp_path / loop
        workload_dir.mkdir()
        (workload_dir / "execs").symlink_to(execs_program)
        command = ["/bin/sh", "-c", WORKLOAD]
        recorders[loop] = _run(workload_dir, command, loop, monkeypatch, **limits)
        runs[loop] = _normal(recorders[loop], workload_dir)
    assert runs["native"] == runs["python"]
    assert recorders["native"].notifications > 100
    return runs["native"]


def test_the_native_loop_records_what_the_python_loop_records(
    tmp_path: Path, execs_program: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = _workload_in_both_loops(tmp_path, execs_program, monkeypatch)[:-1]
    kinds = {event[0] for event in events}
    assert {"pid", "exec", "exit", "open", "listdir", "chmod", "mkdir", "rmdir", "unlink"} <= kinds
    assert {"symlink", "rename", "uname", "unreadable"} <= kinds  # the Python handlers' share
    execs = [event for event in events if event[0] == "exec"]
    outcomes = {(event[2].rsplit(b"/", 1)[-1], event[4]) for event in execs}
    assert {
        (b"true", "ran"),
        (b"missing", "failed"),
        (b"noexec", "failed"),
        (b"mytrue", "ran"),
    } <= outcomes
    assert any(len(event[3]) == 101 for event in execs)  # 100 arguments: read by Python
    assert any(len(arg) == 700 for event in execs for arg in event[3])
    assert any(len(event[2]) > 600 for event in events if event[0] == "mkdir")
    by_first = {event[3][0]: event for event in execs if event[3]}
    assert any(e[2] == b"/bin/true" and e[3] == [] and e[4] == "ran" for e in execs)
    # One slash at the start, whichever way the path was written.
    hostname = [event for event in events if event[0] == "open" and b"hostname" in event[2]]
    assert [event[2] for event in hostname] == [b"/etc/hostname", b"/etc/hostname"]

    assert by_first[b"scattered"][3] == [b"scattered", b"far-away", b"on-the-stack"]
    assert len(by_first[b"even"][3]) == 2000
    assert by_first[b"long-path"][2] == b"/bin/true"
    assert by_first[b"at-the-edge"][2] == b"/bin/true"
    assert by_first[b"huge"][6] is True  # cut: past what one exec keeps
    assert len(by_first[b"huge"][3]) < 13
    assert any(event[2] == b"<run>/d/sub/a/b" for event in events if event[0] == "open")


# Calls as a build could make them, from a description (tests/.../_CALLS's format): execs
# of any path with any arguments, kept side by side or each 70 KiB from the next, and the
# path-taking calls.
_CALLS = r"""
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
static FILE *spec;
static char *next(int scattered) {
    uint32_t length = 0;
    if (fread(&length, 4, 1, spec) != 1) exit(2);
    char *text = malloc(length + 1 + (scattered ? 70000 : 0));
    if (fread(text, 1, length, spec) != length) exit(2);
    text[length] = 0;
    return text;
}
int main(int argc, char **argv) {
    uint8_t kind[2];
    spec = fopen(argv[argc - 1], "rb");
    while (fread(kind, 1, 2, spec) == 2) {
        char *path = next(kind[1]);
        uint32_t count = 0;
        if (fread(&count, 4, 1, spec) != 1) exit(2);
        char **args = calloc(count + 1, sizeof *args);
        for (uint32_t i = 0; i < count; i++) args[i] = next(kind[1]);
        if (kind[0] == 0) {
            pid_t pid = fork();
            if (pid == 0) {
                execv(path, args);
                _exit(127);
            }
            waitpid(pid, NULL, 0);
        } else {
            /* Each call the native loop handles, by its own number. */
            int dir = open(".", O_RDONLY | O_DIRECTORY);
            char entries[4096];
            long fd = syscall(SYS_openat, AT_FDCWD, path, O_RDONLY);
            if (fd >= 0) close(fd);
            fd = syscall(SYS_open, path, O_RDONLY);
            if (fd >= 0) close(fd);
            fd = syscall(SYS_openat, dir, path, O_RDONLY);
            if (fd >= 0) close(fd);
            syscall(SYS_openat, -5, path, O_RDONLY);
            syscall(SYS_mkdir, path, 0755);
            syscall(SYS_chmod, path, 0755);
            syscall(SYS_fchmodat, dir, path, 0755);
            syscall(452, AT_FDCWD, path, 0755, 0); /* fchmodat2 */
            syscall(SYS_rmdir, path);
            syscall(SYS_mkdirat, dir, path, 0755);
            syscall(SYS_unlinkat, dir, path, AT_REMOVEDIR);
            syscall(SYS_unlink, path);
            syscall(SYS_getdents64, dir, entries, sizeof entries);
            syscall(SYS_getdents64, dir, entries, sizeof entries);
            syscall(SYS_getdents64, -7, entries, sizeof entries);
            close(dir);
        }
    }
    return 0;
}
"""

_PART = st.sampled_from([b"", b".", b"..", b"s", b"true", b"bin", b"x\xff", b"usr"])
_STRING = st.one_of(st.binary(max_size=40), st.binary(min_size=500, max_size=3000)).map(
    lambda text: text.replace(b"\0", b"-")
)
_Call = tuple[int, bool, bytes, list[bytes]]
_EXEC: st.SearchStrategy[_Call] = st.tuples(
    st.just(0),
    st.booleans(),
    st.tuples(st.sampled_from([b"", b"/", b"//"]), st.lists(_PART, max_size=7)).map(
        lambda lead_parts: lead_parts[0] + b"/".join(lead_parts[1])
    ),
    st.one_of(st.lists(_STRING, max_size=5), st.lists(st.just(b"many"), min_size=60, max_size=80)),
)
# Relative paths that stay inside the run's directory: they make and remove what they name.
_CHANGE: st.SearchStrategy[_Call] = st.tuples(
    st.just(1),
    st.booleans(),
    st.lists(_PART, max_size=6)
    .filter(lambda parts: parts.count(b"..") <= 3)
    .map(lambda parts: b"a/b/c/" + b"/".join(parts)),
    st.just([]),
)


def _description(calls: list[_Call]) -> bytes:
    def text(value: bytes) -> bytes:
        return struct.pack("<I", len(value)) + value

    out = b""
    for kind, scattered, path, argv in calls:
        out += bytes([kind, scattered]) + text(path) + struct.pack("<I", len(argv))
        out += b"".join(text(arg) for arg in argv)
    return out


@pytest.fixture(scope="module")
def calls_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("calls")
    (directory / "calls.c").write_text(_CALLS)
    subprocess.run(["cc", "-w", "-o", "calls", "calls.c"], cwd=directory, check=True)
    return directory / "calls"


@pytest.mark.parametrize("limits", [{"max_events": 60}, {"max_bytes": 3000}])
def test_the_loops_agree_once_the_record_is_full(
    limits: dict[str, int],
    tmp_path: Path,
    execs_program: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    record = _workload_in_both_loops(tmp_path, execs_program, monkeypatch, **limits)
    assert record[-1]["dropped"]  # the control: the record did fill up


@settings(max_examples=40)
@given(calls=st.lists(st.one_of(_EXEC, _CHANGE), min_size=1, max_size=4))
def test_the_loops_agree_on_any_exec_and_path(
    calls: list[_Call],
    calls_program: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runs = {}
    with tempfile.TemporaryDirectory(prefix="loops-") as scratch:
        for loop in ("native", "python"):
            workload_dir = Path(scratch) / loop
            (workload_dir / "a" / "b" / "c").mkdir(parents=True)
            (workload_dir / "calls.bin").write_bytes(_description(calls))
            recorder = _run(workload_dir, [str(calls_program), "calls.bin"], loop, monkeypatch)
            runs[loop] = _normal(recorder, workload_dir)
    assert runs["native"] == runs["python"]


def _status(groups: int, tail: bytes = b"NSpid:\t4321\t7\nNSsid:\t1\n") -> bytes:
    listed = b" ".join(b"%d" % group for group in range(groups))
    return (
        b"Name:\tcat\nUmask:\t0022\nState:\tR (running)\nTgid:\t4321\nNgid:\t0\n"
        b"Pid:\t4321\nPPid:\t4300\nTracerPid:\t0\nGroups:\t" + listed + b"\n" + tail
    )


@pytest.mark.parametrize(
    ("status", "fields"),
    [
        (_status(3), [b"\t4321", b"\t4300", b"\t4321\t7"]),
        # 1,200 supplementary groups push NSpid past the first page: both readers go on
        # until the lines are whole. (A build cannot add groups; the host's processes can.)
        (_status(1200), [b"\t4321", b"\t4300", b"\t4321\t7"]),
        (_status(3, tail=b""), None),  # no NSpid
        (_status(3, tail=b"NSpid:\t4321\t7"), None),  # its line not whole
    ],
)
def test_both_loops_read_a_status_the_same_way(
    status: bytes, fields: list[bytes] | None, tmp_path: Path
) -> None:
    loop = native.native_loop()
    assert loop is not None
    if fields is not None and len(status) > 4096:
        assert status.find(b"\nNSpid:") > 4096  # the control: past one read of a page
    path = tmp_path / "status"
    path.write_bytes(status)
    assert _placement_of(os.fsencode(path)) == fields
    assert loop.placement_of(os.fsencode(path)) == (None if fields is None else tuple(fields))


def test_a_real_process_is_placed() -> None:
    loop = native.native_loop()
    assert loop is not None
    fields = _placement(os.getpid())
    assert fields is not None and int(fields[0]) == os.getpid()
    assert loop.placement_of(b"/proc/%d/status" % os.getpid()) == tuple(fields)


@given(st.lists(st.sampled_from([b"", b".", b"..", b"a", b"b.", b".c", b"..d"]), max_size=8))
def test_the_native_normpath_is_posixpaths(parts: list[bytes]) -> None:
    loop = native.native_loop()
    assert loop is not None
    for lead in (b"", b"/", b"//", b"///"):
        path = lead + b"/".join(parts)
        assert loop.normpath(path) == posixpath.normpath(path), path


def test_a_build_of_another_source_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert native.native_loop() is not None  # the positive control
    changed = tmp_path / "_loop.c"
    changed.write_bytes(native.SOURCE.read_bytes() + b"\n/* changed */\n")
    monkeypatch.setattr(native, "SOURCE", changed)
    assert native.native_loop() is None
    monkeypatch.setattr(native, "SOURCE", tmp_path / "missing.c")
    assert native.native_loop() is None


def test_the_python_loop_can_be_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(native.CHOICE, "python")
    assert native.native_loop() is None
