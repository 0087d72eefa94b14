"""Hints: for each differing output, the evidence of why. From the trace, the process
that wrote it and the nondeterminism sources it or its ancestors touched; from the
output itself, varied values it contains and a changed mode. What no peer tool says."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rebuilder.compare import Difference
from rebuilder.evidence import Embedded

# Trace sources a variation acts on: those matching a culprit are named first.
SOURCES_OF = {
    "fileordering": ("listdir",),
    "kernel": ("uname",),
    "hostname": ("uname", "hostname"),
    "num_cpus": ("cpu_count",),
    "user_group": ("user_database",),
    "timezone": ("timezone",),
    "inherent": ("random", "getrandom"),
}


@dataclass(frozen=True, kw_only=True)
class Source:
    """A nondeterminism source a process touched."""

    source: str
    detail: str
    pid: int | None
    program: str  # argv, joined, of the process that touched it

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "detail": self.detail,
            "pid": self.pid,
            "program": self.program,
        }


@dataclass(frozen=True, kw_only=True)
class Hint:
    """Why one output may differ."""

    path: str
    writer: dict[str, Any] | None  # pid, program, argv of its last writer
    sources: tuple[Source, ...] = ()  # touched by the writer or an ancestor
    unattributed: tuple[Source, ...] = ()  # touched by a process the trace cannot name
    embedded: tuple[Embedded, ...] = ()  # varied values found in the output
    modes: tuple[str, str] | None = None  # control's and experiment's, when they differ

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "writer": self.writer,
            "sources": [s.to_json() for s in self.sources],
            "unattributed_sources": [s.to_json() for s in self.unattributed],
            "embedded": [e.to_json() for e in self.embedded],
            "modes": list(self.modes) if self.modes else None,
        }


def _command(argv: list[str]) -> str:
    return " ".join(argv)[:200]


class _TraceIndex:
    """The parts of a trace.json that hints need, indexed by pid."""

    def __init__(self, trace: Mapping[str, Any]) -> None:
        self.writers: Mapping[str, Any] = trace.get("writers", {})
        self.parent = {p["pid"]: p["ppid"] for p in trace.get("processes", [])}
        self.program: dict[int, str] = {}
        for execution in trace.get("executions", []):  # the last exec of a pid names it
            self.program[execution["pid"]] = _command(execution["argv"])
        self.touched: dict[int | None, list[Mapping[str, Any]]] = {}
        for item in trace.get("nondeterminism", []):
            if item["source"] != "heap_key":  # glibc's own, every process has it
                self.touched.setdefault(item.get("pid"), []).append(item)

    def lineage_sources(self, pid: int | None) -> list[Source]:
        sources: list[Source] = []
        seen: set[int] = set()
        while pid and pid not in seen:
            seen.add(pid)
            sources.extend(
                Source(
                    source=item["source"],
                    detail=item.get("detail", ""),
                    pid=pid,
                    program=self.program.get(pid, ""),
                )
                for item in self.touched.get(pid, [])
            )
            pid = self.parent.get(pid)
        return sources

    def unattributed(self) -> tuple[Source, ...]:
        return tuple(
            Source(source=item["source"], detail=item.get("detail", ""), pid=None, program="")
            for item in self.touched.get(None, [])
        )


def hints_for(
    *,
    trace: Mapping[str, Any] | None,
    build_dir: str,
    found: Sequence[Difference],
    embedded: Mapping[str, tuple[Embedded, ...]],
    culprits: Sequence[str],
) -> list[Hint]:
    """One hint per differing output, the most telling first.

    Args:
        trace: the experiment build's trace.json, None when it was not traced.
        build_dir: where that build ran (writers are keyed by absolute path).
        found: the differing outputs.
        embedded: varied values found in each output, by path.
        culprits: the culprits, to name matching evidence first.
    """
    wanted = {
        source
        for culprit in culprits
        for part in culprit.split("+")
        for source in SOURCES_OF.get(part, ())
    }
    index = _TraceIndex(trace) if trace is not None else None
    hints = []
    for difference in found:
        writer = sources = None
        unattributed: tuple[Source, ...] = ()
        if index is not None:
            writer = index.writers.get(f"{build_dir.rstrip('/')}/{difference.path}")
            sources = index.lineage_sources(writer["pid"] if writer else None)
            unattributed = index.unattributed()
        modes = None
        if difference.mode_changed and difference.control and difference.other:
            modes = (f"{difference.control.mode:04o}", f"{difference.other.mode:04o}")
        hints.append(
            Hint(
                path=difference.path,
                writer=writer,
                sources=tuple(sorted(sources or (), key=lambda s: s.source not in wanted)),
                unattributed=unattributed,
                embedded=embedded.get(difference.path, ()),
                modes=modes,
            )
        )

    def strength(hint: Hint) -> int:
        matching = sum(1 for s in hint.sources if s.source in wanted)
        return -(10 * len(hint.embedded) + 10 * (hint.modes is not None) + matching)

    return sorted(hints, key=strength)
