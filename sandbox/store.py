"""Content-addressed store of fetched inputs: a file's name is its sha256, checked on every use.

A node's store also records where each file came from (its URL) and serves a file only to
a fetch of the same URL: a digest someone else's job fetched is not handed to a spec that
names it with another URL (the provenance would name a URL that was never fetched), and
whether the node holds a digest tells a client nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

from sandbox.digests import Sha256, sha256_file
from sandbox.errors import DigestMismatch, SandboxError

log = logging.getLogger(__name__)


class StoreError(SandboxError):
    """The store cannot be written (a full disk, permissions): the host's fault."""


def _write(sink: BinaryIO, chunk: bytes, root: Path, *, flush: bool = False) -> None:
    try:
        sink.write(chunk)
        if flush:
            sink.flush()
            os.fsync(sink.fileno())
    except OSError as e:
        raise StoreError(
            f"cannot write the input store {root}: {e.strerror}; nothing was stored. Free "
            "space there or point HERMETIC_STORE at a larger file system."
        ) from e


class ContentStore:
    """Files named by their digest under ``root/sha256/``; writes are atomic."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._dir = root / "sha256"
        self._origins = root / "origins"

    def path_of(self, digest: Sha256) -> Path:
        """Where the file with this digest lives (whether or not it is there)."""
        return self._dir / digest

    def get(self, digest: Sha256) -> Path | None:
        """The stored file with this digest, re-verified; None when absent.

        A file whose content no longer matches its name is removed, so the caller
        fetches it again instead of building with damaged bytes.
        """
        path = self.path_of(digest)
        if not path.is_file():
            return None
        actual, _ = sha256_file(path)
        if actual != digest:
            log.warning("store entry %s is damaged (content sha256:%s); removing it", path, actual)
            path.unlink(missing_ok=True)
            return None
        return path

    def get_from(self, url: str, digest: Sha256) -> Path | None:
        """The stored file with this digest if it was fetched from ``url`` (None: never,
        or absent, or damaged). A hit counts as a use: its time is renewed (a node prunes
        what was not used for its retention time)."""
        record = self._origins / _origin_name(url, digest)
        if not record.is_file():
            return None
        found = self.get(digest)
        if found is not None:
            for path in (found, record):
                os.utime(path)
        return found

    def add(
        self,
        chunks: Iterable[bytes],
        *,
        expected: Sha256,
        what: str,
        on_bytes: Callable[[int], None] | None = None,
        disclose: bool = True,
        origin: str | None = None,
    ) -> Path:
        """Write a stream into the store if, and only if, it has the expected digest.

        Args:
            chunks: the content.
            expected: the pinned digest.
            what: how the content is named in errors (its URL).
            on_bytes: called with the number of bytes written so far.
            disclose: whether a mismatch may tell the actual digest (not on a node).
            origin: the URL it was fetched from, recorded for :meth:`get_from`.

        Raises:
            DigestMismatch: the content has another digest; nothing is kept.
            StoreError: the store cannot be written.
        """
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
            fd, temp_name = tempfile.mkstemp(dir=self._dir, prefix=".incoming-")
        except OSError as e:
            raise StoreError(f"cannot write the input store {self.root}: {e}") from e
        temp = Path(temp_name)
        try:
            digest = hashlib.sha256()
            written = 0
            with os.fdopen(fd, "wb") as sink:
                for chunk in chunks:
                    digest.update(chunk)
                    _write(sink, chunk, self.root)
                    written += len(chunk)
                    if on_bytes is not None:
                        on_bytes(written)
                _write(sink, b"", self.root, flush=True)
            actual = Sha256(digest.hexdigest())
            if actual != expected:
                raise DigestMismatch(
                    what=what, expected=expected, actual=actual if disclose else None
                )
            temp.chmod(0o444)
            final = self.path_of(expected)
            os.replace(temp, final)
            if origin is not None:
                self._origins.mkdir(parents=True, exist_ok=True)
                (self._origins / _origin_name(origin, expected)).touch()
            return final
        finally:
            temp.unlink(missing_ok=True)


def _origin_name(url: str, digest: Sha256) -> str:
    return hashlib.sha256(f"{url}\0{digest}".encode()).hexdigest()
