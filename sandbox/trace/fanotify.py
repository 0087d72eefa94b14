"""fanotify on the build's tmpfs: every file read in the build directory.

The group is made by a helper process inside the container's user namespace
(:mod:`sandbox.trace.fanotify_group`) and read here. The kernel hides the pid of each
event from such unprivileged listeners, so these events say which file was read, not by
whom.

Events name a file by its parent directory's file handle plus its name; paths are
rebuilt from a tree of directory handles (each directory: its parent's handle and its
name), seeded from the tree as it stands when the build starts and kept current from
directory create and rename events, so a renamed directory moves everything below it.
"""

from __future__ import annotations

import array
import ctypes
import json
import logging
import os
import select
import socket
import struct
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sandbox.trace.fanotify_group import (
    AT_FDCWD,
    FAN_CLOSE_NOWRITE,
    FAN_CREATE,
    FAN_ONDIR,
    FAN_Q_OVERFLOW,
    FAN_RENAME,
    INFO_DFID_NAME,
    INFO_FID,
    INFO_NEW_DFID_NAME,
    MAX_HANDLE_SZ,
    USER_LIMITS,
    FanotifyError,
    check,
    libc,
)

__all__ = ["USER_LIMITS", "BuildReads", "FanotifyError", "FileReads", "PendingGroup"]

_METADATA = struct.Struct("<IBBHQii")
_INFO = struct.Struct("<BBH")
_HANDLE = struct.Struct("<Ii")

log = logging.getLogger(__name__)
_HELPER_TIMEOUT_S = 60.0

Handle = bytes
"""fsid (8 bytes) + handle type (4 bytes) + handle bytes: a directory's identity."""
Place = tuple[Handle | None, str]
"""Where a directory is: its parent's handle and its name (the root: None, its path)."""
_MAX_DEPTH = 4096
_NAME_OVERHEAD = 96  # bytes a kept name or path costs besides its characters
_PATH_CACHE_BYTES = 16 * 1024**2  # paths of directories worked out, kept for reuse


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
    check(
        libc().name_to_handle_at(
            AT_FDCWD, os.fsencode(path), ctypes.byref(handle), ctypes.byref(mount_id), 0
        ),
        f"name_to_handle_at {path}",
    )
    raw = bytes(handle.f_handle)[: handle.handle_bytes]
    return fsid + struct.pack("<i", handle.handle_type) + raw


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


class PendingGroup:
    """The fanotify helper, started before the container so that its start-up (a Python
    interpreter) overlaps podman's instead of delaying the build; it waits for the pid
    of the container's init, then joins its user namespace and makes the group.

    ``paths`` are the filesystems to mark, as the container sees them.
    """

    def __init__(self, paths: list[str]) -> None:
        self._channel, child = socket.socketpair()
        with child:
            try:
                self._process = self._start(child, paths)
            except BaseException:
                self._channel.close()
                raise

    @staticmethod
    def _start(child: socket.socket, paths: list[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sandbox.trace.fanotify_group",
                "--fd",
                f"{child.fileno()}",
                *paths,
            ],
            pass_fds=[child.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def open(self, pid: int, *, timeout_s: float = _HELPER_TIMEOUT_S) -> tuple[int, list[bytes]]:
        """Send ``pid``; return the fanotify group fd the helper made and the fsid of
        each path.

        Raises:
            FanotifyError: the kernel or the namespaces refused, or the helper failed.
        """
        fds = array.array("i")
        try:
            self._channel.settimeout(timeout_s)
            self._channel.sendall(f"{pid}\n".encode())
            message, ancillary, _, _ = self._channel.recvmsg(4096, socket.CMSG_LEN(fds.itemsize))
            returncode = self._process.wait(timeout=timeout_s)
        except (OSError, subprocess.TimeoutExpired) as e:
            # Dead at start (its stderr says why) or hung: it gets no more time.
            self._process.kill()
            self._process.wait()
            said = self._stderr()
            self.close()
            raise FanotifyError(f"the fanotify helper did not answer ({e}): {said}") from e
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
        try:
            answer = json.loads(message or b"{}")
        except ValueError:
            answer = {}
        if returncode != 0 or not fds or not answer.get("ok"):
            for fd in fds:
                os.close(fd)
            said = self._stderr()
            self.close()
            raise FanotifyError(f"fanotify watch refused: {answer.get('error') or said}")
        self.close()
        if answer.get("limited"):
            log.warning(
                "the build's inotify and fanotify quotas were not capped (%s): it may use "
                "up this user's",
                answer["limited"],
            )
        return fds[0], [bytes.fromhex(fsid) for fsid in answer.get("fsids", [])]

    def _stderr(self) -> str:
        """The tail of what the helper wrote on stderr (once it has ended)."""
        stream = self._process.stderr
        if stream is None or stream.closed:
            return ""
        return stream.read().decode("utf-8", "replace")[-2000:]

    def close(self) -> None:
        """Let the helper go (it exits when the channel closes) and reap it."""
        self._channel.close()
        if self._process.poll() is None:
            try:
                self._process.wait(timeout=_HELPER_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._process.stderr is not None and not self._process.stderr.closed:
            self._process.stderr.close()


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
