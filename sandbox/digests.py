"""Digest types and hashing helpers shared by every module that pins or checks bytes."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, BinaryIO, NewType

Sha256 = NewType("Sha256", str)
"""A sha256 digest as 64 lowercase hex characters, without a prefix."""

_HEX64 = re.compile(r"\A[0-9a-f]{64}\Z")
_CHUNK = 1 << 20


def is_sha256(value: object) -> bool:
    """Whether ``value`` is exactly a digest as documents carry it: 64 lower-case hex
    characters, no prefix (what a signed document says is read one way only)."""
    return isinstance(value, str) and _HEX64.match(value) is not None


def parse_sha256(value: str, *, strict: bool = False) -> Sha256:
    """Accept 64 hex characters, optionally prefixed by ``sha256:``.

    Args:
        strict: only the ``sha256:``-prefixed or bare lower-case form (no upper case).

    Raises:
        ValueError: when the value is not a sha256 digest.
    """
    text = value.removeprefix("sha256:") if isinstance(value, str) else ""
    if not strict:
        text = text.lower()
    if not is_sha256(text):
        raise ValueError(f"expected a sha256 digest (64 hex characters), got {value!r}")
    return Sha256(text)


def canonical_json(value: Any, *, ascii_only: bool = True) -> bytes:
    """The one canonical JSON of what hermetic hashes or signs: sorted keys, no
    insignificant whitespace; ``ascii_only`` escapes every non-ASCII character (statements,
    recipes) or keeps it as UTF-8 (OCI documents, as podman writes them)."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=ascii_only
    ).encode()


def sha256_bytes(data: bytes) -> Sha256:
    """Digest of a byte string."""
    return Sha256(hashlib.sha256(data).hexdigest())


def sha256_stream(stream: BinaryIO) -> tuple[Sha256, int]:
    """Digest and length of everything left in a binary stream."""
    digest = hashlib.sha256()
    size = 0
    while chunk := stream.read(_CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return Sha256(digest.hexdigest()), size


def sha256_file(path: Path) -> tuple[Sha256, int]:
    """Digest and size of a file (symlinks are not followed)."""
    import os

    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as stream:
        return sha256_stream(stream)


def prefixed(digest: Sha256) -> str:
    """Render a digest as ``sha256:<hex>``, the form used in every document."""
    return f"sha256:{digest}"
