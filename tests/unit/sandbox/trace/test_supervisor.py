"""The supervisor's readers, on this process's own memory (process_vm_readv on itself):
bounded strings and argument lists, every sendmmsg message, loopback versus outside."""

from __future__ import annotations

import ctypes
import os
import socket
import struct
from collections.abc import Iterator

import pytest

from sandbox.trace.addresses import is_loopback
from sandbox.trace.supervisor import Recorder, _outcome
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


def test_outcomes_in_a_namespace_with_only_lo() -> None:
    me = 1  # /proc/1/net/tcp has no listener on port 1 in any sane test machine
    assert _outcome(me, "connect", socket.SOCK_STREAM, "10.1.2.3", 80) == "unreachable"
    assert _outcome(me, "sendto", socket.SOCK_DGRAM, "8.8.8.8", 53) == "unreachable"
    assert _outcome(me, "connect", socket.SOCK_STREAM, "127.0.0.1", 1) == "refused"
    assert _outcome(me, "sendto", socket.SOCK_DGRAM, "127.0.0.1", 53) == "sent"
    assert _outcome(me, "bind", socket.SOCK_STREAM, "10.1.2.3", 80) == "address-unavailable"
    assert _outcome(me, "bind", socket.SOCK_STREAM, "127.0.0.1", 80) == "bound"
    assert _outcome(me, "connect", 0, "0a0b", 0) == "unsupported-family"


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
        assert sent == [["127.0.0.1", 9], ["192.0.2.7", 53], ["10.1.1.1", 7]]
        assert {event[4] for event in recorder.events} == {socket.SOCK_DGRAM}
        # Negative control: sendmsg looks at the first message only, as it should.
        recorder.events.clear()
        recorder.sendmsg(ME, (sock.fileno(), memory.put(vector)))
        assert [event[5] for event in recorder.events] == ["127.0.0.1"]
