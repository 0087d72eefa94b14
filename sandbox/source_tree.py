"""The source tree as a pinned input: a machine-independent digest and a staged snapshot.

The digest covers relative paths, entry kinds, normalized modes (executable or not),
file contents and symlink targets; mtimes, owners and the checkout's umask do not count.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath

from sandbox.digests import Sha256, sha256_file
from sandbox.environment import SourceOrder
from sandbox.errors import InputError

OUT_MARKER = ".hermetic-out"
"""File hermetic writes into every output directory, so that a later build skips it."""

EXCLUDED_NAMES = frozenset({".git"})
_DIGEST_VERSION = b"hermetic-tree-v1\0"

# Files where tools keep credentials. A source tree goes into the build (whose outputs
# anyone may read), into result files, and to rebuilder nodes: a literal credential in
# one of these is refused when the tree is staged. A reference to the environment
# (``${NPM_TOKEN}``) is not a credential: the build's environment has no such variable.
_MAX_CREDENTIAL_FILE = 1 << 20
_NPM_SECRET_RE = re.compile(
    r"^\s*(?:[^#;\s=][^=\s]*)?(?:_authToken|_auth|_password)\s*=\s*(?P<value>.*?)\s*$",
    re.MULTILINE,
)
_YARN_SECRET_RE = re.compile(
    r"^\s*(?:npmAuthToken|npmAuthIdent|npmPassword)\s*:\s*(?P<value>.*?)\s*$", re.MULTILINE
)
_INI_PASSWORD_RE = re.compile(r"^\s*password\s*[=:]\s*(?P<value>.*?)\s*$", re.MULTILINE)
_NETRC_PASSWORD_RE = re.compile(r"(?:^|\s)password\s+(?P<value>\S+)")
_URL_CREDENTIALS_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/@\s:]+:(?P<value>[^/@\s]+)@")
_DOCKER_AUTH_RE = re.compile(r'"(?:auth|identitytoken)"\s*:\s*"(?P<value>[^"]+)"')
_ENV_REFERENCE_RE = re.compile(r'["\']?\$\{[A-Za-z_][A-Za-z0-9_]*\}["\']?')
_CREDENTIAL_FILES: dict[str, tuple[re.Pattern[str], ...]] = {
    ".npmrc": (_NPM_SECRET_RE,),
    ".yarnrc.yml": (_YARN_SECRET_RE,),
    ".pypirc": (_INI_PASSWORD_RE,),
    ".netrc": (_NETRC_PASSWORD_RE,),
    "_netrc": (_NETRC_PASSWORD_RE,),
    "pip.conf": (_URL_CREDENTIALS_RE,),
    "pip.ini": (_URL_CREDENTIALS_RE,),
    ".git-credentials": (_URL_CREDENTIALS_RE,),
    "containers/auth.json": (_DOCKER_AUTH_RE,),
    ".docker/config.json": (_DOCKER_AUTH_RE,),
}


def _credential_patterns(relative: PurePath) -> tuple[re.Pattern[str], ...] | None:
    return _CREDENTIAL_FILES.get(relative.name) or _CREDENTIAL_FILES.get(
        f"{relative.parent.name}/{relative.name}"
    )


def credential_in(relative: PurePath, data: bytes) -> str | None:
    """What credential a file of a source tree holds, by its name's format (None: none).

    A value that only names an environment variable (``${NPM_TOKEN}``) does not count.
    """
    patterns = _credential_patterns(relative)
    if patterns is None:
        return None
    text = data[:_MAX_CREDENTIAL_FILE].decode("utf-8", "replace")
    for pattern in patterns:
        for match in pattern.finditer(text):
            value = match.group("value")
            if value and not _ENV_REFERENCE_RE.fullmatch(value):
                line = text.count("\n", 0, match.start("value")) + 1
                return f"a literal secret on line {line}"  # never any of it: it is a secret
    return None


@dataclass(frozen=True, kw_only=True)
class TreeEntry:
    """One entry of a source tree, as it counts for the digest."""

    path: bytes
    kind: str  # "d" directory, "f" file, "l" symlink
    mode: int
    content: bytes  # hex digest of a file, target of a symlink, empty for a directory
    size: int = 0


@dataclass(frozen=True, kw_only=True)
class SourceSnapshot:
    """What was staged: its digest and how much of it there is."""

    digest: Sha256
    files: int
    bytes: int


def _normalized_mode(kind: str, st_mode: int) -> int:
    if kind == "f":
        return 0o755 if st_mode & 0o111 else 0o644
    return 0o755 if kind == "d" else 0o777


def _scan(root: Path) -> Iterator[tuple[Path, str, os.stat_result]]:
    """Yield (path, kind, stat) for every entry under ``root``, never following links."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        kept = []
        for name in dirnames:
            full = here / name
            if name in EXCLUDED_NAMES or (full / OUT_MARKER).exists():
                continue
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                yield full, "l", st  # os.walk lists links to directories here
            else:
                kept.append(name)
                yield full, "d", st
        dirnames[:] = kept
        for name in filenames:
            if name in EXCLUDED_NAMES:
                continue
            full = here / name
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                yield full, "l", st
            elif stat.S_ISREG(st.st_mode):
                yield full, "f", st
            else:
                raise InputError(
                    f"{full}: the source tree may hold only files, directories and symlinks; "
                    "remove this special file or move it out of the source directory"
                )


