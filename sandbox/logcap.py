"""The build log: kept up to its limit, then cut with a marker that says how much was dropped."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO


@dataclass(frozen=True, kw_only=True)
class LogSummary:
    """What became of the build's output."""

    path: Path
    sha256: str
    bytes_seen: int
    bytes_kept: int
    truncated: bool

    def to_json(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "bytes": self.bytes_seen,
            "kept": self.bytes_kept,
            "truncated": self.truncated,
        }


class CappedLog:
    """Writes at most ``cap`` bytes of build output to ``path``, then a marker."""

    def __init__(self, path: Path, cap: int) -> None:
        self.path = path
        self.cap = cap
        self._stream: BinaryIO = path.open("wb")
        self._digest = hashlib.sha256()
        self._seen = 0
        self._kept = 0

    def write(self, chunk: bytes) -> None:
        self._seen += len(chunk)
        room = self.cap - self._kept
        if room > 0:
            part = chunk[:room]
            self._stream.write(part)
            self._digest.update(part)
            self._kept += len(part)

    def close(self) -> LogSummary:
        """Finish the file (adding the marker when output was dropped) and summarize it."""
        truncated = self._seen > self._kept
        if truncated:
            marker = (
                f"\n[hermetic: log truncated at {self._kept} bytes; "
                f"at least {self._seen - self._kept} more bytes dropped]\n"
            ).encode()
            self._stream.write(marker)
            self._digest.update(marker)
        self._stream.close()
        return LogSummary(
            path=self.path,
            sha256=f"sha256:{self._digest.hexdigest()}",
            bytes_seen=self._seen,
            bytes_kept=self._kept,
            truncated=truncated,
        )
