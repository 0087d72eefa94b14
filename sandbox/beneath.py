"""Paths inside a tree, checked by resolution rather than by spelling.

A link that reads as inside can still leave the tree once the links it passes through are
followed (``x0/…/x19/dd -> ../../…`` leads to the tree's root, so ``a -> x0/…/dd/../../…/
etc/passwd`` reaches the host's ``/etc/passwd``). :func:`resolve_beneath` follows every
link the way the kernel would, with the tree's root as a wall; :func:`open_beneath` opens
a file below a root without following any link at all, with ``openat2(RESOLVE_BENEATH |
RESOLVE_NO_SYMLINKS)`` where the kernel has it, else one ``O_NOFOLLOW`` step per component.

Trees a client or a build made may be of any depth: :func:`walk_beneath` and
:func:`remove_tree` are iterative (no recursion to exhaust) and follow no link either.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

MAX_LINKS = 40  # as the kernel's MAXSYMLINKS
PATH_MAX = 4096  # as the kernel's
DEFAULT_RESOLUTION_STEPS = 1_000_000

_SYS_OPENAT2 = 437  # the same number on every architecture that has it
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08


class _OpenHow(ctypes.Structure):
    _fields_ = (("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64))


class ResolutionBudget:
    """A cap on the lookups that resolving links may take, shared by many resolutions (a
    request's every link): a chain of links whose targets climb and descend again costs
    work out of all proportion to its size, and this bounds it."""

    def __init__(self, steps: int = DEFAULT_RESOLUTION_STEPS) -> None:
        self.left = steps

    def spend(self) -> None:
        """Raises TooMuchResolution once the budget is used up."""
        self.left -= 1
        if self.left < 0:
            raise TooMuchResolution("resolving the links takes more lookups than allowed")


class TooMuchResolution(Exception):
    """A tree's links take more work to resolve than its budget allows."""


class _Resolver:
    """Resolution below one root, remembering where each link leads (so a link met again,
    from any path, costs one lookup)."""

    def __init__(self, root_fd: int, budget: ResolutionBudget) -> None:
        self.root_fd = root_fd
        self.budget = budget
        self.leads: dict[str, tuple[str, ...] | None] = {}

    def resolve(self, start: list[str], relative: str, nesting: int = 0) -> tuple[str, ...] | None:
        if relative.startswith("/"):
            return None
        done = list(start)
        pending = relative.split("/")
        pending.reverse()  # a stack: the next component is last
        while pending:
            part = pending.pop()
            self.budget.spend()
            if part in ("", "."):
                continue
            if part == "..":
                if not done:
                    return None
                done.pop()
                continue
            done.append(part)
            key = "/".join(done)
            if len(key) > PATH_MAX:
                return None  # the kernel would not resolve it either
            try:
                st = os.lstat(key, dir_fd=self.root_fd)
            except (FileNotFoundError, NotADirectoryError):
                continue  # nothing there: no link to follow, the rest is read as written
            if not stat.S_ISLNK(st.st_mode):
                continue
            if key not in self.leads:
                self.leads[key] = None  # a link met inside its own resolution: a loop
                if nesting < MAX_LINKS:
                    target = os.readlink(key, dir_fd=self.root_fd)
                    self.leads[key] = self.resolve(done[:-1], target, nesting + 1)
            lead = self.leads[key]
            if lead is None:
                return None
            done = list(lead)
        return tuple(done)


def resolve_beneath(
    root: Path, relative: str, *, budget: ResolutionBudget | None = None
) -> PurePosixPath | None:
    """Where ``relative`` leads under ``root`` once every link on the way is followed.

    Components that do not exist are taken as they are written (a dangling link stays a
    dangling link, but a ``..`` after one must still stay inside). An absolute link
    target, links nested more than 40 deep, a loop, a path longer than PATH_MAX or a
    ``..`` above the root is an escape.

    Args:
        budget: lookups allowed (shared across calls); default a fresh one.

    Returns:
        The resolved path relative to ``root``, or None when the resolution leaves it.

    Raises:
        TooMuchResolution: the budget ran out.
    """
    return resolve_all_beneath(root, [relative], budget=budget)[0]


def resolve_all_beneath(
    root: Path, paths: list[str], *, budget: ResolutionBudget | None = None
) -> list[PurePosixPath | None]:
    """:func:`resolve_beneath` of many paths of one tree, each link resolved once."""
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        resolver = _Resolver(root_fd, budget or ResolutionBudget())
        found: list[PurePosixPath | None] = []
        for relative in paths:
            done = resolver.resolve([], relative)
            found.append(
                None if done is None else PurePosixPath(*done) if done else PurePosixPath(".")
            )
        return found
    finally:
        os.close(root_fd)


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


def _directory_at(root: Path, relative: str) -> int:
    """An fd of the directory ``root/relative`` ("" is root), reached through no link."""
    if not relative:
        return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    return open_beneath(root, relative, os.O_RDONLY | os.O_DIRECTORY)


def read_beneath(root: Path, relative: str, *, limit: int) -> bytes:
    """The bytes of the regular file ``root/relative``, reached through no link.

    Raises:
        ValueError: ``relative`` is not a plain relative path.
        OSError: a link on the way or at the end (ELOOP, ENOTDIR, EXDEV), missing, not a
            regular file (EINVAL), or larger than ``limit`` bytes (EFBIG).
    """
    fd = open_beneath(root, relative)
    with os.fdopen(fd, "rb") as stream:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", relative)
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes", relative)
    return data


def write_beneath(root: Path, relative: str, data: bytes, mode: int = 0o644) -> None:
    """Create the file ``root/relative`` (and its directories) through no link; the file
    must not exist yet.

    Raises:
        ValueError: ``relative`` is not a plain relative path.
        OSError: a link or a file on the way, or the file exists (EEXIST).
    """
    parent, _, name = relative.rpartition("/")
    _parts(relative)
    parent_fd = make_dirs_beneath(root, parent)
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(name, flags, 0o600, dir_fd=parent_fd)
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            os.fchmod(stream.fileno(), mode & 0o777)
    finally:
        os.close(parent_fd)


def symlink_beneath(root: Path, relative: str, target: str) -> None:
    """Create the link ``root/relative -> target`` (and its directories) through no link.

    Raises:
        ValueError: ``relative`` is not a plain relative path.
        OSError: a link or a file on the way, or something exists there (EEXIST).
    """
    parent, _, name = relative.rpartition("/")
    _parts(relative)
    parent_fd = make_dirs_beneath(root, parent)
    try:
        os.symlink(target, name, dir_fd=parent_fd)
    finally:
        os.close(parent_fd)


@dataclass(frozen=True, kw_only=True)
class TreeLimits:
    """How large a tree :func:`walk_beneath` walks before it gives up."""

    max_depth: int = 256
    max_entries: int = 1_000_000
    max_path_bytes: int = 256 * 1024**2  # every path listed, together


class TreeTooLarge(Exception):
    """A tree deeper, larger or with longer paths than its :class:`TreeLimits`."""


def walk_beneath(root: Path, limits: TreeLimits | None = None) -> Iterator[tuple[str, int]]:
    """Every entry below ``root`` as (relative POSIX path, its own mode), a directory
    before what it holds; iterative (any depth costs no stack) and no link is followed:
    each directory is opened below ``root`` with no link on the way.

    Raises:
        TreeTooLarge: deeper than ``max_depth``, a path longer than PATH_MAX, more than
            ``max_entries`` entries or more than ``max_path_bytes`` of paths.
        OSError: a directory changed into a link while it was walked.
    """
    limits = limits or TreeLimits()
    pending = [""]
    entries = spent = 0
    while pending:
        directory = pending.pop()
        fd = _directory_at(root, directory)
        try:
            with os.scandir(fd) as listing:
                found = [
                    (entry.name, entry.stat(follow_symlinks=False).st_mode) for entry in listing
                ]
        finally:
            os.close(fd)
        depth = directory.count("/") + 2 if directory else 1
        for name, mode in sorted(found):
            relative = f"{directory}/{name}" if directory else name
            entries += 1
            spent += len(relative)
            if entries > limits.max_entries:
                raise TreeTooLarge(f"more than {limits.max_entries} entries")
            if spent > limits.max_path_bytes or len(relative) > PATH_MAX:
                raise TreeTooLarge(f"paths longer than {PATH_MAX} bytes or too many of them")
            if stat.S_ISDIR(mode):
                if depth >= limits.max_depth:
                    raise TreeTooLarge(f"directories deeper than {limits.max_depth} levels")
                pending.append(relative)
            yield relative, mode


def _open_directory(parent_fd: int, name: str) -> int:
    """Open a subdirectory through no link, opening up permissions a build took away
    (the tree is ours to remove)."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(name, flags, dir_fd=parent_fd)
    except PermissionError:
        os.fchmod(parent_fd, stat.S_IMODE(os.fstat(parent_fd).st_mode) | stat.S_IRWXU)
    try:
        return os.open(name, flags, dir_fd=parent_fd)
    except PermissionError:
        handle = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)
        try:  # chmod of what the O_PATH descriptor holds: never a link's target
            Path(f"/proc/self/fd/{handle}").chmod(stat.S_IRWXU)
        finally:
            os.close(handle)
    return os.open(name, flags, dir_fd=parent_fd)


def _remove_entry(parent_fd: int, name: str, *, directory: bool) -> None:
    remove = os.rmdir if directory else os.unlink
    try:
        remove(name, dir_fd=parent_fd)
    except PermissionError:
        os.fchmod(parent_fd, stat.S_IMODE(os.fstat(parent_fd).st_mode) | stat.S_IRWXU)
        remove(name, dir_fd=parent_fd)


def _first_subdirectory(fd: int) -> str | None:
    """Remove every non-directory in ``fd``; the name of a subdirectory left, if any."""
    with os.scandir(fd) as listing:
        for entry in listing:
            if entry.is_dir(follow_symlinks=False):
                return entry.name
            with contextlib.suppress(FileNotFoundError):
                _remove_entry(fd, entry.name, directory=False)
    return None


def remove_tree(path: Path) -> None:
    """Remove ``path`` and everything below it, at any depth (iteratively, a fixed number
    of descriptors), never following a link: a link is removed, not what it leads to.
    Permissions the tree's files lost are restored on the way (they are ours).

    Raises:
        OSError: something could not be removed (another user's file, a busy mount), or a
            directory moved while it was removed.
    """
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            path.unlink()
            return
    except FileNotFoundError:
        return
    top = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _empty(top, path)
        _remove_entry(top, path.name, directory=True)
    finally:
        os.close(top)


def _empty(top: int, path: Path) -> None:
    """Remove everything below the directory ``path`` (``top`` is its parent)."""
    fd = _open_directory(top, path.name)
    # the names from path down to fd's directory, with the identity of each one's parent
    below: list[tuple[str, tuple[int, int]]] = []
    try:
        while True:
            child = _first_subdirectory(fd)
            if child is not None:
                here = os.fstat(fd)
                step = _open_directory(fd, child)
                os.close(fd)
                fd = step
                below.append((child, (here.st_dev, here.st_ino)))
                continue
            if not below:
                return
            name, parent_id = below.pop()
            up = os.open("..", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = up
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != parent_id:
                raise OSError(errno.ESTALE, "a directory moved while it was removed", str(path))
            _remove_entry(fd, name, directory=True)
    finally:
        os.close(fd)
