"""Paths inside a tree, checked by resolution rather than by spelling.

A link that reads as inside can still leave the tree once the links it passes through are
followed (``x0/…/x19/dd -> ../../…`` leads to the tree's root, so ``a -> x0/…/dd/../../…/
etc/passwd`` reaches the host's ``/etc/passwd``). :func:`resolve_beneath` follows every
link the way the kernel would, with the tree's root as a wall; :func:`open_beneath` opens
a file below a root without following any link at all, with ``openat2(RESOLVE_BENEATH |
RESOLVE_NO_SYMLINKS)`` where the kernel has it, else one ``O_NOFOLLOW`` step per component.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
from pathlib import Path, PurePosixPath

MAX_LINKS = 40  # as the kernel's MAXSYMLINKS

_SYS_OPENAT2 = 437  # the same number on every architecture that has it
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08


class _OpenHow(ctypes.Structure):
    _fields_ = (("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64))


def resolve_beneath(root: Path, relative: str) -> PurePosixPath | None:
    """Where ``relative`` leads under ``root`` once every link on the way is followed.

    Components that do not exist are taken as they are written (a dangling link stays a
    dangling link, but a ``..`` after one must still stay inside). An absolute link
    target, more than 40 links, or a ``..`` above the root is an escape.

    Returns:
        The resolved path relative to ``root``, or None when the resolution leaves it.
    """
    if relative.startswith("/"):
        return None
    pending = relative.split("/")
    done: list[str] = []
    links = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not done:
                return None
            done.pop()
            continue
        done.append(part)
        try:
            st = os.lstat(root.joinpath(*done))
        except (FileNotFoundError, NotADirectoryError):
            continue  # nothing there: no link to follow, the rest is read as written
        if stat.S_ISLNK(st.st_mode):
            links += 1
            target = os.readlink(root.joinpath(*done))
            if links > MAX_LINKS or target.startswith("/"):
                return None
            done.pop()
            pending[:0] = target.split("/")
    return PurePosixPath(*done) if done else PurePosixPath(".")


def _parts(relative: str) -> list[str]:
    """The components of a relative path; ValueError for absolute paths and dot segments."""
    parts = relative.split("/")
    if relative.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"{relative!r} is not a plain relative path")
    return parts


def _openat2(root_fd: int, relative: str, flags: int) -> int | None:
    """openat2 with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS; None when the kernel lacks it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    how = _OpenHow(
        flags=flags | os.O_CLOEXEC,
        mode=0,
        resolve=_RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS,
    )
    fd = libc.syscall(
        _SYS_OPENAT2, root_fd, os.fsencode(relative), ctypes.byref(how), ctypes.sizeof(how)
    )
    if fd >= 0:
        return int(fd)
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EPERM, errno.E2BIG):  # no openat2, or seccomp denies it
        return None
    raise OSError(code, os.strerror(code), relative)


def _walk(root_fd: int, relative: str, flags: int) -> int:
    """One O_NOFOLLOW step per component (what openat2 does in one call)."""
    parts = _parts(relative)
    fd = os.dup(root_fd)
    try:
        for part in parts[:-1]:
            step = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = step
        return os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
    finally:
        os.close(fd)


def open_beneath(
    root: Path, relative: str, flags: int = os.O_RDONLY, *, kernel: bool = True
) -> int:
    """Open ``root/relative`` without following any link, on the way or at the end.

    Args:
        root: the tree (trusted; it may itself be reached through links).
        relative: a plain relative path (no ``..``, no empty or ``.`` components).
        flags: os.open flags for the file itself.
        kernel: use openat2 where available (False: always the component walk).

    Returns:
        An open file descriptor.

    Raises:
        ValueError: ``relative`` is not a plain relative path.
        OSError: a component is a link (ELOOP, ENOTDIR or EXDEV), or missing.
    """
    _parts(relative)
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if kernel:
            fd = _openat2(root_fd, relative, flags)
            if fd is not None:
                return fd
        return _walk(root_fd, relative, flags)
    finally:
        os.close(root_fd)


def read_link_beneath(root: Path, relative: str) -> str | None:
    """The target of ``root/relative`` if it is a link (its parents must not be)."""
    parts = _parts(relative)
    parent = "/".join(parts[:-1])
    if parent:
        fd = open_beneath(root, parent, os.O_RDONLY | os.O_DIRECTORY)
    else:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        st = os.lstat(parts[-1], dir_fd=fd)
        return os.readlink(parts[-1], dir_fd=fd) if stat.S_ISLNK(st.st_mode) else None
    finally:
        os.close(fd)


def make_dirs_beneath(root: Path, relative: str) -> int:
    """Create ``root/relative`` as directories, never through a link; returns its fd.

    Raises:
        OSError: a component exists and is a link or not a directory.
    """
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    if relative in ("", "."):
        return fd
    try:
        for part in _parts(relative):
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=fd)
            step = os.open(
                part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd
            )
            os.close(fd)
            fd = step
    except BaseException:
        os.close(fd)
        raise
    return fd