def _entries(root: Path, stage_into: Path | None) -> list[TreeEntry]:
    entries = []
    for full, kind, st in _scan(root):
        relative = full.relative_to(root)
        mode = _normalized_mode(kind, st.st_mode)
        size = 0
        if kind == "f":
            if stage_into is not None:
                digest, size = _copy_hashing(full, stage_into / relative, mode)
                _refuse_credentials(stage_into / relative, relative)
            else:
                digest, size = sha256_file(full)
            content = digest.encode()
        elif kind == "l":
            target = os.readlink(full)
            content = os.fsencode(target)
            if stage_into is not None:
                (stage_into / relative).parent.mkdir(parents=True, exist_ok=True)
                os.symlink(target, stage_into / relative)
        else:
            content = b""
            if stage_into is not None:
                (stage_into / relative).mkdir(parents=True, exist_ok=True)
        entries.append(
            TreeEntry(path=os.fsencode(relative), kind=kind, mode=mode, content=content, size=size)
        )
    entries.sort(key=lambda entry: entry.path)
    return entries


def _refuse_credentials(staged: Path, relative: Path) -> None:
    if _credential_patterns(relative) is None:
        return
    with staged.open("rb") as stream:
        found = credential_in(relative, stream.read(_MAX_CREDENTIAL_FILE))
    if found is not None:
        raise InputError(
            f"{relative}: holds a credential ({found}); the source tree goes into the build, "
            "its results and to rebuilder nodes. Keep the credential in your own file "
            "(~/.npmrc, ~/.pypirc, ~/.netrc, ~/.config/pip/pip.conf) or refer to it as "
            "${VARIABLE}, and remove it from the project"
        )


def _copy_hashing(source: Path, dest: Path, mode: int) -> tuple[Sha256, int]:
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as reader, dest.open("xb") as writer:
        while chunk := reader.read(1 << 20):
            digest.update(chunk)
            writer.write(chunk)
            size += len(chunk)
    dest.chmod(mode)
    return Sha256(digest.hexdigest()), size


def digest_entries(entries: list[TreeEntry]) -> Sha256:
    """The canonical digest of a sorted entry list (format in the README)."""
    digest = hashlib.sha256(_DIGEST_VERSION)
    for entry in entries:
        for part in (entry.kind.encode(), b"%o" % entry.mode, entry.path, entry.content):
            digest.update(part + b"\0")
    return Sha256(digest.hexdigest())


def tree_digest(root: Path) -> Sha256:
    """Digest of the source tree under ``root`` (see the module docstring)."""
    return digest_entries(_entries(root, None))


def stage_source(root: Path, dest: Path) -> SourceSnapshot:
    """Copy the source tree into ``dest`` and digest exactly what was copied.

    Hashing the copy, not the original, pins what the build sees even if the source
    changes meanwhile. Call :func:`set_mtimes` once inputs are placed too.

    Raises:
        InputError: the source is missing or holds a special file.
    """
    if not root.is_dir():
        raise InputError(f"{root}: the source directory does not exist")
    dest.mkdir(parents=True, exist_ok=True)
    entries = _entries(root, dest)
    files = sum(1 for entry in entries if entry.kind == "f")
    return SourceSnapshot(
        digest=digest_entries(entries), files=files, bytes=sum(e.size for e in entries)
    )


def set_mtimes(root: Path, mtime: int) -> None:
    """Set every mtime under ``root`` (links themselves, not their targets) to ``mtime``.

    With one mtime (SOURCE_DATE_EPOCH) everywhere, make and friends see the same
    tree on every machine, and generated files never look older than their sources.
    """
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in (*filenames, *dirnames):
            os.utime(Path(dirpath) / name, (mtime, mtime), follow_symlinks=False)
    os.utime(root, (mtime, mtime))


def write_archive(root: Path, archive: Path, *, order: SourceOrder) -> None:
    """The staged tree as a tar whose entries come in ``order`` within each directory.

    The build extracts it, so its directories list their entries in this order on
    every machine (tmpfs lists entries in creation order); a check reverses it.
    """

    def entries(directory: Path) -> Iterator[Path]:
        children = sorted(directory.iterdir(), key=lambda p: os.fsencode(p.name))
        if order is SourceOrder.REVERSED:
            children.reverse()
        for child in children:
            yield child
            if child.is_dir() and not child.is_symlink():
                yield from entries(child)

    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in entries(root):
            info = tar.gettarinfo(str(path), arcname=path.relative_to(root).as_posix())
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if info.isfile():
                with path.open("rb") as stream:
                    tar.addfile(info, stream)
            else:
                tar.addfile(info)


def place_file(source: Path, root: Path, relative: Path) -> None:
    """Copy one verified input into the staged tree at ``relative``.

    Raises:
        InputError: something already exists there, or a directory on the way is a
            symlink (which could point the copy outside the tree).
    """
    where = root
    for part in relative.parts[:-1]:
        where = where / part
        if where.is_symlink() or (where.exists() and not where.is_dir()):
            raise InputError(
                f"input dest {relative}: {where.relative_to(root)} in the source tree is not "
                "a plain directory; pick another dest"
            )
    dest = root / relative
    if os.path.lexists(dest):
        raise InputError(f"input dest {relative} already exists in the source tree; pick another")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, dest)
    dest.chmod(0o644)
