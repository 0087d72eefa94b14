"""Hints: for each differing output, the evidence of why. From the trace, the process
that wrote it and the nondeterminism sources it or its ancestors touched; from the
output itself, varied values it contains and a changed mode. What no peer tool says."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rebuilder.compare import Difference
from rebuilder.evidence import Embedded
from sandbox.trace.model import BuildTrace, NondeterminismRead, OutputWriter

log = logging.getLogger(__name__)

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
    """A nondeterminism source a process touched, and how that process relates."""

    source: str
    detail: str
    pid: int | None
    program: str  # argv, joined, of the process that touched it
    relation: str = ""  # "its writer", "wrote its input lib/x.o", "an ancestor of …"

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "detail": self.detail,
            "pid": self.pid,
            "program": self.program,
            "relation": self.relation,
        }


@dataclass(frozen=True, kw_only=True)
class Hint:
    """Why one output may differ."""

    path: str
    writer: dict[str, Any] | None  # pid, program, argv of its last writer
    sources: tuple[Source, ...] = ()  # touched by its writers, their inputs' writers, parents
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


def _command(argv: Sequence[str]) -> str:
    return " ".join(argv)[:200]


INPUT_HOPS = 3  # how far back through intermediate files (x.c → x.o → a.out)
_MAX_PROCESSES = 5000  # of a provenance walk; huge builds get a partial answer


class _TraceIndex:
    """The parts of a build's trace that hints need, indexed by pid and path."""

    def __init__(self, trace: BuildTrace, build_dir: str) -> None:
        self.build_dir = build_dir.rstrip("/")
        self.last_writer: Mapping[str, OutputWriter] = trace.writers
        self.parent = {process.pid: process.ppid for process in trace.processes}
        self.program: dict[int, str] = {}
        for execution in trace.executions:  # the last exec of a pid names it
            self.program[execution.pid] = _command(execution.argv)
        self.touched: dict[int | None, list[NondeterminismRead]] = {}
        for item in trace.nondeterminism:
            if item.source != "heap_key":  # glibc's own, every process has it
                self.touched.setdefault(item.pid, []).append(item)
        self.writers: dict[str, list[int]] = {}
        self.reads: dict[int, list[str]] = {}
        for record in trace.files:
            pids = [*record.created_by, *record.written_by]
            self.writers[record.path] = list(dict.fromkeys(pids))
            for pid in record.read_by:
                self.reads.setdefault(pid, []).append(record.path)

    def relative(self, path: str) -> str:
        return path.removeprefix(self.build_dir + "/")

    def provenance(self, path: str) -> dict[int, str | None]:
        """Processes that wrote the file (None) or, up to INPUT_HOPS back, an input of
        it (that input's path): data flows through intermediate files (x.c → x.o)."""
        last = self.last_writer.get(path)
        direct = self.writers.get(path) or ([last.pid] if last else [])
        related: dict[int, str | None] = {}
        frontier: dict[int, str | None] = dict.fromkeys(direct)
        for _ in range(INPUT_HOPS + 1):
            fresh = {pid: via for pid, via in frontier.items() if pid not in related}
            related.update(fresh)
            if len(related) > _MAX_PROCESSES:
                break
            frontier = {}
            for pid in fresh:
                for read in self.reads.get(pid, []):
                    for writer in self.writers.get(read, []):
                        frontier.setdefault(writer, self.relative(read))
        return related

    def sources_of(self, path: str) -> list[Source]:
        """Sources touched by the file's provenance and by their parents, closest first."""
        sources: dict[tuple[str, str, int], tuple[int, Source]] = {}
        for pid, via in self.provenance(path).items():
            current: int | None = pid
            depth = 0
            seen: set[int] = set()
            while current and current not in seen:
                seen.add(current)
                relation = _relation(via, parent=depth > 0)
                for item in self.touched.get(current, []):
                    key = (item.source, item.detail, current)
                    rank = 2 * (via is not None) + (depth > 0)
                    source = Source(
                        source=item.source,
                        detail=item.detail,
                        pid=current,
                        program=self.program.get(current, ""),
                        relation=relation,
                    )
                    if key not in sources or sources[key][0] > rank:
                        sources[key] = (rank, source)
                current = self.parent.get(current)
                depth += 1
        return [source for _, source in sorted(sources.values(), key=lambda item: item[0])]

    def unattributed(self) -> tuple[Source, ...]:
        return tuple(
            Source(source=item.source, detail=item.detail, pid=None, program="")
            for item in self.touched.get(None, [])
        )


def _relation(via: str | None, *, parent: bool) -> str:
    if via is None:
        return "an ancestor of its writer" if parent else "its writer"
    return f"an ancestor of the writer of {via}" if parent else f"wrote its input {via}"


def hints_for(
    *,
    trace: BuildTrace | None,
    build_dir: str,
    found: Sequence[Difference],
    embedded: Mapping[str, tuple[Embedded, ...]],
    culprits: Sequence[str],
) -> list[Hint]:
    """One hint per differing output, the most telling first.

    Args:
        trace: the experiment build's trace, None when it was not traced (or its
            trace.json is unreadable: no evidence).
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
    index = _TraceIndex(trace, build_dir) if trace is not None else None
    hints = []
    for difference in found:
        writer = None
        sources: list[Source] = []
        unattributed: tuple[Source, ...] = ()
        if index is not None:
            absolute = f"{index.build_dir}/{difference.path}"
            found_writer = index.last_writer.get(absolute)
            writer = (
                {
                    "pid": found_writer.pid,
                    "program": found_writer.path,
                    "argv": list(found_writer.argv),
                }
                if found_writer is not None
                else None
            )
            sources = index.sources_of(absolute)
            unattributed = index.unattributed()
        modes = None
        if difference.mode_changed and difference.control and difference.other:
            modes = (f"{difference.control.mode:04o}", f"{difference.other.mode:04o}")
        hints.append(
            Hint(
                path=difference.path,
                writer=writer,
                sources=tuple(sorted(sources, key=lambda s: s.source not in wanted)),
                unattributed=unattributed,
                embedded=embedded.get(difference.path, ()),
                modes=modes,
            )
        )

    def strength(hint: Hint) -> int:
        matching = sum(1 for s in hint.sources if s.source in wanted)
        return -(10 * len(hint.embedded) + 10 * (hint.modes is not None) + matching)

    return sorted(hints, key=strength)
