"""The seccomp supervisor: receives a build's notification fd from runc and records
every traced syscall with its arguments, then lets it continue unchanged.

Runs as its own process (``python -m sandbox.trace.supervisor``) so that nothing
else competes for its interpreter: every notification holds a build process until
it is answered. It only observes; answering is always "continue".

What a build can make it hold is bounded: a path is read up to PATH_MAX, one exec's
arguments up to ``ARGV_MAX_BYTES``, and past ``--max-events`` events or
``--max-bytes`` bytes of paths and arguments it records nothing more, only counts
what it dropped. Strings are read in growing chunks and joined once.

Output (JSON): ``{"events": [...], "notifications": N, "unreadable": N, "dropped":
{kind: N}, "peak_memory_bytes": N, "container_pid": N}``; each event is a list whose
first item is its kind (see ``sandbox.trace.assemble``). Pids are host pids; ``pid``
events map them to the container's pids, parents and thread groups.
"""

from __future__ import annotations

import argparse
import array
import ctypes
import fcntl
import ipaddress
import json
import os
import select
import signal
import socket
import stat
import struct
import sys
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from types import FrameType
from typing import Any

from sandbox.trace.addresses import is_loopback
from sandbox.trace.syscalls import (
    ARG_MAX_STRING,
    ARGV_MAX_BYTES,
    AT_FDCWD,
    PATH_MAX,
    numbers,
)

SECCOMP_IOCTL_NOTIF_RECV = 0xC0502100
SECCOMP_IOCTL_NOTIF_SEND = 0xC0182101
SET_FLAGS = 0x40082104  # SECCOMP_IOCTL_NOTIF_SET_FLAGS
SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1
_CONTINUE = SECCOMP_USER_NOTIF_FLAG_CONTINUE
SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP = 1
_NOTIF = struct.Struct("<QIIi4x8x6Q")  # id, pid, flags, nr, (arch), (ip), args[6]
_RESP = struct.Struct("<QqiI")  # id, val, error, flags
_U64 = struct.Struct("<Q")
_SYS_PIDFD_GETFD = 438
_READ_MAX = 1 << 16
_MMSGHDR = 64  # struct mmsghdr on 64-bit: msghdr (56) + msg_len (4) + padding
_UIO_MAXIOV = 1024  # the kernel's cap on sendmmsg's vlen
_EVENT_OVERHEAD = 64  # bytes an event costs besides its strings, for the byte budget


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


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


