"""fanotify on the build's tmpfs: every file read in the build directory.

A short-lived helper process joins the container's user namespace (where the build
tmpfs was mounted, so filesystem marks are allowed), creates the fanotify group,
marks the build and state filesystems, and hands the group's fd back over a unix
socket. The kernel hides the pid of each event from such unprivileged listeners,
so these events say which file was read, not by whom.

Events name a file by its parent directory's file handle plus its name; paths are
rebuilt from a tree of directory handles (each directory: its parent's handle and its
name), seeded from the tree as it stands when the build starts and kept current from
directory create and rename events, so a renamed directory moves everything below it.

Run as ``python -m sandbox.trace.fanotify --pid PID --fd FD PATH...`` (the helper).
"""

from __future__ import annotations

import argparse
import array
import ctypes
import json
import logging
import os
import select
import socket
import struct
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

CLONE_NEWUSER = 0x10000000
AT_FDCWD = -100
FAN_CLOEXEC = 0x1
FAN_NONBLOCK = 0x2
FAN_REPORT_FID = 0x200
FAN_REPORT_DIR_FID = 0x400
FAN_REPORT_NAME = 0x800
FAN_REPORT_TARGET_FID = 0x1000
FAN_MARK_ADD = 0x1
FAN_MARK_FILESYSTEM = 0x100
FAN_CLOSE_NOWRITE = 0x10
FAN_CREATE = 0x100
FAN_DELETE = 0x200
FAN_Q_OVERFLOW = 0x4000
FAN_RENAME = 0x10000000
FAN_ONDIR = 0x40000000
INFO_FID = 1
INFO_DFID_NAME = 2
INFO_OLD_DFID_NAME = 10
INFO_NEW_DFID_NAME = 12
MAX_HANDLE_SZ = 128
_INIT_FLAGS = (
    FAN_CLOEXEC
    | FAN_NONBLOCK
    | FAN_REPORT_FID
    | FAN_REPORT_DIR_FID
    | FAN_REPORT_NAME
    | FAN_REPORT_TARGET_FID
)
_MASK = FAN_CLOSE_NOWRITE | FAN_CREATE | FAN_DELETE | FAN_RENAME | FAN_ONDIR
_METADATA = struct.Struct("<IBBHQii")
_INFO = struct.Struct("<BBH")
_HANDLE = struct.Struct("<Ii")

log = logging.getLogger(__name__)

Handle = bytes
"""fsid (8 bytes) + handle type (4 bytes) + handle bytes: a directory's identity."""
Place = tuple[Handle | None, str]
"""Where a directory is: its parent's handle and its name (the root: None, its path)."""
_MAX_DEPTH = 4096
_NAME_OVERHEAD = 96  # bytes a kept name or path costs besides its characters
_PATH_CACHE_BYTES = 16 * 1024**2  # paths of directories worked out, kept for reuse
# What a traced build may hold of the kernel objects counted per user across every
# user namespace (ucounts): set in the build's own user namespace, so that one build
# cannot use up the host user's inotify or fanotify quota (128 instances by default).
USER_LIMITS = {
    "max_inotify_instances": 32,
    "max_inotify_watches": 65536,
    "max_fanotify_groups": 4,  # hermetic's own group counts among them
    "max_fanotify_marks": 1024,
}


class FanotifyError(Exception):
    """The fanotify watch could not be set up."""


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> int:
    if result < 0:
        raise FanotifyError(f"{what}: {os.strerror(ctypes.get_errno())}")
    return result


def directory_handle(path: str, fsid: bytes) -> Handle:
    """The file handle of a directory, as fanotify reports it (name_to_handle_at)."""

    class FileHandle(ctypes.Structure):
        _fields_ = [
            ("handle_bytes", ctypes.c_uint),
            ("handle_type", ctypes.c_int),
            ("f_handle", ctypes.c_ubyte * MAX_HANDLE_SZ),
        ]

    handle = FileHandle(handle_bytes=MAX_HANDLE_SZ)
    mount_id = ctypes.c_int()
    _check(
        _libc().name_to_handle_at(
            AT_FDCWD, os.fsencode(path), ctypes.byref(handle), ctypes.byref(mount_id), 0
        ),
        f"name_to_handle_at {path}",
    )
    raw = bytes(handle.f_handle)[: handle.handle_bytes]
    return fsid + struct.pack("<i", handle.handle_type) + raw


def filesystem_id(path: str) -> bytes:
    """The fsid fanotify puts in its events for the filesystem holding ``path``."""
    return struct.pack("<Q", os.statvfs(path).f_fsid)


# --- the helper ---------------------------------------------------------------------


