"""How much of a build the tracer keeps at most (kept apart from the supervisor's
imports, which must stay few: it starts before every traced container)."""

from __future__ import annotations

from dataclasses import dataclass

MIN_FILE_BYTES = 64 * 1024


@dataclass(frozen=True, kw_only=True)
class TraceLimits:
    """Caps on what a build can make the tracer hold: past one, the trace stops
    growing and says so in its gaps (it is then incomplete, never silently short).

    Attributes:
        max_events: events the supervisor records (HERMETIC_TRACE_MAX_EVENTS).
        max_event_bytes: bytes of paths, arguments and addresses it keeps, each
            counted whole every time it is recorded (HERMETIC_TRACE_MAX_BYTES).
        max_file_bytes: size of trace.json (HERMETIC_TRACE_MAX_FILE).
    """

    max_events: int = 1_000_000
    max_event_bytes: int = 128 * 1024**2
    max_file_bytes: int = 256 * 1024**2

    def __post_init__(self) -> None:
        for name in ("max_events", "max_event_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"trace limit {name} must be at least 1")
        if self.max_file_bytes < MIN_FILE_BYTES:
            raise ValueError(
                f"trace limit max_file_bytes must be at least {MIN_FILE_BYTES} "
                "(what a trace with its lists left out needs)"
            )


DEFAULT_TRACE_LIMITS = TraceLimits()
