"""The git commit a source tree is, when it is one: the builder checks that the commit's
content is exactly the source tree it built from before it names the commit, so a policy
can bind a release to ``git+<repository>@<commit>``.

The check never trusts the checkout's tools or settings: the commit's tree is listed with
``git ls-tree`` (modes and object ids, which git derives from the content), and every
file of the source is hashed here, once, both as git hashes a blob and as hermetic's
source tree digest. The commit is named only when the listing equals the files read and
those files have the tree digest built; git runs as :mod:`sandbox.git_checkout` says
(no filters, no replace objects, no configuration but the repository's own, no network).

A modified, untracked or ignored file, an empty directory, a submodule, replace refs or
grafts, or a repository this user does not own: the provenance names the tree digest
alone. Never an error: a source without a provable commit is still a source.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from rebuilder.errors import Error
from rebuilder.formats.provenance import SourceRef
from sandbox.git_checkout import history_rewritten, repository_top, run_git
from sandbox.source_tree import EXCLUDED_NAMES, OUT_MARKER, TreeEntry, digest_entries

log = logging.getLogger(__name__)

Listing = dict[bytes, tuple[str, str]]  # path -> (git mode, object id; "" for a tree)
_OBJECT_FORMATS = {"sha1", "sha256"}
_GIT_MODES = {"blob": {"100644", "100755", "120000"}, "tree": {"040000"}}


class NotProvable(Exception):
    """The source cannot be shown to be the commit's content (a reason, not an error)."""


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


def parse_listing(output: bytes) -> Listing:
    """``git ls-tree -r -t -z`` output as path -> (mode, object id).

    Raises:
        NotProvable: a submodule (its content is another repository's), or a record
            that is not a blob or tree of a mode hermetic's digest can match.
    """
    listing: Listing = {}
    for record in output.split(b"\0"):
        if not record:
            continue
        meta, tab, path = record.partition(b"\t")
        parts = meta.decode("ascii", "replace").split(" ")
        if not tab or len(parts) != 3:
            raise NotProvable(f"unreadable ls-tree record {record[:80]!r}")
        mode, kind, oid = parts
        if mode not in _GIT_MODES.get(kind, set()):
            raise NotProvable(f"{os.fsdecode(path)}: a {kind} of mode {mode} (a submodule?)")
        # a tree's id follows from its entries, which are compared one by one
        listing[path] = (mode, "" if kind == "tree" else oid)
    return listing


def _walk(root: Path) -> Iterator[tuple[Path, str, os.stat_result]]:
    """Every entry of the source as hermetic's tree digest counts it (never following
    links): the digest comparison below fails closed should the two rules ever differ."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        kept = []
        for name in sorted(dirnames) + sorted(filenames):
            if name in EXCLUDED_NAMES:
                continue
            full = here / name
            st = full.lstat()
            if stat.S_ISDIR(st.st_mode):
                if (full / OUT_MARKER).exists():
                    continue
                kept.append(name)
                yield full, "d", st
            elif stat.S_ISLNK(st.st_mode):
                yield full, "l", st
            elif stat.S_ISREG(st.st_mode):
                yield full, "f", st
            else:
                raise NotProvable(f"{full}: not a file, directory or link")
        dirnames[:] = kept


def _blob_id(object_format: str, content: bytes, size: int | None = None) -> hashlib._Hash:
    hasher = hashlib.new(object_format)
    hasher.update(b"blob %d\0" % (len(content) if size is None else size))
    hasher.update(content)
    return hasher


def _hash_file(path: Path, size: int, object_format: str) -> tuple[str, str]:
    """(sha256, git blob id) of a regular file, read once, not through a link."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as stream:
        if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
            raise NotProvable(f"{path}: no longer a regular file")
        sha256, blob = hashlib.sha256(), _blob_id(object_format, b"", size)
        read = 0
        while chunk := stream.read(1 << 20):
            sha256.update(chunk)
            blob.update(chunk)
            read += len(chunk)
    if read != size:
        raise NotProvable(f"{path}: changed while it was read")
    return sha256.hexdigest(), blob.hexdigest()


