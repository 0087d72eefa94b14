"""Hints from the trace: for each differing output, who wrote it and which sources of
nondeterminism that process or its ancestors touched. What no peer tool says."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Sources a variation acts on: a hint that matches a culprit is named first.
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
    """Why an output may differ, from the trace."""

    path: str
    writer: dict[str, Any] | None  # pid, program, argv of its last writer
    sources: tuple[Source, ...] = ()
    unattributed: tuple[Source, ...] = field(default=())  # touched by an unknown process

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "writer": self.writer,
            "sources": [s.to_json() for s in self.sources],
            "unattributed_sources": [s.to_json() for s in self.unattributed],
        }


def _command(argv: list[str]) -> str:
    return " ".join(argv)[:200]


def hints_for(trace: dict[str, Any], build_dir: str, paths: list[str]) -> list[Hint]:
    """Hints for outputs (relative paths) from one build's trace.json."""
    parent = {p["pid"]: p["ppid"] for p in trace.get("processes", [])}
    program: dict[int, str] = {}
    for execution in trace.get("executions", []):  # the last exec of a pid names it
        program[execution["pid"]] = _command(execution["argv"])
    touched: dict[int | None, list[dict[str, Any]]] = {}
    for item in trace.get("nondeterminism", []):
        if item["source"] != "heap_key":
            touched.setdefault(item.get("pid"), []).append(item)
    hints = []
    for path in paths:
        writer = trace.get("writers", {}).get(f"{build_dir.rstrip('/')}/{path}")
        sources: list[Source] = []
        if writer is not None:
            pid: int | None = writer["pid"]
            seen: set[int] = set()
            while pid and pid not in seen:
                seen.add(pid)
                sources.extend(
                    Source(
                        source=item["source"],
                        detail=item.get("detail", ""),
                        pid=pid,
                        program=program.get(pid, ""),
                    )
                    for item in touched.get(pid, [])
                )
                pid = parent.get(pid)
        unattributed = tuple(
            Source(source=item["source"], detail=item.get("detail", ""), pid=None, program="")
            for item in touched.get(None, [])
        )
        hints.append(
            Hint(path=path, writer=writer, sources=tuple(sources), unattributed=unattributed)
        )
    return hints
