"""Outputs: globs resolved in the handed-back build dir, checked, hashed and copied out.

Nothing under the build dir is trusted: links are never followed when reading or
copying, and a setuid or setgid file, a device, fifo or socket, or a link whose
resolution leaves the build dir (following every link on the way, as the kernel would)
is refused, so no published link can read a host file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wcmatch import glob

from sandbox.beneath import (
    TreeLimits,
    TreeTooLarge,
    make_dirs_beneath,
    open_beneath,
    resolve_beneath,
    walk_beneath,
)
from sandbox.digests import Sha256, sha256_bytes, sha256_stream
from sandbox.errors import OutputError

_GLOB_FLAGS = glob.GLOBSTAR | glob.DOTGLOB
_DIGEST_VERSION = b"hermetic-outputs-v2\0"


@dataclass(frozen=True, kw_only=True)
class OutputFile:
    """One output: a regular file, or a symlink that stays inside the build dir."""

    path: str
    sha256: Sha256  # of the content; of the target text for a symlink
    size: int
    mode: int
    target: str | None = None

    @property
    def digest_mode(self) -> int:
        """The mode as the set digest counts it: executable or not (as git and Nix do).

        The umask decides the other bits of most files; they are recorded in ``mode``
        but are not what makes two builds' outputs the same artifact.
        """
        if self.target is not None:
            return 0o777
        return 0o755 if self.mode & 0o111 else 0o644

    @property
    def identity(self) -> tuple[str, int, str]:
        """What the set digest covers of this file: kind, digest mode, content digest."""
        return ("l" if self.target is not None else "f", self.digest_mode, self.sha256)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "path": self.path,
            "sha256": self.sha256,
            "size": self.size,
            "mode": f"{self.mode:04o}",
        }
        if self.target is not None:
            data["symlink"] = self.target
        return data


@dataclass(frozen=True, kw_only=True)
class OutputManifest:
    """Every output, sorted by path, and the canonical digest of the set."""

    files: tuple[OutputFile, ...]
    digest: Sha256

    @classmethod
    def of(cls, files: list[OutputFile]) -> OutputManifest:
        ordered = tuple(sorted(files, key=lambda f: f.path.encode()))
        return cls(files=ordered, digest=canonical_digest(ordered))


def canonical_digest(files: tuple[OutputFile, ...]) -> Sha256:
    """sha256 over (kind, digest mode, path, content digest) of each output, by path."""
    digest = hashlib.sha256(_DIGEST_VERSION)
    for item in files:
        kind, mode, content = item.identity
        for part in (kind.encode(), b"%o" % mode, item.path.encode(), content.encode()):
            digest.update(part + b"\0")
    return Sha256(digest.hexdigest())


def _all_paths(root: Path) -> list[str]:
    """Relative POSIX paths of every entry under root, without following links.

    Raises:
        OutputError: the build left a tree too deep or too large to walk (its own doing).
    """
    try:
        return [relative for relative, _ in walk_beneath(root, TreeLimits())]
    except TreeTooLarge as e:
        raise OutputError(f"the build directory is too large to look for outputs in: {e}") from None


def _is_directory(path: Path) -> bool:
    return stat.S_ISDIR(path.lstat().st_mode)


def _describe(root: Path, relative: str) -> OutputFile:
    try:
        relative.encode("utf-8")
    except UnicodeEncodeError:
        # Its bytes are not UTF-8 (kept as surrogates): no digest, manifest or
        # attestation can name it faithfully.
        shown = relative.encode("utf-8", "surrogateescape").decode("ascii", "backslashreplace")
        raise OutputError(
            f"output {shown} has a name that is not valid UTF-8; rename it in the build"
        ) from None
    path = root / relative
    st = path.lstat()
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(path)
        if resolve_beneath(root, relative) is None:
            raise OutputError(
                f"output {relative} is a symlink leaving the build directory once the links "
                f"on its way are followed ({target}); refused"
            )
        encoded = os.fsencode(target)
        try:
            encoded.decode("utf-8")
        except UnicodeDecodeError:
            raise OutputError(
                f"output {relative} is a symlink whose target is not valid UTF-8; refused"
            ) from None
        return OutputFile(
            path=relative,
            sha256=sha256_bytes(encoded),
            size=len(encoded),
            mode=0o777,
            target=target,
        )
    if not stat.S_ISREG(st.st_mode):
        kind = "device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "special file"
        raise OutputError(f"output {relative} is a {kind}; only files and symlinks are handed out")
    if mode & (stat.S_ISUID | stat.S_ISGID):
        raise OutputError(f"output {relative} has the setuid or setgid bit ({mode:04o}); refused")
    try:
        fd = open_beneath(root, relative)
    except OSError as e:
        raise OutputError(f"output {relative} cannot be read without following a link") from e
    with os.fdopen(fd, "rb") as stream:
        digest, size = sha256_stream(stream)
    return OutputFile(path=relative, sha256=digest, size=size, mode=mode)


def collect_outputs(root: Path, patterns: tuple[str, ...]) -> OutputManifest:
    """Resolve the spec's output globs in the build dir and describe every match.

    A pattern matching a directory takes every file under it.

    Raises:
        OutputError: a pattern matched nothing, or a match is unsafe.
    """
    paths = _all_paths(root)
    chosen: set[str] = set()
    for pattern in patterns:
        matched = [p for p in paths if glob.globmatch(p, pattern, flags=_GLOB_FLAGS)]
        if not matched:
            raise OutputError(f"output pattern {pattern!r} matched nothing in the build directory")
        for match in matched:
            if _is_directory(root / match):
                prefix = match + "/"
                chosen.update(
                    p for p in paths if p.startswith(prefix) and not _is_directory(root / p)
                )
            else:
                chosen.add(match)
    return OutputManifest.of([_describe(root, relative) for relative in chosen])


def describe_outputs(root: Path, paths: list[str]) -> OutputManifest:
    """The manifest of exactly these paths under root (checked as collect_outputs does).

    Raises:
        OutputError: a path is missing or unsafe.
    """
    try:
        return OutputManifest.of([_describe(root, relative) for relative in paths])
    except FileNotFoundError:
        raise OutputError("an output listed is missing") from None


def copy_outputs(root: Path, manifest: OutputManifest, dest: Path) -> None:
    """Copy every output to ``dest`` keeping its relative path and mode.

    Neither side is walked through a link: sources are opened below ``root`` without
    following any, and directories under ``dest`` are made one component at a time.

    Raises:
        OutputError: an output changed into a link since it was described.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for item in manifest.files:
        parent, _, name = item.path.rpartition("/")
        try:
            parent_fd = make_dirs_beneath(dest, parent)
            try:
                if item.target is not None:
                    os.symlink(item.target, name, dir_fd=parent_fd)
                    continue
                source = open_beneath(root, item.path)
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                target = os.open(name, flags, 0o600, dir_fd=parent_fd)
                with os.fdopen(source, "rb") as reader, os.fdopen(target, "wb") as writer:
                    shutil.copyfileobj(reader, writer, 1 << 20)
                    os.fchmod(writer.fileno(), item.mode)
            finally:
                os.close(parent_fd)
        except OSError as e:
            raise OutputError(
                f"output {item.path} cannot be copied without following a link"
            ) from e
