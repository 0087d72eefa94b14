"""Following conmon's k8s-file log (CRI format) while the build runs.

Reading the file directly, instead of podman's follow API, ends the moment the
container has exited (podman's follow only notices on its next poll) and shows
when conmon cut its own copy at its size limit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

_POLL_S = 0.02
_CHUNK = 1 << 16


class CriLineJoiner:
    """Turns CRI log lines (``<time> <stream> <F|P> <text>``) back into output lines.

    ``P`` marks part of a longer line. Parts are kept per stream, so a partial line
    on stderr is never glued to a line printed on stdout meanwhile.
    """

    def __init__(self) -> None:
        self._partial: dict[bytes, bytes] = {}

    def feed(self, line: bytes) -> bytes | None:
        """One CRI line in; a whole output line (with its newline) out, or None."""
        parts = line.split(b" ", 3)
        if len(parts) < 3:
            return line + b"\n"  # not CRI; keep it rather than lose output
        stream, tag = parts[1], parts[2]
        text = self._partial.pop(stream, b"") + (parts[3] if len(parts) == 4 else b"")
        if tag == b"P":
            self._partial[stream] = text
            return None
        return text + b"\n"

    def flush(self) -> list[bytes]:
        """Unfinished lines when the output ended without a newline."""
        rest = list(self._partial.values())
        self._partial.clear()
        return rest


class CriLogFollower:
    """Reads a CRI log file from the start until told the writer has finished."""

    def __init__(self, path: Path, emit: Callable[[bytes], None]) -> None:
        self.path = path
        self.emit = emit
        self.finished = threading.Event()  # set once the container has exited
        self.restarts = 0  # times conmon truncated its file under us (output was lost)
        self._joiner = CriLineJoiner()

    def _take(self, line: bytes) -> None:
        text = self._joiner.feed(line)
        if text is not None:
            self.emit(text)

    def run(self) -> None:
        """Follow the file; returns after draining it once ``finished`` is set."""
        while not self.path.exists():
            if self.finished.is_set() and not self.path.exists():
                return
            self.finished.wait(_POLL_S)
        pending = b""
        offset = 0
        with self.path.open("rb") as stream:
            while True:
                done = self.finished.is_set()  # read before draining, so nothing is missed
                chunk = stream.read(_CHUNK)
                if chunk:
                    offset += len(chunk)
                    lines = (pending + chunk).split(b"\n")
                    pending = lines.pop()
                    for line in lines:
                        self._take(line)
                    continue
                if done:
                    break
                if self.path.stat().st_size < offset:
                    stream.seek(0)
                    offset, pending = 0, b""
                    self.restarts += 1
                self.finished.wait(_POLL_S)  # wakes at once when the container exits
        if pending:
            self._take(pending)
        for text in self._joiner.flush():
            self.emit(text)