def _helper(pid: int, fd: int, paths: list[str]) -> int:
    channel = socket.socket(fileno=fd)
    try:
        libc = _libc()
        with open(f"/proc/{pid}/ns/user", "rb") as namespace:
            _check(
                libc.setns(namespace.fileno(), CLONE_NEWUSER),
                "setns into the build's user namespace",
            )
        group = _check(libc.fanotify_init(_INIT_FLAGS, os.O_RDONLY | os.O_CLOEXEC), "fanotify_init")
        for path in paths:
            _check(
                libc.fanotify_mark(
                    group,
                    FAN_MARK_ADD | FAN_MARK_FILESYSTEM,
                    ctypes.c_uint64(_MASK),
                    AT_FDCWD,
                    os.fsencode(f"/proc/{pid}/root{path}"),
                ),
                f"fanotify_mark {path}",
            )
        # From inside the namespace: the host user may not be able to reach these paths.
        fsids = [filesystem_id(f"/proc/{pid}/root{path}").hex() for path in paths]
        limited = _limit_user_namespace()
        fds = array.array("i", [group])
        message = json.dumps({"ok": True, "fsids": fsids, "limited": limited}).encode()
        channel.sendmsg([message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
        return 0
    except (FanotifyError, OSError) as e:
        channel.sendall(json.dumps({"ok": False, "error": str(e)}).encode())
        return 1
    finally:
        channel.close()


def _limit_user_namespace() -> str:
    """Set ``USER_LIMITS`` in the user namespace this helper joined (where the helper has
    every capability); an empty string when they were set, else why not."""
    for name, value in USER_LIMITS.items():
        try:
            with open(f"/proc/sys/user/{name}", "w") as limit:
                limit.write(str(value))
        except FileNotFoundError:
            continue  # an older kernel without this counter
        except OSError as e:
            return f"user.{name}: {e.strerror}"
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="hermetic's fanotify helper")
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("paths", nargs="+")
    args = parser.parse_args(argv)
    return _helper(args.pid, args.fd, args.paths)


# --- the reader ---------------------------------------------------------------------


@dataclass
class FileReads:
    """What fanotify saw: files read in the build dir, and whether it saw everything."""

    reads: Counter[str] = field(default_factory=Counter)  # path -> times read
    overflowed: bool = False
    unresolved: int = 0  # events naming a directory hermetic could not place
    dropped: int = 0  # reads of paths past the cap on distinct paths
    finished: bool = False  # the runner's end-of-build sentinel was seen


def _records(info: bytes) -> Iterator[tuple[int, Handle, str]]:
    offset = 0
    while offset + 4 <= len(info):
        kind, _, length = _INFO.unpack_from(info, offset)
        record = info[offset + 4 : offset + length]
        fsid = record[:8]
        size, handle_type = _HANDLE.unpack_from(record, 8)
        handle = fsid + struct.pack("<i", handle_type) + record[16 : 16 + size]
        name = record[16 + size :].split(b"\0", 1)[0]
        yield kind, handle, os.fsdecode(name)
        if length == 0:
            break
        offset += length


class BuildReads:
    """Reads a fanotify group's events into :class:`FileReads` on a thread.

    What it keeps is bounded: ``max_paths`` distinct files and directories, and
    ``max_bytes`` of their names; past either, reads are counted, not placed.
    """

    def __init__(
        self,
        group: int,
        tree: dict[Handle, Place],
        sentinel_fs: bytes,
        sentinel: str,
        max_paths: int = 1 << 62,
        max_bytes: int = 1 << 62,
    ) -> None:
        self.group = group
        self.tree = dict(tree)
        self.sentinel_fs = sentinel_fs
        self.sentinel = sentinel
        self.max_paths = max_paths
        self.max_bytes = max_bytes
        self.kept_bytes = sum(len(name) + _NAME_OVERHEAD for _, name in tree.values())
        self._paths: dict[Handle, str] = {}  # paths worked out, until a directory moves
        self._paths_bytes = 0
        self.result = FileReads()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hermetic-fanotify", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> FileReads:
        """Drain what is queued and stop; the group fd is closed."""
        self._stop.set()
        self._thread.join(30)
        os.close(self.group)
        return self.result

    def path_of(self, handle: Handle) -> str | None:
        """The path of a known directory, from its place in the tree."""
        found = self._paths.get(handle)
        if found is not None:
            return found
        names: list[str] = []
        current: Handle | None = handle
        while current is not None and len(names) < _MAX_DEPTH:
            place = self.tree.get(current)
            if place is None:
                return None
            current, name = place
            names.append(name)
        if current is not None:
            return None  # deeper than any path the kernel resolves: not placed
        path = "/".join(reversed(names))
        self._paths_bytes += len(path) + _NAME_OVERHEAD
        if self._paths_bytes > _PATH_CACHE_BYTES:
            self._paths.clear()
            self._paths_bytes = len(path) + _NAME_OVERHEAD
        self._paths[handle] = path
        return path

    def _room(self, name: str) -> bool:
        """Whether one more directory name or read path fits the byte budget; counts
        it if so."""
        if self.kept_bytes + len(name) + _NAME_OVERHEAD > self.max_bytes:
            return False
        self.kept_bytes += len(name) + _NAME_OVERHEAD
        return True

    def _run(self) -> None:
        while True:
            stopping = self._stop.is_set()
            readable, _, _ = select.select([self.group], [], [], 0.05)
            if readable:
                try:
                    data = os.read(self.group, 1 << 16)
                except BlockingIOError:
                    data = b""
                self._parse(data)
                continue
            if stopping or self.result.finished:
                return

    def _parse(self, data: bytes) -> None:
        offset = 0
        while offset + _METADATA.size <= len(data):
            length, _, _, metadata_length, mask, _, _ = _METADATA.unpack_from(data, offset)
            if length < _METADATA.size:
                return
            if not self.result.finished:
                self._event(mask, data[offset + metadata_length : offset + length])
            offset += length

    def _event(self, mask: int, info: bytes) -> None:
        if mask & FAN_Q_OVERFLOW:
            self.result.overflowed = True
            return
        records = list(_records(info))
        named = {kind: (handle, name) for kind, handle, name in records if kind != INFO_FID}
        target = next((handle for kind, handle, _ in records if kind == INFO_FID), None)
        if mask & FAN_CREATE and INFO_DFID_NAME in named:
            parent, name = named[INFO_DFID_NAME]
            if parent.startswith(self.sentinel_fs) and name == self.sentinel:
                self.result.finished = True
                return
            if (
                mask & FAN_ONDIR
                and target is not None
                and parent in self.tree
                and len(self.tree) < self.max_paths
                and self._room(name)
            ):
                self.tree[target] = (parent, name)
        elif mask & FAN_RENAME and mask & FAN_ONDIR and target is not None:
            new = named.get(INFO_NEW_DFID_NAME)
            if new is None or new[0] not in self.tree:
                # Moved where it cannot be placed: what is below it is no longer known.
                self.tree.pop(target, None)
            elif target in self.tree or (len(self.tree) < self.max_paths and self._room(new[1])):
                self.tree[target] = new
            self._paths.clear()  # every path below the moved directory changed
            self._paths_bytes = 0
        elif mask & FAN_CLOSE_NOWRITE and not mask & FAN_ONDIR and INFO_DFID_NAME in named:
            parent, name = named[INFO_DFID_NAME]
            if parent.startswith(self.sentinel_fs):
                return
            directory = self.path_of(parent)
            reads = self.result.reads
            if directory is None:
                self.result.unresolved += 1
                return
            path = f"{directory}/{name}"
            if path in reads or (len(reads) < self.max_paths and self._room(path)):
                reads[path] += 1
            else:
                self.result.dropped += 1


def open_group(pid: int, paths: list[str]) -> tuple[int, list[bytes]]:
    """Run the helper; return the fanotify group fd it made and the fsid of each path.

    Raises:
        FanotifyError: the kernel or the namespaces refused.
    """
    import subprocess

    parent, child = socket.socketpair()
    with parent, child:
        try:
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "sandbox.trace.fanotify",
                    "--pid",
                    str(pid),
                    "--fd",
                    str(child.fileno()),
                    *paths,
                ],
                pass_fds=[child.fileno()],
                capture_output=True,
                timeout=60,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise FanotifyError("the fanotify helper did not answer") from e
        child.close()
        fds = array.array("i")
        message, ancillary, _, _ = parent.recvmsg(4096, socket.CMSG_LEN(fds.itemsize))
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
        answer = json.loads(message or b"{}")
        if done.returncode != 0 or not fds:
            reason = answer.get("error") or done.stderr.decode()[-2000:]
            raise FanotifyError(f"fanotify watch refused: {reason}")
        if answer.get("limited"):
            log.warning(
                "the build's inotify and fanotify quotas were not capped (%s): it may use "
                "up this user's",
                answer["limited"],
            )
        return fds[0], [bytes.fromhex(fsid) for fsid in answer.get("fsids", [])]


def seed_directories(root_on_host: Path, build_dir: str, fsid: bytes) -> dict[Handle, Place]:
    """The tree of every directory under the build dir as it stands now."""
    root = directory_handle(str(root_on_host), fsid)
    tree: dict[Handle, Place] = {root: (None, build_dir)}
    handles = {root_on_host: root}
    for dirpath, dirnames, _ in os.walk(root_on_host, followlinks=False):
        parent = handles[Path(dirpath)]
        for name in dirnames:
            full = Path(dirpath) / name
            if full.is_symlink():
                continue
            handle = directory_handle(str(full), fsid)
            handles[full] = handle
            tree[handle] = (parent, name)
    return tree


if __name__ == "__main__":
    sys.exit(main())
