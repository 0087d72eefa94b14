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

from sandbox.observer import BuildObserver, NullObserver
from sandbox.result import BuildResult
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


class PlainCheckProgress:
    """One line per build of a check, on stderr."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self._lock = threading.Lock()

    def __enter__(self) -> PlainCheckProgress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pass

    def build_started(self, name: str, role: str, variations: tuple[str, ...]) -> None:
        varied = ", ".join(variations) or "nothing varied"
        with self._lock:
            print(f"hermetic: {name}: building ({varied})", file=self.stream, flush=True)

    def build_finished(self, name: str, result: BuildResult) -> None:
        outcome = f"sha256:{result.digest[:16]}…" if result.digest else result.status.value
        with self._lock:
            print(
                f"hermetic: {name}: {outcome} in {result.duration_s:.1f}s",
                file=self.stream,
                flush=True,
            )

    def build_observer(self, name: str) -> BuildObserver:
        return NullObserver()


class _BuildRow(NullObserver):
    """One build's row in the live table: its stage and the last line it printed."""

    def __init__(self, lock: threading.Lock, role: str, varied: str) -> None:
        self._lock = lock
        self.role = role
        self.varied = varied
        self.started = time.monotonic()
        self.stage_name = "queued"
        self.last_line = ""
        self.outcome: str | None = None

    def stage(self, name: str, detail: str = "") -> None:
        with self._lock:
            self.stage_name = name

    def log_line(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").strip()
        if text:
            with self._lock:
                self.last_line = text[:80]


class LiveCheckProgress:
    """A rich live table: one row per build, with its stage, elapsed time and log."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._lock = threading.Lock()
        self._rows: dict[str, _BuildRow] = {}
        self._live = Live(self, console=self.console, refresh_per_second=4, transient=False)

    def __enter__(self) -> LiveCheckProgress:
        self._live.__enter__()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._live.__exit__(kind, error, tb)

    def build_started(self, name: str, role: str, variations: tuple[str, ...]) -> None:
        varied = ", ".join(variations) if variations else "nothing varied"
        with self._lock:
            self._rows[name] = _BuildRow(self._lock, role, varied)

    def build_finished(self, name: str, result: BuildResult) -> None:
        outcome = (
            f"[green]sha256:{result.digest[:16]}…[/]"
            if result.digest
            else (f"[red]{result.status.value}[/]")
        )
        with self._lock:
            row = self._rows[name]
            row.outcome = f"{outcome} {time.monotonic() - row.started:.1f}s"

    def build_observer(self, name: str) -> BuildObserver:
        with self._lock:
            return self._rows[name]

    def __rich__(self) -> RenderableType:
        with self._lock:
            lines = []
            for name, row in self._rows.items():
                elapsed = time.monotonic() - row.started
                state = row.outcome or f"[cyan]{row.stage_name}[/] {elapsed:.1f}s"
                lines.append(Text.from_markup(f"{name:<22} {state}  [dim]{row.varied[:60]}[/]"))
                if row.outcome is None and row.last_line:
                    lines.append(Text(f"    │ {row.last_line}", style="dim"))
        return Group(*lines)
