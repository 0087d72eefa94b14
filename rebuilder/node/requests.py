"""A rebuild request on the wire: the spec's directory as a gzipped tar, and unpacking it
on a node without trusting it (no absolute paths, no '..', no links leaving the tree)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path, PurePosixPath

from rebuilder.errors import Error
from sandbox.source_tree import stage_source

REQUEST_SPEC = "hermetic.toml"


class RequestError(Error):
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


def _stays_inside(link: PurePosixPath, target: PurePosixPath) -> bool:
    """Whether a relative link target, resolved lexically from the link, stays in the tree."""
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
    if not (member.isfile() or member.isdir() or member.issym()):
        return "not a file, directory or symlink"
    if member.issym() and not _stays_inside(name, PurePosixPath(member.linkname)):
        return "a symlink leaving the tree"
    if member.mode & 0o6000:
        return "setuid or setgid"
    return None


def unpack_source(data: bytes, dest: Path) -> None:
    """Unpack a submitted archive into dest, refusing anything unsafe.

    Raises:
        RequestError: not a tar.gz, an unsafe member, or no hermetic.toml at its root.
    """
    dest.mkdir(parents=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            members = archive.getmembers()
            for member in members:
                problem = _safe(member)
                if problem:
                    raise RequestError(f"refused {member.name!r} in the source archive: {problem}")
            root = dest.resolve()
            for member in members:
                target = dest / member.name
                # a link unpacked earlier must not carry a later member out of the tree
                target.parent.mkdir(parents=True, exist_ok=True)
                if not target.parent.resolve().is_relative_to(root):
                    raise RequestError(f"refused {member.name!r}: it would land outside the tree")
                if target.is_symlink() or (target.exists() and not member.isdir()):
                    raise RequestError(f"refused {member.name!r}: it is in the archive twice")
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                elif member.issym():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.symlink_to(member.linkname)
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    stream = archive.extractfile(member)
                    assert stream is not None
                    target.write_bytes(stream.read())
                    target.chmod(0o755 if member.mode & 0o111 else 0o644)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise RequestError(f"the source archive cannot be read: {e}") from None
    if not (dest / REQUEST_SPEC).is_file():
        raise RequestError(f"the source archive has no {REQUEST_SPEC} at its root")
