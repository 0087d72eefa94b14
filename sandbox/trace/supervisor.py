"""The seccomp supervisor: receives a build's notification fd from runc and records
every traced syscall with its arguments.

Runs as its own process (``python -m sandbox.trace.supervisor``) so that nothing
else competes for its interpreter: every notification holds a build process until
it is answered. Most calls it only observes, answering "continue". ``connect`` and
``bind`` of an IP socket it makes itself, on a duplicate of the build's socket, with
the address it read once, and answers with the kernel's result: a second thread of
the build cannot change the address between the supervisor's read and the kernel's
(a "continue" would let the kernel read it again).

What a build can make it hold is bounded: a path is read up to PATH_MAX, one exec's
arguments up to ``ARGV_MAX_BYTES``, and past ``--max-events`` events or
``--max-bytes`` bytes of paths, arguments and addresses (every string counted each
time it is recorded, as the output repeats it) it records nothing more, only counts
what it dropped. Strings are read in growing chunks and joined once; repeated paths
share one copy; repeated listings of one directory by one process are one event.
Once the runner creates the end-of-build sentinel (``--sentinel``, a name the build
cannot know) it records nothing more: what follows is hermetic's hand-back.

Output (``--out``), JSON lines: a header ``{"container_pid": N}``, the events, and a
trailer ``{"notifications": N, "unreadable": N, "dropped": {kind: N},
"peak_memory_bytes": N, "ended": bool, "loop": "native" | "python"}``. Each event is a
list whose first item is its kind (see ``sandbox.trace.assemble``); a ``pid`` event
(container pid, parent, thread group of a host pid) comes before the first other event
of that pid, and again when a host pid is reused by a new process.
"""

from __future__ import annotations

import argparse
import array
import ctypes
import errno
import fcntl
import ipaddress
import json
import os
import resource
import select
import signal
import socket
import stat
import struct
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import suppress

from sandbox.trace.native import native_loop
from sandbox.trace.syscalls import (
    ARG_MAX_STRING,
    ARGV_MAX_BYTES,
    AT_FDCWD,
    PATH_MAX,
    numbers,
)

# Imports for type checkers only: the supervisor's start-up is on every traced build's
# path (typing and pathlib would be a fifth of it).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from types import FrameType
    from typing import Any

SECCOMP_IOCTL_NOTIF_RECV = 0xC0502100
SECCOMP_IOCTL_NOTIF_SEND = 0xC0182101
SECCOMP_IOCTL_NOTIF_ID_VALID = 0x40082102
SET_FLAGS = 0x40082104  # SECCOMP_IOCTL_NOTIF_SET_FLAGS
SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1
_CONTINUE = SECCOMP_USER_NOTIF_FLAG_CONTINUE
SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP = 1
_NOTIF = struct.Struct("<QIIi4x8x6Q")  # id, pid, flags, nr, (arch), (ip), args[6]
_RESP = struct.Struct("<QqiI")  # id, val, error, flags
_U64 = struct.Struct("<Q")
_SYS_PIDFD_GETFD = 438
_PIDFD_THREAD = os.O_EXCL  # Linux 6.9+: a pidfd of that very thread
_SYS_OPENAT2 = 437
_READ_MAX = 1 << 16
_MMSGHDR = 64  # struct mmsghdr on 64-bit: msghdr (56) + msg_len (4) + padding
_UIO_MAXIOV = 1024  # the kernel's cap on sendmmsg's vlen
_SOCKADDR_MAX = 128  # sizeof(struct sockaddr_storage): a longer address is EINVAL
_EVENT_OVERHEAD = 128  # bytes an event costs besides its strings, for the byte budget
_SO_DOMAIN = 39
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_IN_ROOT = 0x10
_MAX_LINKS = 40
_AT_REMOVEDIR = 0x200
_RENAME_EXCHANGE = 2
_IP = (socket.AF_INET, socket.AF_INET6)
# Held /proc/PID/stat fds past which those of ended processes are closed (a process that
# leaves by exit(2) or a signal makes no traced call that would settle its exec).
_HELD_STATS = 256
# The calls the native loop handles itself (every other goes to Recorder.step): those a
# build makes by the thousand.
_NATIVE_CALLS = (
    "execve",
    "exit_group",
    "open",
    "openat",
    "unlink",
    "unlinkat",
    "rmdir",
    "mkdir",
    "mkdirat",
    "chmod",
    "fchmodat",
    "fchmodat2",
    "getdents64",
)
# A handler's answer when a thread of the supervisor answers later (a positive error is
# nothing the kernel would take, so it is never a real answer).
DEFERRED = (0, 1)


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _OpenHow(ctypes.Structure):
    _fields_ = [
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    ]


class _Stop(Exception):
    """SIGTERM: write what was recorded and leave."""


