"""The supervisor's readers, on this process's own memory (process_vm_readv on itself):
bounded strings and argument lists, every sendmmsg message, loopback versus outside."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import socket
import stat
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.trace.addresses import is_loopback
from sandbox.trace.supervisor import DEFERRED, Recorder, _outcome, _resolved_in_root
from sandbox.trace.syscalls import AT_FDCWD, PATH_MAX

ME = os.getpid()


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.1", True),
        ("0.0.0.0", True),
        ("::1", True),
        ("::", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.1", False),
        ("169.254.169.254", False),
        ("2001:db8::1", False),
        ("8.8.8.8", False),
        ("0a0b0c", False),  # not an address at all: an unknown family's raw bytes
    ],
)
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_outcomes_are_the_kernels_answers_in_words() -> None:
    assert _outcome("connect", 0) == "connected"
    assert _outcome("bind", 0) == "bound"
    assert _outcome("connect", errno.ENETUNREACH) == "unreachable"
    assert _outcome("connect", errno.ECONNREFUSED) == "refused"
    assert _outcome("connect", errno.EINPROGRESS) == "in-progress"
    assert _outcome("bind", errno.EADDRNOTAVAIL) == "address-unavailable"
    assert _outcome("connect", errno.EAFNOSUPPORT) == "unsupported-family"
    assert _outcome("connect", errno.ENOBUFS) == "enobufs"


class Memory:
    """Buffers that stay alive (and at fixed addresses) for the length of a test."""

    def __init__(self) -> None:
        self.kept: list[object] = []

    def put(self, data: bytes) -> int:
        buffer = ctypes.create_string_buffer(data, len(data))
        self.kept.append(buffer)
        return ctypes.addressof(buffer)

    def argv(self, *items: bytes) -> int:
        pointers = (ctypes.c_uint64 * (len(items) + 1))(*(self.put(i + b"\0") for i in items))
        self.kept.append(pointers)
        return ctypes.addressof(pointers)


@pytest.fixture
def memory() -> Iterator[Memory]:
    yield Memory()


def test_a_path_without_its_nul_is_read_up_to_path_max(memory: Memory) -> None:
    recorder = Recorder()
    long = memory.put(b"/" + b"a" * (10 * PATH_MAX))  # no NUL for 40 KiB
    assert recorder._string(ME, long) == b"/" + b"a" * (PATH_MAX - 1)
    short = memory.put(b"/build/x\0garbage")
    assert recorder._string(ME, short) == b"/build/x"
    # A string across several growing chunks, found in the last one.
    mid = memory.put(b"m" * 3000 + b"\0")
    assert recorder._string(ME, mid) == b"m" * 3000


def test_an_exec_argv_is_kept_whole_or_cut_and_flagged(memory: Memory) -> None:
    recorder = Recorder()
    path = memory.put(b"/bin/true\0")
    arguments = [b"true", *(b"x" * 1000 for _ in range(100))]  # 100 KB
    recorder._exec(ME, AT_FDCWD, path, memory.argv(*arguments))
    assert recorder.events[-1][:4] == ["exec", ME, b"/bin/true", arguments]
    assert recorder.events[-1][6] is False
    kept = recorder.kept_bytes
    assert 100_000 < kept < 110_000
    # 4096 pointers to one 128 KiB string: 512 MiB if read naively; cut at 1 MiB.
    huge = memory.put(b"y" * (128 * 1024) + b"\0")
    pointers = (ctypes.c_uint64 * 4097)(*([huge] * 4096), 0)
    recorder._exec(ME, AT_FDCWD, path, ctypes.addressof(pointers))
    argv, cut = recorder.events[-1][3], recorder.events[-1][6]
    assert cut is True
    assert sum(map(len, argv)) < 1024 * 1024 < sum(map(len, argv)) + 128 * 1024 + 8 * 4096
    assert recorder.kept_bytes - kept < 1024 * 1024 + 4096


def sockaddr(host: str, port: int) -> bytes:
    return struct.pack("<H", socket.AF_INET) + struct.pack(">H", port) + socket.inet_aton(host)


def test_every_message_of_sendmmsg_is_inspected(memory: Memory) -> None:
    recorder = Recorder()
    names = [sockaddr("127.0.0.1", 9), sockaddr("192.0.2.7", 53), b"", sockaddr("10.1.1.1", 7)]
    vector = b""
    for name in names:
        address = memory.put(name + b"\0" * 8) if name else 0
        # struct mmsghdr: msg_name, msg_namelen, (pad), iov, iovlen, control, controllen,
        # flags, (pad), msg_len, (pad)
        vector += struct.pack("<QI4xQQQQi4xI4x", address, 16 if name else 0, 0, 0, 0, 0, 0, 0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        recorder.sendmmsg(ME, (sock.fileno(), memory.put(vector), len(names)))
        sent = [event[5:7] for event in recorder.events if event[0] == "net"]
        assert sent == [[b"127.0.0.1", 9], [b"192.0.2.7", 53], [b"10.1.1.1", 7]]
        assert {event[7] for event in recorder.events} == {"unobserved"}
        assert {event[4] for event in recorder.events} == {socket.SOCK_DGRAM}
        # Negative control: sendmsg looks at the first message only, as it should.
        recorder.events.clear()
        recorder.sendmsg(ME, (sock.fileno(), memory.put(vector)))
        assert [event[5] for event in recorder.events] == [b"127.0.0.1"]


def settled(recorder: Recorder) -> None:
    for thread in recorder.answering:
        thread.join()


def test_connect_is_made_by_the_supervisor_with_the_address_it_read(memory: Memory) -> None:
    recorder = Recorder()
    with socket.socket() as listener, socket.socket() as client, socket.socket() as closed:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        address = memory.put(sockaddr("127.0.0.1", port))
        # A blocking stream connect is answered by a thread; its result is the call's.
        assert recorder.connect(ME, (client.fileno(), address, 16)) == DEFERRED
        settled(recorder)
        assert client.getpeername() == ("127.0.0.1", port)  # made on the build's socket
        closed.setblocking(False)
        refused = memory.put(sockaddr("127.0.0.1", 1))
        answer = recorder.connect(ME, (closed.fileno(), refused, 16))
        assert answer is not None and answer[1] in (-errno.ECONNREFUSED, -errno.EINPROGRESS)
    events = [event for event in recorder.events if event[0] == "net"]
    assert next((e[2], e[5], e[6], e[7]) for e in events) == (
        "connect",
        b"127.0.0.1",
        port,
        "connected",
    )
    assert events[1][7] in ("refused", "in-progress")


def test_bind_is_made_by_the_supervisor_and_disconnects_record_nothing(memory: Memory) -> None:
    recorder = Recorder()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        assert recorder.bind(ME, (sock.fileno(), memory.put(sockaddr("127.0.0.1", 0)), 16)) == (
            0,
            0,
        )
        assert sock.getsockname()[0] == "127.0.0.1"
        unspec = memory.put(struct.pack("<H", socket.AF_UNSPEC) + bytes(14))
        assert recorder.connect(ME, (sock.fileno(), unspec, 16)) == (0, 0)
    assert [(e[2], e[7]) for e in recorder.events] == [("bind", "bound")]


def test_what_is_not_an_ip_socket_continues_and_unreadable_addresses_fail(memory: Memory) -> None:
    recorder = Recorder()
    with socket.socket(socket.AF_UNIX) as sock:
        path = memory.put(struct.pack("<H", socket.AF_UNIX) + b"/nonexistent\0")
        assert recorder.connect(ME, (sock.fileno(), path, 15)) is None  # the kernel's
    with socket.socket() as sock:
        # An address the supervisor cannot read is never read by the kernel either.
        assert recorder.connect(ME, (sock.fileno(), 8, 16)) == (0, -errno.EFAULT)
        assert recorder.connect(ME, (sock.fileno(), memory.put(bytes(16)), 200)) is None
    with open(os.devnull) as not_a_socket:
        answer = recorder.connect(ME, (not_a_socket.fileno(), memory.put(bytes(16)), 16))
        assert answer == (0, -errno.ENOTSOCK)
    assert recorder.events == []


_OUT_OF_FDS = """
import ctypes, json, os, resource, socket, struct
from sandbox.trace.supervisor import Recorder
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(1)
client = socket.socket()
client.setblocking(False)
port = listener.getsockname()[1]
address = ctypes.create_string_buffer(
    struct.pack("<HH4s8x", socket.AF_INET, socket.htons(port), socket.inet_aton("127.0.0.1")), 16
)
call = (client.fileno(), ctypes.addressof(address), 16)
recorder = Recorder()
few = min(256, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
resource.setrlimit(resource.RLIMIT_NOFILE, (few, few))
held = []
while True:
    try:
        held.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        break
full = recorder.connect(os.getpid(), call)
for fd in held:
    os.close(fd)
room = recorder.connect(os.getpid(), call)
print(json.dumps({"full": full, "room": room, "events": len(recorder.events)}))
"""


def test_a_connect_the_supervisor_cannot_see_fails() -> None:
    # Out of fds, the supervisor cannot take the build's socket to make the call itself:
    # letting the call continue would let it go through unrecorded.
    done = subprocess.run(
        [sys.executable, "-c", _OUT_OF_FDS], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["full"] == [0, -errno.EMFILE]
    # The positive control: with fds to spare, the call is made and recorded.
    assert found["room"] is not None and found["room"][1] in (0, -errno.EINPROGRESS)
    assert found["events"] == 1


def test_a_connect_from_a_thread_is_made_by_the_supervisor(memory: Memory) -> None:
    # The notification names the calling thread: a pidfd of the process (or none) would
    # let the call continue unrecorded, the kernel reading the address again.
    recorder = Recorder()
    answers: list[object] = []
    with socket.socket() as listener, socket.socket() as client:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client.setblocking(False)
        address = memory.put(sockaddr("127.0.0.1", listener.getsockname()[1]))

        def call() -> None:
            tid = threading.get_native_id()
            assert tid != ME
            answers.append(recorder.connect(tid, (client.fileno(), address, 16)))

        thread = threading.Thread(target=call)
        thread.start()
        thread.join()
    answer = answers[0] if answers else None
    assert isinstance(answer, tuple) and answer[1] in (0, -errno.EINPROGRESS), answer
    assert [e[2] for e in recorder.events if e[0] == "net"] == ["connect"]


def test_an_exec_is_settled_by_looking_at_the_process(memory: Memory) -> None:
    recorder = Recorder()
    path = memory.put(b"/nonexistent/program\0")
    recorder._exec(ME, AT_FDCWD, path, memory.argv(b"program"))
    event = recorder.events[-1]
    assert event[4] is None and ME in recorder._pending
    # This process still runs its old program: the exec failed.
    recorder.settle(ME)
    assert event[4] == "failed" and event[7] is None
    recorder._exec(ME, AT_FDCWD, path, memory.argv(b"program"))
    recorder.unsettled()
    assert recorder.events[-1][4] == "unknown"


@pytest.mark.skipif(os.geteuid() == 0, reason="root searches every directory")
def test_a_failed_exec_through_a_link_into_a_closed_directory_says_where(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    closed.mkdir()
    (tmp_path / "link").symlink_to(closed / "busybox")
    (tmp_path / "open").symlink_to(tmp_path / "elsewhere")
    closed.chmod(0)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        found = _resolved_in_root(ME, os.fsencode(tmp_path / "link"), libc)
        assert found == os.fsencode(closed / "busybox")
        # Negative controls: a missing target, and a path with no closed directory.
        assert _resolved_in_root(ME, os.fsencode(tmp_path / "open"), libc) is None
        assert stat.S_ISDIR(os.stat(tmp_path).st_mode)
    finally:
        closed.chmod(0o700)


def test_listings_of_one_directory_by_one_program_are_one_event() -> None:
    recorder = Recorder()
    fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(1000):
            recorder.getdents(ME, (fd,))
        kept = recorder.kept_bytes
        assert [e[0] for e in recorder.events] == ["listdir"] and recorder.events[0][3] == 1000
        recorder._execs += 1  # another program of the same process lists it anew
        recorder.getdents(ME, (fd,))
        assert len(recorder.events) == 2 and recorder.kept_bytes > kept
    finally:
        os.close(fd)


def test_the_byte_budget_counts_whole_paths(memory: Memory, tmp_path: Path) -> None:
    recorder = Recorder()
    deep = tmp_path / ("d" * 200) / ("e" * 200)
    deep.mkdir(parents=True)
    fd = os.open(deep, os.O_RDONLY | os.O_DIRECTORY)
    try:
        recorder.openat(ME, (fd, memory.put(b"x\0"), 0))
    finally:
        os.close(fd)
    # The directory the short name was relative to counts, not only the name.
    assert recorder.kept_bytes >= len(str(deep)) + 2


def test_a_pid_is_placed_again_once_its_process_has_exited() -> None:
    recorder = Recorder()
    recorder.know(ME)
    placed = [e for e in recorder.events if e[0] == "pid"]
    assert placed == [] or placed[0][1] == ME  # the test runs in no container: no NSpid
    recorder.events.append(["pid", ME, 5, 1, ME])  # as if it were in one
    recorder._known.add(ME)
    recorder._group[ME] = ME
    recorder._members[ME] = {ME}
    recorder.know(ME)
    assert sum(1 for e in recorder.events if e[0] == "pid") == 1  # known: not read again
    recorder.forget(ME)  # its exit_group: the host pid may come back as another process
    assert ME not in recorder._known and ME not in recorder._group
