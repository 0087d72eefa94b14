"""Following conmon's k8s-file log (CRI format) while the build runs.

Reading the file directly, instead of podman's follow API, ends the moment the
container has exited (podman's follow only notices on its next poll) and shows
when conmon cut its own copy at its size limit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

_POLL_S = 0.02
_CHUNK = 1 << 16


def parse_cri_line(line: bytes) -> bytes:
    """The build's output in one CRI log line: ``<time> <stream> <F|P> <text>``.

    ``F`` ends a line of output, ``P`` is part of a longer one (no newline yet).
    """
    parts = line.split(b" ", 3)
    if len(parts) < 3:
        return line + b"\n"  # not CRI; keep it rather than lose output
    text = parts[3] if len(parts) == 4 else b""
    return text if parts[2] == b"P" else text + b"\n"


class CriLogFollower:
    """Reads a CRI log file from the start until told the writer has finished."""

    def __init__(self, path: Path, emit: Callable[[bytes], None]) -> None:
        self.path = path
        self.emit = emit
        self.finished = threading.Event()  # set once the container has exited
        self.restarts = 0  # times conmon truncated its file under us (output was lost)

    def run(self) -> None:
        """Follow the file; returns after draining it once ``finished`` is set."""
        while not self.path.exists():
            if self.finished.is_set() and not self.path.exists():
                return
            time.sleep(_POLL_S)
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
                        self.emit(parse_cri_line(line))
                    continue
                if done:
                    break
                if self.path.stat().st_size < offset:
                    stream.seek(0)
                    offset, pending = 0, b""
                    self.restarts += 1
                time.sleep(_POLL_S)
        if pending:
            self.emit(parse_cri_line(pending))
