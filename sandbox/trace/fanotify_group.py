"""The fanotify group of a build, made by a short-lived helper process.

The helper joins the container's user namespace (where the build tmpfs was mounted, so
filesystem marks are allowed), creates the fanotify group, marks the build and state
filesystems, caps the namespace's inotify and fanotify quotas, and hands the group's fd
back over a unix socket. It is started before the container (so that its start-up
overlaps podman's) and told the pid of the container's init once that runs. It imports
the standard library's bare minimum: its start-up is on every traced build's path.

Run as ``python -m sandbox.trace.fanotify_group --fd FD PATH...``; it reads the pid as one
line from FD first.
"""

from __future__ import annotations

import argparse
import array
import ctypes
import json
import os
import socket
import struct
import sys

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
INIT_FLAGS = (
    FAN_CLOEXEC
    | FAN_NONBLOCK
    | FAN_REPORT_FID
    | FAN_REPORT_DIR_FID
    | FAN_REPORT_NAME
    | FAN_REPORT_TARGET_FID
)
MASK = FAN_CLOSE_NOWRITE | FAN_CREATE | FAN_DELETE | FAN_RENAME | FAN_ONDIR

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


def libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def check(result: int, what: str) -> int:
    if result < 0:
        raise FanotifyError(f"{what}: {os.strerror(ctypes.get_errno())}")
    return result


def filesystem_id(path: str) -> bytes:
    """The fsid fanotify puts in its events for the filesystem holding ``path``."""
    return struct.pack("<Q", os.statvfs(path).f_fsid)


def _helper(pid: int, fd: int, paths: list[str]) -> int:
    channel = socket.socket(fileno=fd)
    try:
        c = libc()
        with open(f"/proc/{pid}/ns/user", "rb") as namespace:
            check(
                c.setns(namespace.fileno(), CLONE_NEWUSER),
                "setns into the build's user namespace",
            )
        group = check(c.fanotify_init(INIT_FLAGS, os.O_RDONLY | os.O_CLOEXEC), "fanotify_init")
        for path in paths:
            check(
                c.fanotify_mark(
                    group,
                    FAN_MARK_ADD | FAN_MARK_FILESYSTEM,
                    ctypes.c_uint64(MASK),
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
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("paths", nargs="+")
    args = parser.parse_args(argv)
    pid = _pid_from(args.fd)
    if pid is None:
        return 0  # the build never started: nothing to watch
    return _helper(pid, args.fd, args.paths)


def _pid_from(fd: int) -> int | None:
    """The pid the parent sends as one line, once the container runs; None when the
    parent closed the channel first."""
    channel = socket.socket(fileno=os.dup(fd))
    with channel:
        line = b""
        while not line.endswith(b"\n"):
            chunk = channel.recv(32)
            if not chunk:
                return None
            line += chunk
    return int(line)


if __name__ == "__main__":
    sys.exit(main())
