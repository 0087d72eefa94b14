"""Progress of a build on the terminal: a live panel on a TTY, stage lines otherwise."""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from types import TracebackType
from typing import TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from sandbox.observer import NullObserver
from sandbox.units import format_size

_TAIL_LINES = 8


class PlainProgress(NullObserver):
    """Prints one line per stage to stderr; for logs and CI."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pass

    def stage(self, name: str, detail: str = "") -> None:
        print(f"hermetic: {name}: {detail}".rstrip(": "), file=self.stream, flush=True)


class LiveProgress:
    """A rich live panel: stages done, the current one with elapsed time, the log tail."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._lock = threading.Lock()
        self._done: list[str] = []
        self._current = ""
        self._detail = ""
        self._since = time.monotonic()
        self._fetch = ""
        self._tail: deque[str] = deque(maxlen=_TAIL_LINES)
        self._live = Live(self, console=self.console, refresh_per_second=8, transient=True)

    def __enter__(self) -> LiveProgress:
        self._live.__enter__()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._finish_stage()
        self._live.__exit__(kind, error, tb)
        for line in self._done:
            self.console.print(line, highlight=False)

    def _finish_stage(self) -> None:
        if self._current:
            elapsed = time.monotonic() - self._since
            self._done.append(
                f"[green]✓[/] {self._current} [dim]{self._detail} ({elapsed:.1f}s)[/]"
            )

    def stage(self, name: str, detail: str = "") -> None:
        with self._lock:
            self._finish_stage()
            self._current, self._detail, self._since = name, detail, time.monotonic()
            self._fetch = ""

    def fetch_progress(self, url: str, done: int, total: int | None) -> None:
        with self._lock:
            of = f" of {format_size(total)}" if total else ""
            self._fetch = f"{url}: {format_size(done)}{of}"

    def log_line(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip()
        with self._lock:
            self._tail.append(text[:200])

    def tick(self, elapsed_s: float) -> None:
        pass  # the panel computes elapsed time itself on every refresh

    def __rich__(self) -> RenderableType:
        with self._lock:
            parts: list[RenderableType] = [Text.from_markup(line) for line in self._done]
            if self._current:
                elapsed = time.monotonic() - self._since
                line = f"[bold cyan]…[/] {self._current} [dim]{self._detail}[/]"
                parts.append(Text.from_markup(f"{line} [bold]{elapsed:.1f}s[/]"))
            if self._fetch:
                parts.append(Text(f"    {self._fetch}", style="dim"))
            parts.extend(Text(f"    │ {line}", style="dim") for line in self._tail)
        return Group(*parts)
