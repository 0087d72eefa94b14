"""The git commit a source tree is, when it is one: the builder checks that the commit's
content has exactly the source tree digest it built from before it names the commit, so a
policy can bind a release to ``git+<repository>@<commit>``.

A dirty checkout, untracked files, export filters or a shallow object store all make the
digests differ; the provenance then names the tree digest alone. Never an error: a source
without a provable commit is still a source.
"""

from __future__ import annotations

import logging
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit, urlunsplit

from rebuilder.attest.predicates import SourceRef
from sandbox.errors import Error as SandboxRootError
from sandbox.proc import run as run_program
from sandbox.source_tree import tree_digest

log = logging.getLogger(__name__)
_GIT_TIMEOUT_S = 120


def _git(source_dir: Path, *args: str) -> str | None:
    done = run_program(
        ["git", "-c", "safe.directory=*", "-C", str(source_dir), *args],
        timeout=_GIT_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        return None
    return done.stdout.decode("utf-8", "replace").strip()


def repository_uri(remote: str) -> str | None:
    """A remote as a ``git+`` URI without credentials (``https://user:token@…`` is cut)."""
    if "://" not in remote:
        host, sep, where = remote.partition(":")  # scp-like git@host:org/repo
        if not sep or "/" in host:
            return None  # a local path: not a repository anyone else can name
        remote = f"ssh://{host}/{where}"
    parts = urlsplit(remote)
    if parts.scheme not in ("https", "http", "ssh", "git") or not parts.hostname:
        return None
    user = parts.username if parts.scheme == "ssh" and parts.username == "git" else None
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    netloc = f"{user}@{host}" if user else host
    return "git+" + urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _unpack(archive: Path, dest: Path) -> None:
    """Unpack ``git archive`` output: files, directories and links, nothing outside."""
    dest.mkdir()
    with tarfile.open(archive) as unpacked:
        for member in unpacked:
            name = PurePosixPath(member.name)
            if name.is_absolute() or ".." in name.parts:
                raise tarfile.TarError(f"{member.name}: a path outside the tree")
            target = dest.joinpath(*name.parts)
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
            elif member.issym():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(member.linkname)
            elif member.isfile():
                target.parent.mkdir(parents=True, exist_ok=True)
                stream = unpacked.extractfile(member)
                if stream is None:
                    raise tarfile.TarError(f"{member.name}: unreadable")
                with stream, target.open("xb") as out:
                    shutil.copyfileobj(stream, out)
                target.chmod(0o755 if member.mode & 0o111 else 0o644)
            elif member.type != tarfile.XGLTYPE:  # the commit id git archive adds
                raise tarfile.TarError(f"{member.name}: not a file, directory or link")


def git_source(source_dir: Path, tree_sha256: str) -> SourceRef:
    """The source as a provenance names it: the tree digest, and the checkout's ``HEAD``
    commit (with its ``origin``) when that commit's content has exactly this digest."""
    plain = SourceRef(sha256=tree_sha256)
    try:
        commit = _git(source_dir, "rev-parse", "--verify", "HEAD^{commit}")
        prefix = _git(source_dir, "rev-parse", "--show-prefix")
        top = _git(source_dir, "rev-parse", "--show-toplevel")
        if not commit or prefix is None or not top:
            return plain
        with tempfile.TemporaryDirectory(prefix="hermetic-git-") as scratch:
            archive = Path(scratch) / "head.tar"
            tree = f"{commit}:{prefix}" if prefix else commit
            if _git(Path(top), "archive", "--format=tar", "-o", str(archive), tree) is None:
                return plain
            content = Path(scratch) / "tree"
            _unpack(archive, content)
            if tree_digest(content) != tree_sha256:
                log.info("the source is not exactly git commit %s; naming its digest only", commit)
                return plain
        remote = _git(source_dir, "remote", "get-url", "origin")
    except (SandboxRootError, OSError, tarfile.TarError) as e:
        log.debug("no git commit for %s: %s", source_dir, e)
        return plain
    repository = repository_uri(remote) if remote else None
    subdirectory = f"#{prefix.rstrip('/')}" if prefix else ""
    return SourceRef(
        sha256=tree_sha256,
        git_commit=commit,
        uri=f"{repository}@{commit}{subdirectory}" if repository else None,
    )