class Recorder:
    """Turns notifications into events; every method runs while the caller waits."""

    def __init__(self, *, max_events: int = 1 << 62, max_bytes: int = 1 << 62) -> None:
        self.events: list[list[Any]] = []
        self.unreadable = 0
        self.notifications = 0
        self.kept_bytes = 0  # paths and arguments held, plus a fixed cost per event
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.dropped: dict[str, int] = {}  # by syscall name, once a cap was reached
        self.later: list[Callable[[], None]] = []  # work that can wait for the answer
        self._known: set[int] = set()
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._readv = self._libc.process_vm_readv
        self._readv.restype = ctypes.c_ssize_t
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
        self.handlers = {
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
            nr["renameat2"]: self.renameat,
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

        ``first`` may hold the array's first bytes, already read.
        """
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

    def _path(self, pid: int, dirfd: int, address: int) -> bytes:
        path = self._string(pid, address)
        self.kept_bytes += len(path) + _EVENT_OVERHEAD
        return _absolute(path, self._dir(pid, dirfd) if not path.startswith(b"/") else b"")

    def know(self, pid: int) -> None:
        """Record the container pid, parent and thread group of a host pid (and of its
        unknown ancestors).

        Called after answering: a traced process cannot vanish before its exit_group
        has been answered too, so its /proc entry is still there.
        """
        while pid not in self._known:
            self._known.add(pid)
            try:
                fd = os.open(f"/proc/{pid}/status", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    status = os.read(fd, 4096)
                finally:
                    os.close(fd)
            except OSError:
                return
            start = status.find(b"\nTgid:") + 6
            tgid = int(status[start : status.find(b"\n", start)])
            start = status.find(b"\nPPid:") + 6
            ppid = int(status[start : status.find(b"\n", start)])
            start = status.find(b"\nNSpid:") + 7
            ids = status[start : status.find(b"\n", start)].split()
            if len(ids) < 2:
                return  # a host process (conmon): above the container
            self.events.append(["pid", pid, int(ids[-1]), ppid, tgid])
            pid = ppid

    # --- handlers: (pid, args) -> None --------------------------------------------

    def execve(self, pid: int, a: tuple[int, ...]) -> None:
        self._exec(pid, AT_FDCWD, a[0], a[1])

    def execveat(self, pid: int, a: tuple[int, ...]) -> None:
        self._exec(pid, a[0], a[1], a[2])

    def _exec(self, pid: int, dirfd: int, path_address: int, argv_address: int) -> None:
        head, pointers = self._read_two(pid, path_address, argv_address)
        end = head.find(b"\0")
        path = head[:end] if end >= 0 else self._string(pid, path_address)
        path = _absolute(path, self._dir(pid, dirfd) if not path.startswith(b"/") else b"")
        argv, cut = self._strings(pid, argv_address, pointers)
        self.kept_bytes += len(path) + sum(map(len, argv)) + 8 * len(argv) + _EVENT_OVERHEAD
        event: list[Any] = ["exec", pid, path, argv, None, [], cut]
        self.events.append(event)
        self.later.append(lambda: _finish_exec(event))

    def exit_group(self, pid: int, a: tuple[int, ...]) -> None:
        self.events.append(["exit", pid, a[0] & 0xFF])

    def openat(self, pid: int, a: tuple[int, ...]) -> None:
        self.events.append(["open", pid, self._path(pid, a[0], a[1]), a[2]])

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
        kind = "rmdir" if a[2] & 0x200 else "unlink"  # AT_REMOVEDIR
        self.events.append([kind, pid, self._path(pid, a[0], a[1])])

    def mkdir(self, pid: int, a: tuple[int, ...]) -> None:
        self.events.append(["mkdir", pid, self._path(pid, AT_FDCWD, a[0])])

    def mkdirat(self, pid: int, a: tuple[int, ...]) -> None:
        self.events.append(["mkdir", pid, self._path(pid, a[0], a[1])])

    def rename(self, pid: int, a: tuple[int, ...]) -> None:
        old = self._path(pid, AT_FDCWD, a[0])
        self.events.append(["rename", pid, old, self._path(pid, AT_FDCWD, a[1])])

    def renameat(self, pid: int, a: tuple[int, ...]) -> None:
        old = self._path(pid, a[0], a[1])
        self.events.append(["rename", pid, old, self._path(pid, a[2], a[3])])

    def getdents(self, pid: int, a: tuple[int, ...]) -> None:
        self.events.append(["listdir", pid, self._dir(pid, a[0])])

    def getrandom(self, pid: int, a: tuple[int, ...]) -> None:
        self.events.append(["getrandom", pid, a[1], a[2]])

    def uname(self, pid: int, a: tuple[int, ...]) -> None:
        self.events.append(["uname", pid])

    def cpu_count(self, pid: int, a: tuple[int, ...]) -> None:
        self.events.append(["cpus", pid])

    def connect(self, pid: int, a: tuple[int, ...]) -> None:
        self._network(pid, "connect", a[0], a[1], a[2])

    def bind(self, pid: int, a: tuple[int, ...]) -> None:
        self._network(pid, "bind", a[0], a[1], a[2])

    def sendto(self, pid: int, a: tuple[int, ...]) -> None:
        if a[4]:
            self._network(pid, "sendto", a[0], a[4], a[5])

    def sendmsg(self, pid: int, a: tuple[int, ...]) -> None:
        header = self._read(pid, a[1], 12)
        name, length = struct.unpack_from("<QI", header)
        if name:
            self._network(pid, "sendmsg", a[0], name, length)

    def sendmmsg(self, pid: int, a: tuple[int, ...]) -> None:
        """Every message's destination: each may name its own (the kernel sends up to
        UIO_MAXIOV of them in one call)."""
        count = min(a[2] & 0xFFFFFFFF, _UIO_MAXIOV)
        if not count:
            return
        vector = self._read(pid, a[1], count * _MMSGHDR)
        for offset in range(0, len(vector) - 11, _MMSGHDR):
            name, length = struct.unpack_from("<QI", vector, offset)
            if name:
                self._network(pid, "sendmmsg", a[0], name, length)

    def _network(self, pid: int, call: str, fd: int, address: int, length: int) -> None:
        raw = self._read(pid, address, min(length, 128))
        if len(raw) < 2:
            return
        (family,) = struct.unpack_from("<H", raw)
        if family == socket.AF_INET and len(raw) >= 8:
            port = struct.unpack_from(">H", raw, 2)[0]
            host = str(ipaddress.IPv4Address(raw[4:8]))
        elif family == socket.AF_INET6 and len(raw) >= 24:
            port = struct.unpack_from(">H", raw, 2)[0]
            host = str(ipaddress.IPv6Address(raw[8:24]))
        elif family in (socket.AF_UNIX, socket.AF_NETLINK):
            return  # local IPC and kernel queries, not network
        else:
            host, port = raw[2:].hex(), 0
        kind = self._socket_type(pid, fd)
        self.events.append(
            ["net", pid, call, family, kind, host, port, _outcome(pid, call, kind, host, port)]
        )

    def _socket_type(self, pid: int, fd: int) -> int:
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return 0
        try:
            copy = self._libc.syscall(_SYS_PIDFD_GETFD, pidfd, fd, 0)
            if copy < 0:
                return 0
            with socket.socket(fileno=copy) as duplicate:
                return int(duplicate.type)
        except OSError:
            return 0
        finally:
            os.close(pidfd)


def _absolute(path: bytes, directory: bytes) -> bytes:
    if directory:
        path = directory + b"/" + path
    if b"/." in path or b"//" in path or path.endswith(b"/"):
        path = os.path.normpath(path)
    return path


def _finish_exec(event: list[Any]) -> None:
    """The parts of an exec event that may be read once the exec is under way."""
    pid, path = event[1], event[2]
    try:
        mode = os.stat(b"/proc/%d/root%s" % (pid, path)).st_mode
    except OSError:
        mode = 0
    event[4] = stat.S_ISREG(mode) and bool(mode & 0o111)
    # A shell opens "> file" itself and hands the fd to the program it runs: the
    # program's stdout and stderr say which files it writes.
    for fd in (1, 2):
        with suppress(OSError):
            event[5].append(os.readlink(b"/proc/%d/fd/%d" % (pid, fd)))


def _text(value: object) -> str:
    """Bytes as JSON can hold them (undecodable bytes escaped), without a second copy
    of every event: ``json.dumps`` calls this for each bytes value it meets."""
    if isinstance(value, bytes):
        return os.fsdecode(value)
    raise TypeError(f"{type(value).__name__} is not part of an event")


def _listening(pid: int, port: int) -> bool:
    for table in ("tcp", "tcp6"):
        try:
            rows = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def _outcome(pid: int, call: str, kind: int, host: str, port: int) -> str:
    """What the kernel answers in a network namespace whose only interface is lo."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return "unsupported-family"
    local = is_loopback(host)
    if call == "bind":
        return "bound" if local else "address-unavailable"
    if not local:
        return "unreachable"
    if kind == socket.SOCK_STREAM and call == "connect":
        return "connected" if _listening(pid, port) else "refused"
    return "sent" if call != "connect" else "connected"


