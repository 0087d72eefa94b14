"""A rebuild request on the wire: the spec's directory as a gzipped tar, and unpacking it
on a node without trusting it: no absolute paths, no '..', nothing written through a link,
no link whose resolution leaves the tree, a regular hermetic.toml at the root, and caps on
members, unpacked bytes, path length and depth, link targets, the work of resolving links
and extended headers that stop a bomb early with bounded memory and time."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from rebuilder.errors import UserError
from sandbox.beneath import (
    PATH_MAX,
    ResolutionBudget,
    TooMuchResolution,
    TreeLimits,
    TreeTooLarge,
    make_dirs_beneath,
    resolve_all_beneath,
    walk_beneath,
)
from sandbox.source_tree import EXCLUDED_NAMES, stage_source
from sandbox.spec import Limits, Spec

REQUEST_SPEC = "hermetic.toml"
_CHUNK = 1 << 20
_HEADER_BUDGET = 4 * 1024**2  # pax and GNU long-name data, all headers together
_PAX_HEADER_MAX = 1024**2  # one pax header
MAX_DEPTH = 128  # directories in one member's path
# Every link of a request resolved together: a legitimate tree needs a few lookups per link.
RESOLUTION_STEPS = 1_000_000
_TREE = TreeLimits(max_depth=MAX_DEPTH + 1, max_entries=10_000_000)  # members are capped
_LONG_HEADERS = (
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
)
_NAME_HEADERS = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)


# A node's maximums for what a stranger's spec may ask of it (``node serve --max-timeout``
# and the others): the spec defaults fit, with room for larger builds.
DEFAULT_CEILINGS = Limits(
    timeout_s=3600,
    memory_bytes=8 * 1024**3,
    pids=16384,
    disk_bytes=20 * 1024**3,
    log_bytes=256 * 1024**2,
)


@dataclass(frozen=True, kw_only=True)
class RequestLimits:
    """What a node accepts of a request: how much it may unpack to (``--max-unpacked``,
    ``--max-members``), the largest limits its spec may ask for (``--max-timeout``,
    ``--max-memory``, ``--max-pids``, ``--max-disk``, ``--max-log``), how many inputs it
    may name (``--max-inputs``) and how large its outputs may be together (``--max-output``)."""

    max_members: int = 100_000
    max_unpacked_bytes: int = 1024**3
    ceilings: Limits = DEFAULT_CEILINGS
    max_inputs: int = 64
    max_output_bytes: int = 4 * 1024**3

    def refusal(self, spec: Spec) -> str | None:
        """Why a node does not build this spec for a stranger (None: it does)."""
        over = spec.limits.above(self.ceilings)
        if len(spec.inputs) > self.max_inputs:
            over.append(f"{len(spec.inputs)} inputs are more than {self.max_inputs}")
        if not over:
            return None
        return f"{REQUEST_SPEC}: more than this node allows: {'; '.join(over)}"


class RequestError(UserError):
    """A submitted request is not a usable source archive."""


def pack_source(source_dir: Path, scratch: Path) -> bytes:
    """The source tree as hermetic stages it (the spec at its root), as tar.gz bytes."""
    staged = scratch / "staged"
    stage_source(source_dir, staged)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in sorted(staged.rglob("*")):
            info = archive.gettarinfo(path, arcname=path.relative_to(staged).as_posix())
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            if info.isfile():
                with path.open("rb") as stream:
                    archive.addfile(info, stream)
            else:
                archive.addfile(info)
    return buffer.getvalue()


def _lexically_inside(link: PurePosixPath, target: PurePosixPath) -> bool:
    """A first, cheap look at a link (the full check resolves it once all is unpacked)."""
    if target.is_absolute():
        return False
    parts = list(link.parent.parts)
    for part in target.parts:
        if part == "..":
            if not parts:
                return False
            parts.pop()
        elif part != ".":
            parts.append(part)
    return True


def _safe(member: tarfile.TarInfo) -> str | None:
    """Why a member may not be unpacked (None: it may)."""
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts:
        return "a path outside the tree"
    if len(os.fsencode(member.name)) > PATH_MAX or len(name.parts) > MAX_DEPTH:
        return f"a path longer than {PATH_MAX} bytes or deeper than {MAX_DEPTH} directories"
    if member.issym() and len(os.fsencode(member.linkname)) > PATH_MAX:
        return f"a symlink target longer than {PATH_MAX} bytes"
    if any(part in EXCLUDED_NAMES for part in name.parts):
        return "a git directory (hermetic never sends one; git would read its config)"
    if member.issparse() or not (member.isfile() or member.isdir() or member.issym()):
        return "not a file, directory or symlink"
    if member.issym() and not _lexically_inside(name, PurePosixPath(member.linkname)):
        return "a symlink leaving the tree"
    if member.mode & 0o6000:
        return "setuid or setgid"
    return None


class _TooLarge(Exception):
    """An extended header beyond the budget (raised from inside tarfile's parsing)."""


class _GuardedTarInfo(tarfile.TarInfo):
    """Refuses pax and GNU long-name headers beyond a budget before tarfile reads them
    into memory (one such header may declare gigabytes)."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> Any:
        if self.type in _LONG_HEADERS:
            # a long name is a path (PATH_MAX); a pax header carries a few short records
            largest = _PAX_HEADER_MAX if self.type not in _NAME_HEADERS else PATH_MAX + 1
            if self.size > largest:
                raise _TooLarge(f"an extended header larger than {largest} bytes")
            spent = getattr(tarfile_, "_hermetic_header_bytes", 0) + self.size
            if spent > _HEADER_BUDGET:
                raise _TooLarge(f"extended headers larger than {_HEADER_BUDGET} bytes")
            tarfile_._hermetic_header_bytes = spent  # type: ignore[attr-defined]
        return super()._proc_member(tarfile_)  # type: ignore[misc]


def unpack_source(data: bytes, dest: Path, limits: RequestLimits | None = None) -> None:
    """Unpack a submitted archive into dest (created), refusing anything unsafe.

    Members are read one at a time and the caps checked as they come, so a bomb is
    refused at the first member over a cap. Nothing is written through a link; links are
    checked by resolution once every member is in place.

    Raises:
        RequestError: not a tar.gz, an unsafe member, a cap exceeded, a link leading out
            of the tree, or no regular hermetic.toml at its root.
    """
    limits = limits or RequestLimits()
    dest.mkdir(parents=True)
    members = 0
    unpacked = 0
    try:
        with tarfile.open(
            fileobj=io.BytesIO(data), mode="r:gz", tarinfo=_GuardedTarInfo
        ) as archive:
            for member in archive:
                members += 1
                if members > limits.max_members:
                    raise RequestError(
                        f"the source archive has more than {limits.max_members} members"
                    )
                problem = _safe(member)
                if problem:
                    raise RequestError(f"refused {member.name!r} in the source archive: {problem}")
                unpacked += member.size if member.isfile() else 0
                if unpacked > limits.max_unpacked_bytes:
                    raise RequestError(
                        f"the source archive unpacks to more than {limits.max_unpacked_bytes} bytes"
                    )
                _unpack_member(archive, member, dest)
    except _TooLarge as e:
        raise RequestError(f"the source archive cannot be read: {e}") from None
    except (tarfile.TarError, EOFError) as e:
        raise RequestError(f"the source archive cannot be read: {e}") from None
    except OSError as e:  # the message only: the filename is a path on the node
        raise RequestError(f"the source archive cannot be unpacked: {e.strerror}") from None
    _check_links(dest)
    try:
        spec = os.lstat(dest / REQUEST_SPEC)
    except FileNotFoundError:
        raise RequestError(f"the source archive has no {REQUEST_SPEC} at its root") from None
    if not stat.S_ISREG(spec.st_mode):
        raise RequestError(f"{REQUEST_SPEC} in the source archive must be a regular file")


def _unpack_member(archive: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> None:
    parts = [p for p in PurePosixPath(member.name).parts if p != "."]
    if not parts:
        return  # the archive's own root directory
    name = parts[-1]
    try:
        parent = make_dirs_beneath(dest, "/".join(parts[:-1]))
    except OSError:
        raise RequestError(
            f"refused {member.name!r}: a directory on its way is a link or a file"
        ) from None
    try:
        if member.isdir():
            try:
                os.mkdir(name, 0o755, dir_fd=parent)
            except FileExistsError:
                if not stat.S_ISDIR(os.lstat(name, dir_fd=parent).st_mode):
                    raise RequestError(
                        f"refused {member.name!r}: it is in the archive twice"
                    ) from None
            return
        try:
            if member.issym():
                os.symlink(member.linkname, name, dir_fd=parent)
                return
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(name, flags, 0o755 if member.mode & 0o111 else 0o644, dir_fd=parent)
        except FileExistsError:
            raise RequestError(f"refused {member.name!r}: it is in the archive twice") from None
        stream = archive.extractfile(member)
        assert stream is not None
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(_CHUNK):
                out.write(chunk)
    finally:
        os.close(parent)


def _check_links(root: Path) -> None:
    """Every link must resolve inside the tree, following the links on its way; each link
    is resolved once, and all of them within one budget of lookups."""
    try:
        links = [path for path, mode in walk_beneath(root, _TREE) if stat.S_ISLNK(mode)]
        resolved = resolve_all_beneath(root, links, budget=ResolutionBudget(RESOLUTION_STEPS))
    except TreeTooLarge as e:
        raise RequestError(f"the source archive is too large a tree: {e}") from None
    except TooMuchResolution:
        raise RequestError(
            "the source archive's links take too much work to resolve "
            f"(more than {RESOLUTION_STEPS} lookups)"
        ) from None
    for relative, where in zip(links, resolved, strict=True):
        if where is None:
            raise RequestError(
                f"refused {relative!r} in the source archive: a symlink that leads "
                "out of the tree once the links on its way are followed"
            )
