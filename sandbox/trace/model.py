"""The trace of one build (``trace.json``) and its summary (``result.json``'s ``trace``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

TRACE_SCHEMA = "https://hermetic.dev/schemas/trace/v1"


@dataclass(frozen=True, kw_only=True)
class Execution:
    """One successful exec: a program started in process ``pid``."""

    seq: int  # order among every exec of the build
    pid: int  # the build's own pid (inside its pid namespace)
    ppid: int
    path: str
    argv: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "pid": self.pid,
            "ppid": self.ppid,
            "path": self.path,
            "argv": list(self.argv),
        }


@dataclass(frozen=True, kw_only=True)
class Process:
    """A process of the build: its parent, what it ran, how it ended."""

    pid: int
    ppid: int
    execs: tuple[int, ...]  # seq numbers of its executions
    exit_status: int | None  # None: killed by a signal, or not seen to exit

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "ppid": self.ppid,
            "execs": list(self.execs),
            "exit_status": self.exit_status,
        }


@dataclass(frozen=True, kw_only=True)
class FileRecord:
    """What happened to one path in the build directory."""

    path: str
    read_by: tuple[int, ...] = ()
    unattributed_reads: int = 0  # reads fanotify saw without a pid (see the README)
    written_by: tuple[int, ...] = ()
    created_by: tuple[int, ...] = ()
    removed_by: tuple[int, ...] = ()
    renamed_from: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"path": self.path}
        for key in ("read_by", "written_by", "created_by", "removed_by"):
            value = getattr(self, key)
            if value:
                data[key] = list(value)
        if self.unattributed_reads:
            data["unattributed_reads"] = self.unattributed_reads
        if self.renamed_from is not None:
            data["renamed_from"] = self.renamed_from
        return data


@dataclass(frozen=True, kw_only=True)
class NetworkAttempt:
    """A socket call with a network destination."""

    pid: int
    call: str  # connect, sendto, sendmsg, bind
    family: str  # inet, inet6, or a number
    type: str  # stream, dgram, raw, or unknown
    address: str
    port: int
    outcome: str  # refused, unreachable, connected, sent, bound, address-unavailable

    @property
    def failed(self) -> bool:
        return self.outcome in ("refused", "unreachable", "address-unavailable")

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "call": self.call,
            "family": self.family,
            "type": self.type,
            "address": self.address,
            "port": self.port,
            "outcome": self.outcome,
            "failed": self.failed,
        }


@dataclass(frozen=True, kw_only=True)
class NondeterminismRead:
    """A process consulting something that can differ between builds."""

    source: str  # random, getrandom, uname, listdir, cpu_count, user_database, ...
    pid: int | None  # None when only fanotify saw it
    detail: str = ""  # the path, directory or device
    count: int = 1

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"source": self.source, "pid": self.pid, "count": self.count}
        if self.detail:
            data["detail"] = self.detail
        return data


@dataclass(frozen=True, kw_only=True)
class OutputWriter:
    """Who last wrote an output file."""

    pid: int
    path: str  # the program the writing process ran (its last exec)
    argv: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class BuildTrace:
    """Everything the tracer saw, in build pids (1 is the container's init)."""

    level: str
    executions: tuple[Execution, ...]
    processes: tuple[Process, ...]
    exec_failures: int
    files: tuple[FileRecord, ...]
    network: tuple[NetworkAttempt, ...]
    nondeterminism: tuple[NondeterminismRead, ...]
    interfaces: tuple[str, ...]
    gaps: tuple[str, ...] = ()  # what this trace could not see, in words
    notifications: int = 0
    writers: dict[str, OutputWriter] = field(default_factory=dict)  # by path in /build
    other_reads: tuple[FileRecord, ...] = ()  # deep: files read outside the build dir

    def writer_of(self, path: str) -> OutputWriter | None:
        return self.writers.get(path)

    def to_json(self) -> dict[str, Any]:
        return {
            "_schema": TRACE_SCHEMA,
            "level": self.level,
            "complete": not self.gaps,
            "gaps": list(self.gaps),
            "network_interfaces": list(self.interfaces),
            "notifications": self.notifications,
            "executions": [e.to_json() for e in self.executions],
            "processes": [p.to_json() for p in self.processes],
            "exec_failures": self.exec_failures,
            "files": [f.to_json() for f in self.files],
            "other_reads": [f.to_json() for f in self.other_reads],
            "network": [n.to_json() for n in self.network],
            "nondeterminism": [n.to_json() for n in self.nondeterminism],
            "writers": {
                path: {"pid": w.pid, "program": w.path, "argv": list(w.argv)}
                for path, w in sorted(self.writers.items())
            },
        }

    def to_json_bytes(self) -> bytes:
        return (json.dumps(self.to_json(), indent=1, ensure_ascii=False) + "\n").encode(
            "utf-8", "surrogateescape"
        )

    def summary(self) -> dict[str, Any]:
        """The short form that goes into result.json and the provenance."""
        sources: dict[str, int] = {}
        for item in self.nondeterminism:
            sources[item.source] = sources.get(item.source, 0) + item.count
        files = self.files
        return {
            "level": self.level,
            "complete": not self.gaps,
            "gaps": list(self.gaps),
            "notifications": self.notifications,
            "processes": len(self.processes),
            "executions": len(self.executions),
            "exec_failures": self.exec_failures,
            "tools": sorted({e.path for e in self.executions}),
            "files_read": sum(1 for f in files if f.read_by or f.unattributed_reads),
            "files_written": sum(1 for f in files if f.written_by),
            "files_created": sum(1 for f in files if f.created_by),
            "files_removed": sum(1 for f in files if f.removed_by),
            "network_interfaces": list(self.interfaces),
            "network_attempts": len(self.network),
            "network_targets": sorted({f"{n.call} {n.address}:{n.port}" for n in self.network}),
            "nondeterminism": dict(sorted(sources.items())),
        }