def supervise(notify_fd: int, recorder: Recorder) -> None:
    """Answer notifications until no process uses the filter any more.

    Waiting in the receive call itself, not in poll(), lets the kernel switch straight
    from the traced process to the supervisor and back (SYNC_WAKE_UP). The receive call
    fails at once with ENOENT when a caller gave up (a signal) or when no process is
    left: poll() tells the two apart, by POLLHUP.
    """
    poller = select.poll()
    poller.register(notify_fd, select.POLLIN)
    buffer = bytearray(80)
    empty = bytes(80)
    handlers = recorder.handlers
    events = recorder.events
    known = recorder._known
    later = recorder.later
    names = {nr: name for name, nr in numbers().items()}
    exit_nr = numbers()["exit_group"]
    max_events, max_bytes = recorder.max_events, recorder.max_bytes
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
        nid, pid, nr = values[0], values[1], values[3]
        recorder.notifications += 1
        if len(events) >= max_events or recorder.kept_bytes >= max_bytes:
            # Full: answer at once and only count (the trace says it was cut).
            name = names.get(nr, str(nr))
            recorder.dropped[name] = recorder.dropped.get(name, 0) + 1
            with suppress(FileNotFoundError):
                fcntl.ioctl(
                    notify_fd, SECCOMP_IOCTL_NOTIF_SEND, _RESP.pack(nid, 0, 0, _CONTINUE), False
                )
            continue
        try:
            handlers[nr](pid, values[4:])
        except (OSError, KeyError, ValueError, struct.error) as e:
            recorder.unreadable += 1
            events.append(["unreadable", pid, nr, getattr(e, "errno", None) or str(e)])
        try:
            fcntl.ioctl(
                notify_fd, SECCOMP_IOCTL_NOTIF_SEND, _RESP.pack(nid, 0, 0, _CONTINUE), False
            )
        except FileNotFoundError:
            pass  # the caller died or was interrupted meanwhile
        if pid not in known and nr != exit_nr:
            # A process whose first traced call is its exit ran no program and has no
            # children left to place: its exit status alone is not worth a /proc read.
            recorder.know(pid)
        if later:
            for work in later:
                with suppress(OSError):
                    work()
            later.clear()


def _peak_memory() -> int:
    """This process's peak RSS since it started the supervisor (VmHWM: unlike
    getrusage, it does not count the memory of the parent it was forked from)."""
    with suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="hermetic's seccomp supervisor")
    parser.add_argument("--socket", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--max-events", type=int, default=1 << 62)
    parser.add_argument("--max-bytes", type=int, default=1 << 62)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_term)
    recorder = Recorder(max_events=args.max_events, max_bytes=args.max_bytes)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(args.socket))
    listener.listen(1)
    state: dict[str, Any] = {}
    try:
        notify_fd, state = receive_notify_fd(listener)
        with suppress(OSError):  # Linux 6.6+: hand the CPU straight back and forth
            fcntl.ioctl(notify_fd, SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP)
        supervise(notify_fd, recorder)
    except _Stop:
        pass
    finally:
        listener.close()
        document = {
            "events": recorder.events,
            "notifications": recorder.notifications,
            "unreadable": recorder.unreadable,
            "dropped": recorder.dropped,
            "peak_memory_bytes": _peak_memory(),
            "container_pid": state.get("pid"),
        }
        temp = args.out.with_suffix(".partial")
        temp.write_text(json.dumps(document, default=_text))
        temp.replace(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