def _on_term(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def receive_notify_fd(listener: socket.socket) -> tuple[int, dict[str, Any]]:
    """Accept runc's connection; return the notification fd and the container state."""
    connection, _ = listener.accept()
    with connection:
        fds = array.array("i")
        message, ancillary, _, _ = connection.recvmsg(1 << 16, socket.CMSG_LEN(4 * fds.itemsize))
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    if not fds:
        raise RuntimeError("runc sent no seccomp notification fd")
    state: dict[str, Any] = json.loads(message or b"{}")
    return fds[0], state


def namespace_depth(init_pid: int, default: int) -> int:
    """Where the pid namespace of ``init_pid`` (the container's first process, pid 1
    there) is in the NSpid lists of this /proc: 1 when /proc is the namespace just above
    it, as on a host; ``default`` when it cannot be read."""
    try:
        with open(f"/proc/{init_pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"NSpid:"):
                    ids = line.split()[1:]
                    return len(ids) - 1 if len(ids) >= 2 and ids[-1] == b"1" else default
    except OSError:
        pass
    return default


def answer(notify_fd: int, nid: int, value: int = 0, error: int = 0, flags: int = 0) -> None:
    """Answer notification ``nid``; the caller may be gone (then nothing happens)."""
    with suppress(FileNotFoundError):
        fcntl.ioctl(notify_fd, SECCOMP_IOCTL_NOTIF_SEND, _RESP.pack(nid, value, error, flags))


class Recorder:
    """Turns notifications into events. Every handler runs while the caller waits and
    returns None (let the call continue) or ``(value, -errno)`` to answer with."""

    def __init__(
        self,
        *,
        max_events: int = 1 << 62,
        max_bytes: int = 1 << 62,
        sentinel: bytes | None = None,
        notify_fd: int | None = None,
    ) -> None:
        self.events: list[list[Any]] = []
        self.unreadable = 0
        self.notifications = 0
        self.kept_bytes = 0  # strings recorded, plus a fixed cost per event
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.dropped: dict[str, int] = {}  # by syscall name, once a cap was reached
        # Work that can wait for the answer: done while the build goes on (on a free CPU).
        self.later: list[Callable[[], None]] = []
        self.sentinel = sentinel
        self.ended = False  # the runner created the sentinel: the build is over
        self.loop = "python"  # which loop recorded: "native" once supervise chose it
        self.notify_fd = notify_fd
        self.depth = 1  # where the container's pid namespace is in NSpid (namespace_depth)
        self.current = 0  # the notification being handled (its id)
        self.answering: list[threading.Thread] = []  # connects answered by a thread
        self._known: set[int] = set()
        self._group: dict[int, int] = {}  # host tid -> thread group
        self._members: dict[int, set[int]] = {}  # thread group -> its known tids
        # Execs not yet settled, by tid: the event, the program before, its
        # /proc/PID/stat fd, its thread group. At most one per thread group (_exec).
        self._pending: dict[int, tuple[list[Any], bytes | None, int | None, int]] = {}
        self._pending_in: dict[int, int] = {}  # thread group -> the tid with a pending exec
        self._sweep_at = _HELD_STATS  # how many pending execs make a sweep of ended ones
        self._interned: dict[bytes, bytes] = {}  # one copy of each path kept
        self._listings: dict[tuple[int, bytes], tuple[int, list[Any]]] = {}
        self._execs = 0  # execs seen: a listing is merged only within one program
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._readv = self._libc.process_vm_readv
        self._readv.restype = ctypes.c_ssize_t
        self._syscall = self._libc.syscall
        self._syscall.restype = ctypes.c_long
        self._buffer = ctypes.create_string_buffer(_READ_MAX)
        self._local = _IoVec(ctypes.addressof(self._buffer), 0)
        self._remote = _IoVec(0, 0)
        self._local_ref = ctypes.byref(self._local)
        self._remote_ref = ctypes.byref(self._remote)
        self._buffer_address = ctypes.addressof(self._buffer)
        pair = _IoVec * 2
        self._pair_local = pair(
            _IoVec(self._buffer_address, 512), _IoVec(self._buffer_address + 512, 512)
        )
        self._pair_remote = pair(_IoVec(0, 512), _IoVec(0, 512))
        nr = numbers()
        self.handlers: dict[int, Callable[[int, tuple[int, ...]], tuple[int, int] | None]] = {
            nr["execve"]: self.execve,
            nr["execveat"]: self.execveat,
            nr["exit_group"]: self.exit_group,
            nr["open"]: self.open,
            nr["creat"]: self.creat,
            nr["openat"]: self.openat,
            nr["openat2"]: self.openat2,
            nr["unlink"]: self.unlink,
            nr["rmdir"]: self.rmdir,
            nr["mkdir"]: self.mkdir,
            nr["unlinkat"]: self.unlinkat,
            nr["mkdirat"]: self.mkdirat,
            nr["rename"]: self.rename,
            nr["renameat"]: self.renameat,
            nr["renameat2"]: self.renameat2,
            nr["link"]: self.link,
            nr["linkat"]: self.linkat,
            nr["symlink"]: self.symlink,
            nr["symlinkat"]: self.symlinkat,
            nr["mknod"]: self.mknod,
            nr["mknodat"]: self.mknodat,
            nr["truncate"]: self.truncate,
            nr["chmod"]: self.chmod,
            nr["fchmod"]: self.fchmod,
            nr["fchmodat"]: self.fchmodat,
            nr["fchmodat2"]: self.fchmodat,
            nr["getdents"]: self.getdents,
            nr["getdents64"]: self.getdents,
            nr["getrandom"]: self.getrandom,
            nr["uname"]: self.uname,
            nr["sched_getaffinity"]: self.cpu_count,
            nr["connect"]: self.connect,
            nr["bind"]: self.bind,
            nr["sendto"]: self.sendto,
            nr["sendmsg"]: self.sendmsg,
            nr["sendmmsg"]: self.sendmmsg,
        }
        self._names = {number: name for name, number in nr.items()}
        self.exit_nr = nr["exit_group"]

    def native_calls(self) -> dict[int, str]:
        """The calls the native loop handles itself, by number: the common ones (every
        other goes to :meth:`step`)."""
        nr = numbers()
        return {nr[name]: name for name in _NATIVE_CALLS if name in nr}

    # --- one notification -------------------------------------------------------------

    def step(self, nid: int, pid: int, nr: int, args: tuple[int, ...]) -> None:
        """Notification ``nid`` from start to end: record it, answer it, then do the work
        that could wait for the answer."""
        self.notifications += 1
        notify_fd = self.notify_fd
        if notify_fd is None:
            raise RuntimeError("step needs the notification fd")
        if self.ended:
            # The runner's hand-back: nothing of the build runs any more.
            answer(notify_fd, nid, 0, 0, _CONTINUE)
            return
        if len(self.events) >= self.max_events or self.kept_bytes >= self.max_bytes:
            # Full: answer at once and only count (the trace says it was cut).
            name = self._names.get(nr, str(nr))
            self.dropped[name] = self.dropped.get(name, 0) + 1
            answer(notify_fd, nid, 0, 0, _CONTINUE)
            return
        if pid not in self._known:
            if nr == self.exit_nr:
                # A process whose first traced call is its exit ran no program and has no
                # children left to place: its exit status alone is not worth a /proc read.
                self._known.add(pid)
            else:
                self.know(pid)
        if self._pending and pid in self._pending:
            self.settle(pid)
        reply = self.handle(nid, pid, nr, args)
        if reply is None:
            answer(notify_fd, nid, 0, 0, _CONTINUE)
        elif reply != DEFERRED:
            answer(notify_fd, nid, reply[0], reply[1])
        if nr == self.exit_nr:
            self.forget(pid)
        self.run_later()

    def handle(self, nid: int, pid: int, nr: int, args: tuple[int, ...]) -> tuple[int, int] | None:
        """The handler of call ``nr``, with what it could not read recorded as such."""
        self.current = nid
        try:
            return self.handlers[nr](pid, args)
        except (OSError, KeyError, ValueError, struct.error) as e:
            self.unreadable += 1
            self.events.append(["unreadable", pid, nr, getattr(e, "errno", None) or str(e)])
            return None

    def run_later(self) -> None:
        """The work the handlers left for after the answer."""
        if self.later:
            for work in self.later:
                with suppress(OSError):
                    work()
            self.later.clear()

    # --- reading the traced process -------------------------------------------------

    def _read(self, pid: int, address: int, size: int) -> bytes:
        """Bytes of the traced process's memory: one process_vm_readv, no fd to open."""
        size = min(size, _READ_MAX)
        self._local.iov_len = size
        self._remote.iov_base = address
        self._remote.iov_len = size
        count = self._readv(pid, self._local_ref, 1, self._remote_ref, 1, 0)
        if count < 0:
            error = ctypes.get_errno()
            raise OSError(error, os.strerror(error))
        return ctypes.string_at(self._buffer_address, count)

    def _read_two(self, pid: int, first: int, second: int) -> tuple[bytes, bytes]:
        """512 bytes at each of two addresses, in one call (an exec's path and argv)."""
        local, remote = self._pair_local, self._pair_remote
        remote[0].iov_base, remote[1].iov_base = first, second
        count = self._readv(pid, local, 2, remote, 2, 0)
        if count < 0:
            error = ctypes.get_errno()
            raise OSError(error, os.strerror(error))
        data = ctypes.string_at(self._buffer_address, min(count, 1024))
        # A short read stops at the first unreadable byte: the second part is then
        # incomplete, and read again on its own by the caller.
        return data[:512], data[512:] if count == 1024 else b""

    def _string(self, pid: int, address: int, limit: int = PATH_MAX) -> bytes:
        """A NUL-terminated string, at most ``limit`` bytes of it: chunks that grow
        fourfold, each searched once, joined once."""
        chunks: list[bytes] = []
        total, size = 0, 512
        while total < limit:
            data = self._read(pid, address + total, min(size, limit - total))
            if not data:
                break
            end = data.find(b"\0")
            if end >= 0:
                chunks.append(data[:end])
                break
            chunks.append(data)
            total += len(data)
            size = min(size * 4, _READ_MAX)
        return b"".join(chunks)

    def _strings(self, pid: int, address: int, first: bytes = b"") -> tuple[list[bytes], bool]:
        """A NULL-terminated array of strings (argv), read in as few calls as possible,
        and whether it was cut at ``ARGV_MAX_BYTES``.

        ``first`` may hold the array's first bytes, already read. A NULL array is
        recorded as the build passed it, empty (Linux 5.18+ runs the program with
        ``[""]``).
        """
        if not address:
            return [], False
        pointers: list[int] = []
        block_size = 8 * 64
        cut = False
        while True:
            if 8 * len(pointers) >= ARGV_MAX_BYTES:
                cut = True
                break
            block = first or self._read(pid, address + 8 * len(pointers), block_size)
            first = b""
            chunk = [p for (p,) in _U64.iter_unpack(block[: len(block) // 8 * 8])]
            if 0 in chunk:
                pointers.extend(chunk[: chunk.index(0)])
                break
            pointers.extend(chunk)
            if len(block) < block_size:
                break
            block_size = min(block_size * 4, _READ_MAX)
        if not pointers:
            return [], cut
        budget = ARGV_MAX_BYTES - 8 * len(pointers)
        # Programs usually keep their argument strings side by side: read them at once.
        base = min(pointers)
        span = min(max(pointers) - base + 256, _READ_MAX)
        data = self._read(pid, base, span)
        out = []
        for pointer in pointers:
            if budget <= 0:
                cut = True
                break
            start = pointer - base
            end = data.find(b"\0", start) if 0 <= start < len(data) else -1
            if end >= 0:
                text = data[start:end]
            else:
                text = self._string(pid, pointer, min(ARG_MAX_STRING, budget))
            out.append(text)
            budget -= len(text) + 1
        return out, cut

    def _dir(self, pid: int, dirfd: int) -> bytes:
        dirfd = ctypes.c_int32(dirfd & 0xFFFFFFFF).value
        if dirfd == AT_FDCWD:
            return os.readlink(b"/proc/%d/cwd" % pid)
        return os.readlink(b"/proc/%d/fd/%d" % (pid, dirfd))

    def _kept(self, text: bytes) -> bytes:
        """``text`` as recorded: counted in the byte budget, one copy of each kept."""
        self.kept_bytes += len(text) + _EVENT_OVERHEAD
        return self._interned.setdefault(text, text)

    def _path(self, pid: int, dirfd: int, address: int) -> bytes:
        path = self._string(pid, address)
        directory = b"" if path.startswith(b"/") else self._dir(pid, dirfd)
        return self._kept(_absolute(path, directory))

    def know(self, pid: int) -> None:
        """Record the container pid, parent and thread group of a host pid (and of its
        unknown ancestors), before the first event of that pid.

        The process waits for its answer meanwhile, so its /proc entry is there.
        """
        while pid not in self._known:
            self._known.add(pid)
            try:
                fields = _placement(pid)
            except OSError:
                return
            if fields is None:
                return
            tgid, ppid, ids = int(fields[0]), int(fields[1]), fields[2].split()
            if len(ids) <= self.depth:
                return  # a host process (conmon): above the container
            self._group[pid] = tgid
            self._members.setdefault(tgid, set()).add(pid)
            # NSpid lists the pid from /proc's namespace down: the container's is at its
            # depth (a namespace the build nests is further down, its pids not unique).
            self.events.append(["pid", pid, int(ids[self.depth]), ppid, tgid])
            pid = ppid

    def forget(self, pid: int) -> None:
        """A thread group ended (exit_group): its host pids may be reused by processes
        that must be placed anew."""
        group = self._group.get(pid, pid)
        for member in self._members.pop(group, {pid}) | {pid}:
            self._known.discard(member)
            self._group.pop(member, None)
            # An exec of one of its threads that no call of that thread settled: what
            # a later process with the same pid shows says nothing of it.
            self._unknown(member)

    # --- execs: which ran --------------------------------------------------------------

    @staticmethod
    def _image(stat_fd: int | None) -> bytes | None:
        """What identifies the process's current program: where the kernel put its code,
        stack, arguments and environment (/proc/PID/stat, readable even after a change
        of uid). A successful exec makes a new memory map, and with it new values (the
        stack's place is random); a failed one leaves them as they were. (Not its name:
        a process can change that itself, prctl(PR_SET_NAME).)

        ``stat_fd`` stays bound to the process (its pid) it was opened for: once that
        process has ended, it shows no program, whoever has the pid number by then.
        """
        if stat_fd is None:
            return None
        try:
            text = os.pread(stat_fd, 4096, 0)
        except OSError:
            return None
        fields = text.rpartition(b")")[2].split()
        # The stack's start is 0 when the values are hidden from us (then code reads
        # "1 1") or the process has no memory any more (it ended).
        if len(fields) < 49 or fields[25] == b"0":
            return None
        return b" ".join([*fields[23:26], *fields[45:49]])

    def resolved(self, pid: int, path: bytes) -> bytes | None:
        """Where a failed exec's path leads (:func:`_resolved_in_root`)."""
        return _resolved_in_root(pid, path, self._libc)

    def settle(self, pid: int) -> None:
        """``pid`` makes its next traced call after an exec: did the exec replace its
        program? Observed in the process itself, never looked up by path."""
        event, before, stat_fd, _ = self._take(pid)
        after = self._image(stat_fd)
        _close(stat_fd)
        if before is None or after is None:
            event[4] = "unknown"
        elif after != before:
            event[4] = "ran"
        else:
            event[4] = "failed"
            event.append(self.resolved(pid, event[2]))

    def _take(self, pid: int) -> tuple[list[Any], bytes | None, int | None, int]:
        """``pid``'s pending exec, no longer pending (KeyError when it has none)."""
        pending = self._pending.pop(pid)
        if self._pending_in.get(pending[3]) == pid:
            del self._pending_in[pending[3]]
        return pending

    def _unknown(self, pid: int) -> None:
        """``pid``'s pending exec can no longer be settled: whether it ran is not known."""
        if pid in self._pending:
            event, _, stat_fd, _ = self._take(pid)
            event[4] = "unknown"
            _close(stat_fd)

    def _sweep(self) -> None:
        """Close the held stat fds of processes that ended without a traced call after
        their exec (exit(2), a signal): their execs stay unknown. Then sweep again only
        once as many more are pending, so that the cost per exec stays constant."""
        for pid, (_, _, stat_fd, _) in list(self._pending.items()):
            if self._image(stat_fd) is None:
                self._unknown(pid)
        self._sweep_at = max(_HELD_STATS, 2 * len(self._pending))

    def unsettled(self) -> None:
        """Execs whose process made no traced call after them (killed, or it left by
        the exit of its last thread): whether they ran is not known."""
        for event, _, stat_fd, _ in self._pending.values():
            event[4] = "unknown"
            _close(stat_fd)
        self._pending.clear()
        self._pending_in.clear()

    # --- handlers: (pid, args) -> None or an answer ----------------------------------

    def execve(self, pid: int, a: tuple[int, ...]) -> None:
        self._exec(pid, AT_FDCWD, a[0], a[1])

    def execveat(self, pid: int, a: tuple[int, ...]) -> None:
        self._exec(pid, a[0], a[1], a[2])

    def _exec(self, pid: int, dirfd: int, path_address: int, argv_address: int) -> None:
        # A successful exec gives the thread group's leader pid to the thread that made
        # it: what another thread's pending exec shows from now on may be this one's.
        # (Before any read: the exec may succeed even if the reads here fail.)
        group = self._group.get(pid, pid)
        other = self._pending_in.get(group)
        if other is not None:
            self._unknown(other)
        self._unknown(pid)
        head, pointers = self._read_two(pid, path_address, argv_address)
        end = head.find(b"\0")
        path = head[:end] if end >= 0 else self._string(pid, path_address)
        path = _absolute(path, self._dir(pid, dirfd) if not path.startswith(b"/") else b"")
        argv, cut = self._strings(pid, argv_address, pointers)
        self.kept_bytes += len(path) + sum(map(len, argv)) + 8 * len(argv) + _EVENT_OVERHEAD
        event: list[Any] = ["exec", pid, path, argv, None, [], cut]
        self.events.append(event)
        self._execs += 1
        if len(self._pending) >= self._sweep_at:
            self._sweep()
        stat_fd = self._stat_of_caller(pid)
        self._pending[pid] = (event, self._image(stat_fd), stat_fd, group)
        self._pending_in[group] = pid
        if stat_fd is not None:
            self.later.append(lambda: self._outputs_of(event, pid, stat_fd))

    def _stat_of_caller(self, pid: int) -> int | None:
        """The caller's /proc/PID/stat, open; None when it is gone. Opened by pid while
        the notification is valid, so it is the caller's, and stays bound to it."""
        path = b"/proc/%d/stat" % pid
        try:
            try:
                stat_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                if e.errno != errno.EMFILE:
                    raise
                self._sweep()  # out of fds: those of ended processes go first
                stat_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        if self.notify_fd is not None:
            try:
                fcntl.ioctl(self.notify_fd, SECCOMP_IOCTL_NOTIF_ID_VALID, _U64.pack(self.current))
            except OSError:
                os.close(stat_fd)
                return None
        return stat_fd

    def _caller_pidfd(self, pid: int) -> int:
        """A pidfd of the caller of the notification being handled: of that thread
        (Linux 6.9+); before, of its thread group (whose fd table its threads share).

        Raises:
            OSError: the caller is gone.
        """
        try:
            pidfd = os.pidfd_open(pid, _PIDFD_THREAD)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            pidfd = os.pidfd_open(self._group.get(pid, pid))
        if self.notify_fd is not None:
            # The pid could have been reused since the notification: only while the
            # notification is valid is the pidfd the caller's.
            try:
                fcntl.ioctl(self.notify_fd, SECCOMP_IOCTL_NOTIF_ID_VALID, _U64.pack(self.current))
            except OSError:
                os.close(pidfd)
                raise
        return pidfd

    def _outputs_of(self, event: list[Any], pid: int, stat_fd: int) -> None:
        """A shell opens "> file" itself and hands the fd to the program it runs: the
        program's stdout and stderr say which files it writes.

        Read after the answer, through /proc (a copy of the fd would be a reference of
        the supervisor's, and its close could be the last one: a socket's linger, a
        FUSE flush). Kept only if the process's own ``stat_fd`` still reads after them:
        it had not ended, so its pid was not another's.
        """
        targets = []
        for fd in (1, 2):
            with suppress(OSError):
                targets.append(os.readlink(b"/proc/%d/fd/%d" % (pid, fd)))
        try:
            os.pread(stat_fd, 1, 0)
        except OSError:
            return
        event[5].extend(self._kept(target) for target in targets)

    def exit_group(self, pid: int, a: tuple[int, ...]) -> None:
        self.events.append(["exit", pid, a[0] & 0xFF])

    def openat(self, pid: int, a: tuple[int, ...]) -> None:
        path = self._path(pid, a[0], a[1])
        if path == self.sentinel:
            self.ended = True
        self.events.append(["open", pid, path, a[2]])

    def openat2(self, pid: int, a: tuple[int, ...]) -> None:
        (flags,) = _U64.unpack(self._read(pid, a[2], 8))
        self.events.append(["open", pid, self._path(pid, a[0], a[1]), flags])

    def open(self, pid: int, a: tuple[int, ...]) -> None:
        self.events.append(["open", pid, self._path(pid, AT_FDCWD, a[0]), a[1]])

    def creat(self, pid: int, a: tuple[int, ...]) -> None:
        self.events.append(["open", pid, self._path(pid, AT_FDCWD, a[0]), 0o1101])

    def unlink(self, pid: int, a: tuple[int, ...]) -> None:
        self.events.append(["unlink", pid, self._path(pid, AT_FDCWD, a[0])])

    def rmdir(self, pid: int, a: tuple[int, ...]) -> None:
        self.events.append(["rmdir", pid, self._path(pid, AT_FDCWD, a[0])])

    def unlinkat(self, pid: int, a: tuple[int, ...]) -> None:
        kind = "rmdir" if a[2] & _AT_REMOVEDIR else "unlink"
        self.events.append([kind, pid, self._path(pid, a[0], a[1])])

    def mkdir(self, pid: int, a: tuple[int, ...]) -> None:
        self.events.append(["mkdir", pid, self._path(pid, AT_FDCWD, a[0])])

    def mkdirat(self, pid: int, a: tuple[int, ...]) -> None:
        self.events.append(["mkdir", pid, self._path(pid, a[0], a[1])])

    def rename(self, pid: int, a: tuple[int, ...]) -> None:
        old = self._path(pid, AT_FDCWD, a[0])
        self.events.append(["rename", pid, old, self._path(pid, AT_FDCWD, a[1]), 0])

    def renameat(self, pid: int, a: tuple[int, ...]) -> None:
        old = self._path(pid, a[0], a[1])
        self.events.append(["rename", pid, old, self._path(pid, a[2], a[3]), 0])

    def renameat2(self, pid: int, a: tuple[int, ...]) -> None:
        old = self._path(pid, a[0], a[1])
        exchange = a[4] & _RENAME_EXCHANGE
        self.events.append(["rename", pid, old, self._path(pid, a[2], a[3]), exchange])

    def link(self, pid: int, a: tuple[int, ...]) -> None:
        old = self._path(pid, AT_FDCWD, a[0])
        self.events.append(["link", pid, old, self._path(pid, AT_FDCWD, a[1])])

    def linkat(self, pid: int, a: tuple[int, ...]) -> None:
        old = self._path(pid, a[0], a[1])
        self.events.append(["link", pid, old, self._path(pid, a[2], a[3])])

    def symlink(self, pid: int, a: tuple[int, ...]) -> None:
        self.events.append(["symlink", pid, self._path(pid, AT_FDCWD, a[1])])

    def symlinkat(self, pid: int, a: tuple[int, ...]) -> None:
        self.events.append(["symlink", pid, self._path(pid, a[1], a[2])])

    def mknod(self, pid: int, a: tuple[int, ...]) -> None:
        self.events.append(["mknod", pid, self._path(pid, AT_FDCWD, a[0])])

    def mknodat(self, pid: int, a: tuple[int, ...]) -> None:
        self.events.append(["mknod", pid, self._path(pid, a[0], a[1])])

    def truncate(self, pid: int, a: tuple[int, ...]) -> None:
        self.events.append(["truncate", pid, self._path(pid, AT_FDCWD, a[0])])

    def chmod(self, pid: int, a: tuple[int, ...]) -> None:
        self.events.append(["chmod", pid, self._path(pid, AT_FDCWD, a[0])])

    def fchmodat(self, pid: int, a: tuple[int, ...]) -> None:
        self.events.append(["chmod", pid, self._path(pid, a[0], a[1])])

    def fchmod(self, pid: int, a: tuple[int, ...]) -> None:
        self.events.append(["chmod", pid, self._kept(self._dir(pid, a[0]))])

    def getdents(self, pid: int, a: tuple[int, ...]) -> None:
        directory = self._dir(pid, a[0])
        key = (pid, directory)
        found = self._listings.get(key)
        if found is not None and found[0] == self._execs:
            found[1][3] += 1  # the same program listing the same directory again
            return
        event = ["listdir", pid, self._kept(directory), 1]
        self._listings[key] = (self._execs, event)
        self.events.append(event)

    def getrandom(self, pid: int, a: tuple[int, ...]) -> None:
        self.events.append(["getrandom", pid, a[1], a[2]])

    def uname(self, pid: int, a: tuple[int, ...]) -> None:
        self.events.append(["uname", pid])

    def cpu_count(self, pid: int, a: tuple[int, ...]) -> None:
        self.events.append(["cpus", pid])

    # --- network ------------------------------------------------------------------------

    def connect(self, pid: int, a: tuple[int, ...]) -> tuple[int, int] | None:
        return self._address_call(pid, "connect", a[0], a[1], a[2])

    def bind(self, pid: int, a: tuple[int, ...]) -> tuple[int, int] | None:
        return self._address_call(pid, "bind", a[0], a[1], a[2])

    def _address_call(
        self, pid: int, call: str, fd: int, address: int, length: int
    ) -> tuple[int, int] | None:
        """connect or bind, made here on a duplicate of the socket with the address read
        once; an AF_UNIX or AF_NETLINK socket's call continues (a path is looked up in
        the caller's root and directory, and neither reaches a network)."""
        length &= 0xFFFFFFFF
        if length > _SOCKADDR_MAX:
            return None  # EINVAL from the kernel, whatever the memory holds
        try:
            raw = self._read(pid, address, length) if length else b""
        except OSError:
            raw = b""
        if len(raw) < length:
            return (0, -errno.EFAULT)  # never let the kernel read what was unreadable here
        socket_ = self._socket(pid, fd)
        if isinstance(socket_, int):
            return (0, -socket_) if socket_ else None
        duplicate, domain, kind = socket_
        if domain not in _IP:
            os.close(duplicate)
            return None
        target = _destination(raw, domain, call)
        if target is None:  # connect(AF_UNSPEC): a disconnect, it reaches nothing
            return self._make(duplicate, call, raw, None)
        family, host, port = target
        event = ["net", pid, call, family, kind, self._kept(host.encode()), port, "pending"]
        self.events.append(event)
        blocking = not fcntl.fcntl(duplicate, fcntl.F_GETFL) & os.O_NONBLOCK
        if call == "connect" and kind == socket.SOCK_STREAM and blocking:
            # May wait for a listener's backlog (for as long as the socket's timeout):
            # answered by a thread, so that the rest of the build is not held meanwhile.
            nid, notify_fd = self.current, self.notify_fd
            thread = threading.Thread(
                target=self._connect_later, args=(nid, notify_fd, duplicate, raw, event)
            )
            thread.daemon = True
            thread.start()
            self.answering = [t for t in self.answering if t.is_alive()] + [thread]
            return DEFERRED
        return self._make(duplicate, call, raw, event)

    def _make(
        self, duplicate: int, call: str, raw: bytes, event: list[Any] | None
    ) -> tuple[int, int]:
        """The call itself, on the duplicate; its result is the build's."""
        function = self._libc.connect if call == "connect" else self._libc.bind
        try:
            result = function(duplicate, raw, len(raw))
            error = ctypes.get_errno() if result < 0 else 0
        finally:
            os.close(duplicate)
        if event is not None:
            event[7] = _outcome(call, error)
        return (0, -error) if error else (0, 0)

    def _connect_later(
        self, nid: int, notify_fd: int | None, duplicate: int, raw: bytes, event: list[Any]
    ) -> None:
        libc = ctypes.CDLL(None, use_errno=True)  # errno is per thread and per library
        try:
            result = libc.connect(duplicate, raw, len(raw))
            error = ctypes.get_errno() if result < 0 else 0
        finally:
            os.close(duplicate)
        event[7] = _outcome("connect", error)
        if notify_fd is not None:
            answer(notify_fd, nid, 0, -error)

    def sendto(self, pid: int, a: tuple[int, ...]) -> None:
        if a[4]:
            self._sent(pid, "sendto", a[0], [(a[4], a[5])])

    def sendmsg(self, pid: int, a: tuple[int, ...]) -> None:
        header = self._read(pid, a[1], 12)
        name, length = struct.unpack_from("<QI", header)
        if name:
            self._sent(pid, "sendmsg", a[0], [(name, length)])

    def sendmmsg(self, pid: int, a: tuple[int, ...]) -> None:
        """Every message's destination: each may name its own (the kernel sends up to
        UIO_MAXIOV of them in one call)."""
        count = min(a[2] & 0xFFFFFFFF, _UIO_MAXIOV)
        if not count:
            return
        vector = self._read(pid, a[1], count * _MMSGHDR)
        names = [
            struct.unpack_from("<QI", vector, offset)
            for offset in range(0, len(vector) - 11, _MMSGHDR)
        ]
        self._sent(pid, "sendmmsg", a[0], [(name, length) for name, length in names if name])

    def _sent(self, pid: int, call: str, fd: int, names: list[tuple[int, int]]) -> None:
        """Sends with a destination continue: their data is the kernel's to copy. The
        address recorded is the one read here; the kernel's count of packets refused for
        want of a route (read by the session) is what a changed address cannot hide."""
        if not names:
            return
        socket_ = self._socket(pid, fd)
        if isinstance(socket_, int):
            return
        duplicate, domain, kind = socket_
        os.close(duplicate)
        if domain not in _IP:
            return
        for name, length in names:
            raw = self._read(pid, name, min(length & 0xFFFFFFFF, _SOCKADDR_MAX))
            target = _destination(raw, domain, call)
            if target is not None:
                family, host, port = target
                host_kept = self._kept(host.encode())
                self.events.append(["net", pid, call, family, kind, host_kept, port, "unobserved"])

    def _socket(self, pid: int, fd: int) -> tuple[int, int, int] | int:
        """A duplicate of the caller's socket ``fd`` with its domain and type, or the
        errno the call fails with (0: the process is gone)."""
        try:
            pidfd = self._caller_pidfd(pid)
        except OSError as e:
            if e.errno in (errno.ESRCH, errno.ENOENT):
                return 0
            return e.errno or errno.EMFILE  # no evidence (out of fds): the call fails
        try:
            copy = self._syscall(_SYS_PIDFD_GETFD, pidfd, fd & 0xFFFFFFFF, 0)
            if copy < 0:
                return ctypes.get_errno() or errno.EBADF
        finally:
            os.close(pidfd)
        value, size = ctypes.c_int(0), ctypes.c_uint32(4)
        found = []
        for option in (_SO_DOMAIN, socket.SO_TYPE):
            if self._libc.getsockopt(
                copy, socket.SOL_SOCKET, option, ctypes.byref(value), ctypes.byref(size)
            ):
                error = ctypes.get_errno()
                os.close(copy)
                return error or errno.ENOTSOCK
            found.append(value.value)
        return copy, found[0], found[1]


def _destination(raw: bytes, domain: int, call: str) -> tuple[int, str, int] | None:
    """(family, address, port) as the kernel takes ``raw`` on a socket of ``domain``;
    None when it names no destination (an AF_UNSPEC connect disconnects; an IPv6
    socket's AF_UNSPEC send has no address).

    An IPv4 socket takes AF_UNSPEC as AF_INET (BSD compatibility). Anything the kernel
    would not take as an IP address is kept as hex: an attempt to reach outside.
    """
    if len(raw) < 2:
        return (0, raw.hex(), 0)
    (family,) = struct.unpack_from("<H", raw)
    if family == socket.AF_UNSPEC:
        if call == "connect" or domain == socket.AF_INET6:
            return None
        family = socket.AF_INET
    if family == socket.AF_INET and len(raw) >= 8:
        port = struct.unpack_from(">H", raw, 2)[0]
        return family, str(ipaddress.IPv4Address(raw[4:8])), port
    if family == socket.AF_INET6 and len(raw) >= 24:
        port = struct.unpack_from(">H", raw, 2)[0]
        return family, str(ipaddress.IPv6Address(raw[8:24])), port
    return family, raw[2:].hex(), 0


_OUTCOMES = {
    0: "",
    errno.ECONNREFUSED: "refused",
    errno.ENETUNREACH: "unreachable",
    errno.EHOSTUNREACH: "unreachable",
    errno.EADDRNOTAVAIL: "address-unavailable",
    errno.EADDRINUSE: "address-in-use",
    errno.EINPROGRESS: "in-progress",
    errno.EALREADY: "in-progress",
    errno.EISCONN: "connected",
    errno.EACCES: "denied",
    errno.EPERM: "denied",
    errno.EAFNOSUPPORT: "unsupported-family",
    errno.ETIMEDOUT: "timed-out",
    errno.EINTR: "interrupted",
}


def _outcome(call: str, error: int) -> str:
    """The kernel's answer to the call, in words."""
    if error == 0:
        return "connected" if call == "connect" else "bound"
    return _OUTCOMES.get(error) or errno.errorcode.get(error, str(error)).lower()


def _absolute(path: bytes, directory: bytes) -> bytes:
    """``path`` absolute (joined to ``directory`` when that is given) and normal: "." and
    ".." taken by text, and one slash at its start. (normpath keeps two, which POSIX
    allows to mean something else; Linux gives them no meaning, and "//etc/hostname",
    which a relative path from "/" becomes, is /etc/hostname.)"""
    if directory:
        path = directory + b"/" + path
    if b"/." in path or b"//" in path or path.endswith(b"/"):
        path = os.path.normpath(path)
        if path.startswith(b"//"):
            path = path[1:]
    return path


_STATUS_FIELDS = (b"\nTgid:", b"\nPPid:", b"\nNSpid:")


def _placement(pid: int) -> list[bytes] | None:
    """The Tgid, PPid and NSpid values of ``pid``'s status (:func:`_placement_of`).

    Raises:
        OSError: the process is gone.
    """
    return _placement_of(b"/proc/%d/status" % pid)


def _placement_of(path: bytes) -> list[bytes] | None:
    """The Tgid, PPid and NSpid values of a status file; None if one is not there.

    Read until all three lines are whole: a process with many supplementary groups has a
    status far longer than one page, with NSpid after them.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        status = b""
        while chunk := os.read(fd, 4096 if not status else 1 << 16):
            status += chunk
            fields = _status_fields(status)
            if fields is not None:
                return fields
        return None
    finally:
        os.close(fd)


def _status_fields(status: bytes) -> list[bytes] | None:
    """The values of ``_STATUS_FIELDS`` in a status text, once each line is whole."""
    values = []
    for name in _STATUS_FIELDS:
        start = status.find(name)
        end = status.find(b"\n", start + len(name)) if start >= 0 else -1
        if end < 0:
            return None
        values.append(status[start + len(name) : end])
    return values


def _openat2(libc: ctypes.CDLL, dirfd: int, path: bytes, flags: int, resolve: int) -> int:
    how = _OpenHow(flags, 0, resolve)
    fd = int(libc.syscall(_SYS_OPENAT2, dirfd, path, ctypes.byref(how), ctypes.c_size_t(24)))
    if fd < 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))
    return fd


def _resolved_in_root(pid: int, path: bytes, libc: ctypes.CDLL) -> bytes | None:
    """Where a failed exec's ``path`` leads when its links are followed in the process's
    own root, when the kernel refused it on the way (EACCES): through a link into
    ``/.hermetic/``, say. None when it does not lead into a directory closed to this
    user, or cannot be followed without a magic link (/proc/self/...)."""
    try:
        root = os.open(b"/proc/%d/root" % pid, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    resolve = _RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS
    flags = os.O_PATH | os.O_CLOEXEC
    try:
        try:
            os.close(_openat2(libc, root, path.lstrip(b"/") or b".", flags, resolve))
            return None  # it resolves: the exec failed for another reason
        except OSError as e:
            if e.errno != errno.EACCES:
                return None
        parts = [part for part in path.split(b"/") if part]
        done: list[bytes] = []
        links = 0
        buffer = ctypes.create_string_buffer(PATH_MAX)
        while parts:
            part = parts.pop(0)
            if part == b".":
                continue
            if part == b"..":
                if done:
                    done.pop()
                continue
            here = b"/".join([*done, part])
            try:
                fd = _openat2(libc, root, here, flags | os.O_NOFOLLOW, resolve)
            except OSError as e:
                if e.errno == errno.EACCES:
                    return b"/" + b"/".join([*done, part, *parts])
                return None
            try:
                if not stat.S_ISLNK(os.fstat(fd).st_mode):
                    done.append(part)
                    continue
                links += 1
                count = libc.readlinkat(fd, b"", buffer, PATH_MAX)
                if links > _MAX_LINKS or count <= 0:
                    return None
                target = buffer.raw[:count]
                if target.startswith(b"/"):
                    done = []
                parts = [p for p in target.split(b"/") if p] + parts
            finally:
                os.close(fd)
        return None
    finally:
        os.close(root)


def _text(value: object) -> str:
    """Bytes as JSON can hold them (undecodable bytes escaped), without a second copy
    of every event: ``json.dumps`` calls this for each bytes value it meets."""
    if isinstance(value, bytes):
        return os.fsdecode(value)
    raise TypeError(f"{type(value).__name__} is not part of an event")


def supervise(notify_fd: int, recorder: Recorder) -> None:
    """Answer notifications until no process uses the filter any more: in the native
    loop when it is built and current (``sandbox.trace.native``), else here.

    Waiting in the receive call itself, not in poll(), lets the kernel switch straight
    from the traced process to the supervisor and back (SYNC_WAKE_UP). The receive call
    fails at once with ENOENT when a caller gave up (a signal) or when no process is
    left: poll() tells the two apart, by POLLHUP.
    """
    loop = native_loop()
    if loop is not None:
        recorder.loop = "native"
        loop.serve(notify_fd, recorder, recorder.native_calls())
        return
    poller = select.poll()
    poller.register(notify_fd, select.POLLIN)
    buffer = bytearray(80)
    empty = bytes(80)
    step = recorder.step
    while True:
        buffer[:] = empty
        try:
            fcntl.ioctl(notify_fd, SECCOMP_IOCTL_NOTIF_RECV, buffer, True)
        except InterruptedError:
            continue
        except FileNotFoundError:
            ready = poller.poll(0)
            if ready and ready[0][1] & select.POLLHUP and not ready[0][1] & select.POLLIN:
                return
            continue  # the caller was interrupted by a signal; it will ask again
        values = _NOTIF.unpack_from(buffer)
        step(values[0], values[1], values[3], values[4:])


def _close(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)


def _peak_memory() -> int:
    """This process's peak RSS since it started the supervisor (VmHWM: unlike
    getrusage, it does not count the memory of the parent it was forked from)."""
    with suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as status:
            lines = status.read().splitlines()
        for line in lines:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def write_record(path: str | os.PathLike[str], header: dict[str, Any], recorder: Recorder) -> None:
    """The output file (see the module docstring), line by line: never one string of
    everything. Written beside ``path`` and renamed, so it is whole or absent."""
    temp = os.path.splitext(path)[0] + ".partial"
    encode = json.JSONEncoder(default=_text).encode  # one encoder: json.dumps makes one a call
    with open(temp, "w", encoding="ascii") as out:
        out.write(json.dumps(header) + "\n")
        for event in recorder.events:
            out.write(encode(event))
            out.write("\n")
        trailer = {
            "notifications": recorder.notifications,
            "unreadable": recorder.unreadable,
            "dropped": recorder.dropped,
            "peak_memory_bytes": _peak_memory(),
            "ended": recorder.ended,
            "loop": recorder.loop,
        }
        out.write(json.dumps(trailer) + "\n")
    os.replace(temp, path)


def read_record(path: Path) -> tuple[dict[str, Any], Iterator[list[Any]]]:
    """The header and the events of an output file; the trailer is the last item the
    iterator leaves in the header (under "trailer") once it is exhausted.

    Raises:
        OSError, ValueError: the file is missing or not what the supervisor writes.
    """
    stream = open(path, encoding="ascii")  # noqa: SIM115 - closed by the iterator
    try:
        header = json.loads(stream.readline())
    except ValueError:
        stream.close()
        raise
    if not isinstance(header, dict):
        stream.close()
        raise ValueError(f"{path}: no header")

    def events() -> Iterator[list[Any]]:
        with stream:
            for line in stream:
                item = json.loads(line)
                if isinstance(item, dict):
                    header["trailer"] = item
                    return
                yield item

    return header, events()


def _announce_ready() -> None:
    """Tell the parent the socket listens, then let go of stdout: nothing else is
    written there, and the parent stops reading."""
    os.write(1, b"ready\n")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="hermetic's seccomp supervisor")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--max-events", type=int, default=1 << 62)
    parser.add_argument("--max-bytes", type=int, default=1 << 62)
    parser.add_argument("--sentinel", help="the path whose creation ends the build")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_term)
    # A /proc/PID/stat fd is held for each exec until it is settled (see _sweep).
    _, most = resource.getrlimit(resource.RLIMIT_NOFILE)
    with suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (most, most))
    sentinel = os.fsencode(args.sentinel) if args.sentinel else None
    recorder = Recorder(max_events=args.max_events, max_bytes=args.max_bytes, sentinel=sentinel)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    state: dict[str, Any] = {}
    try:  # from the bind on: a SIGTERM at any point still leaves the record
        listener.bind(str(args.socket))
        listener.listen(1)
        _announce_ready()
        notify_fd, state = receive_notify_fd(listener)
        recorder.notify_fd = notify_fd
        if isinstance(state.get("pid"), int):
            recorder.depth = namespace_depth(state["pid"], recorder.depth)
        with suppress(OSError):  # Linux 6.6+: hand the CPU straight back and forth
            fcntl.ioctl(notify_fd, SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP)
        supervise(notify_fd, recorder)
    except _Stop:
        pass
    finally:
        listener.close()
        recorder.unsettled()
        write_record(args.out, {"container_pid": state.get("pid")}, recorder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