def read_source(root: Path, object_format: str) -> tuple[str, Listing]:
    """The source's tree digest and its content as git would list it, from one read."""
    entries: list[TreeEntry] = []
    listing: Listing = {}
    for full, kind, st in _walk(root):
        relative = os.fsencode(full.relative_to(root))
        if kind == "d":
            entries.append(TreeEntry(path=relative, kind="d", mode=0o755, content=b""))
            listing[relative] = ("040000", "")  # git has no empty directory: then it differs
            continue
        if kind == "l":
            target = os.fsencode(os.readlink(full))
            entries.append(TreeEntry(path=relative, kind="l", mode=0o777, content=target))
            listing[relative] = ("120000", _blob_id(object_format, target).hexdigest())
            continue
        sha256, blob = _hash_file(full, st.st_size, object_format)
        executable = bool(st.st_mode & 0o111)
        entries.append(
            TreeEntry(
                path=relative,
                kind="f",
                mode=0o755 if executable else 0o644,
                content=sha256.encode(),
                size=st.st_size,
            )
        )
        # as the build saw it: executable by any x bit (a commit of 100644 then differs)
        listing[relative] = ("100755" if executable else "100644", blob)
    entries.sort(key=lambda entry: entry.path)
    return digest_entries(entries), listing


def _text(output: bytes | None) -> str | None:
    return output.decode("utf-8", "replace").strip() if output is not None else None


def proven_commit(
    source_dir: Path, tree_sha256: str, *, euid: int | None = None
) -> tuple[str, Path, str]:
    """(commit, repository top, subdirectory) when the checkout's ``HEAD`` commit has exactly
    the content of ``source_dir`` and that content has ``tree_sha256``, in a checkout the
    user ``euid`` owns (default: this process's effective user).

    Raises:
        NotProvable: why not.
        sandbox.errors.Error: git is missing or timed out.
        OSError: the source cannot be read.
    """
    top = repository_top(source_dir, euid=euid)
    if top is None:
        raise NotProvable("not in a git checkout this user owns")
    prefix = source_dir.resolve().relative_to(top).as_posix()
    prefix = "" if prefix == "." else prefix
    if history_rewritten(top):
        raise NotProvable("the repository has replace refs or grafts")
    commit = _text(run_git(top, "rev-parse", "--verify", "--quiet", "HEAD^{commit}"))
    object_format = _text(run_git(top, "rev-parse", "--show-object-format"))
    if not commit or object_format not in _OBJECT_FORMATS:
        raise NotProvable("no HEAD commit")
    assert object_format is not None
    tree = f"{commit}:{prefix}" if prefix else f"{commit}^{{tree}}"
    output = run_git(top, "ls-tree", "-r", "-t", "-z", "--full-tree", tree)
    if output is None:
        raise NotProvable(f"the commit has no tree {prefix or '/'}")
    expected = parse_listing(output)
    digest, found = read_source(source_dir, object_format)
    if digest != tree_sha256:
        raise NotProvable("the source changed since it was built")
    if found != expected:
        differing = sorted(set(found.items()) ^ set(expected.items()))[:3]
        shown = ", ".join(os.fsdecode(path) for path, _ in differing)
        raise NotProvable(f"the source is not exactly the commit's content ({shown})")
    return commit, top, prefix


def git_source(source_dir: Path, tree_sha256: str, *, euid: int | None = None) -> SourceRef:
    """The source as a provenance names it: the tree digest, and the checkout's ``HEAD``
    commit (with its ``origin``) when that commit's content has exactly this digest."""
    plain = SourceRef(sha256=tree_sha256)
    try:
        commit, top, prefix = proven_commit(source_dir, tree_sha256, euid=euid)
        remote = _text(run_git(top, "remote", "get-url", "origin"))
    except NotProvable as e:
        log.info("naming the source by its digest only: %s", e)
        return plain
    except (Error, OSError) as e:
        log.info("naming the source by its digest only: cannot read it as git: %s", e)
        return plain
    repository = repository_uri(remote) if remote else None
    subdirectory = f"#{prefix}" if prefix else ""
    return SourceRef(
        sha256=tree_sha256,
        git_commit=commit,
        uri=f"{repository}@{commit}{subdirectory}" if repository else None,
    )
