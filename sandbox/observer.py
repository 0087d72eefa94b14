"""How a build reports progress to whoever shows it; the library itself prints nothing."""

from __future__ import annotations

from typing import Protocol


class BuildObserver(Protocol):
    """Receives progress of one build. Every method must return quickly."""

    def stage(self, name: str, detail: str = "") -> None:
        """A stage begins: "fetch", "stage", "build", "hash"."""

    def fetch_progress(self, url: str, done: int, total: int | None) -> None:
        """Bytes of one input downloaded so far."""

    def log_line(self, line: bytes) -> None:
        """One line the build printed."""

    def tick(self, elapsed_s: float) -> None:
        """The build is still running."""


class NullObserver:
    """Ignores everything; the default for library callers."""

    def stage(self, name: str, detail: str = "") -> None:
        pass

    def fetch_progress(self, url: str, done: int, total: int | None) -> None:
        pass

    def log_line(self, line: bytes) -> None:
        pass

    def tick(self, elapsed_s: float) -> None:
        pass
