"""The trace of one build (``trace.json``) and its summary (``result.json``'s ``trace``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from sandbox.trace.addresses import is_loopback
from sandbox.uris import TRACE_SCHEMA

# Lists of trace.json in the order they keep their items when the file must be cut:
# network evidence first, then attempts on hermetic's tools, programs, files.
_CUT_ORDER = (
    "network",
    "hermetic_path_attempts",
    "executions",
    "processes",
    "files",
    "writers",
    "nondeterminism",
    "other_reads",
)


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

    @property
    def loopback(self) -> bool:
        """Inside the build's own network namespace; anything else tried to reach out."""
        return self.family in ("inet", "inet6") and is_loopback(self.address)

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
            "loopback": self.loopback,
        }


@dataclass(frozen=True, kw_only=True)
class HermeticPathAttempt:
    """A build process reaching for hermetic's own machinery under ``/.hermetic/``
    (it cannot: the directory is closed to the build's uid)."""

    pid: int
    call: str  # exec, open, unlink, rmdir, mkdir, rename
    path: str

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "call": self.call, "path": self.path}


@dataclass(frozen=True, kw_only=True)
class TracerUsage:
    """What the tracer itself held: events kept, calls it answered without recording
    (past a cap), and the supervisor's peak memory."""

    events: int = 0
    dropped: int = 0
    peak_memory_bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "dropped": self.dropped,
            "peak_memory_bytes": self.peak_memory_bytes,
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
    hermetic_path_attempts: tuple[HermeticPathAttempt, ...] = ()
    tracer: TracerUsage = TracerUsage()

    def writer_of(self, path: str) -> OutputWriter | None:
        return self.writers.get(path)

    def _lists(self) -> dict[str, list[Any]]:
        return {
            "executions": [e.to_json() for e in self.executions],
            "processes": [p.to_json() for p in self.processes],
            "files": [f.to_json() for f in self.files],
            "other_reads": [f.to_json() for f in self.other_reads],
            "network": [n.to_json() for n in self.network],
            "hermetic_path_attempts": [a.to_json() for a in self.hermetic_path_attempts],
            "nondeterminism": [n.to_json() for n in self.nondeterminism],
            "writers": [
                [path, {"pid": w.pid, "program": w.path, "argv": list(w.argv)}]
                for path, w in sorted(self.writers.items())
            ],
        }

    def to_json(self) -> dict[str, Any]:
        return self._document(self._lists())

    def _document(self, lists: dict[str, list[Any]]) -> dict[str, Any]:
        return {
            "_schema": TRACE_SCHEMA,
            "level": self.level,
            "complete": not self.gaps,
            "gaps": list(self.gaps),
            "network_interfaces": list(self.interfaces),
            "notifications": self.notifications,
            "tracer": self.tracer.to_json(),
            "executions": lists["executions"],
            "processes": lists["processes"],
            "exec_failures": self.exec_failures,
            "files": lists["files"],
            "other_reads": lists["other_reads"],
            "network": lists["network"],
            "hermetic_path_attempts": lists["hermetic_path_attempts"],
            "nondeterminism": lists["nondeterminism"],
            "writers": dict(lists["writers"]),
        }

    def to_json_bytes(self) -> bytes:
        return _encode(self.to_json())

    def fitted(self, max_bytes: int) -> tuple[BuildTrace, bytes]:
        """This trace and its trace.json, cut to at most ``max_bytes``.

        A trace that fits is returned as is. Otherwise each list keeps its first
        items, network evidence first (``_CUT_ORDER``), and the trace says in its
        gaps what was left out: it is then incomplete, and so is its summary.
        """
        data = self.to_json_bytes()
        if len(data) <= max_bytes:
            return self, data
        full = self._lists()
        sizes = {name: [len(_encode(item)) + 2 for item in items] for name, items in full.items()}
        budget = max_bytes - 4096  # the document without its lists, and the gap's words
        while True:
            kept: dict[str, list[Any]] = {}
            left = budget
            for name in _CUT_ORDER:
                count = 0
                for size in sizes[name]:
                    if size > left:
                        break
                    left -= size
                    count += 1
                kept[name] = full[name][:count]
            cut = [
                f"{len(full[name]) - len(kept[name])} of {len(full[name])} {name}"
                for name in _CUT_ORDER
                if len(kept[name]) < len(full[name])
            ]
            gap = f"trace.json was cut at {max_bytes} bytes: left out {', '.join(cut)}"
            trimmed = replace(
                self,
                gaps=(*self.gaps, gap),
                executions=self.executions[: len(kept["executions"])],
                processes=self.processes[: len(kept["processes"])],
                files=self.files[: len(kept["files"])],
                other_reads=self.other_reads[: len(kept["other_reads"])],
                network=self.network[: len(kept["network"])],
                hermetic_path_attempts=self.hermetic_path_attempts[
                    : len(kept["hermetic_path_attempts"])
                ],
                nondeterminism=self.nondeterminism[: len(kept["nondeterminism"])],
                writers=dict(kept["writers"]),
            )
            data = trimmed.to_json_bytes()
            if len(data) <= max_bytes or budget <= 0:
                return trimmed, data  # (with every list empty, as small as it gets)
            budget -= len(data) - max_bytes  # the estimate missed some indentation

    def summary(self) -> dict[str, Any]:
        """The short form that goes into result.json and the provenance.

        ``network_attempts`` counts attempts to reach outside the build's network
        namespace (any destination but loopback); ``loopback_attempts`` the traffic
        that stays inside it (a test suite's local server).
        """
        sources: dict[str, int] = {}
        for item in self.nondeterminism:
            sources[item.source] = sources.get(item.source, 0) + item.count
        files = self.files
        outside = [n for n in self.network if not n.loopback]
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
            "network_attempts": len(outside),
            "network_targets": sorted({f"{n.call} {n.address}:{n.port}" for n in outside}),
            "loopback_attempts": len(self.network) - len(outside),
            "hermetic_path_attempts": len(self.hermetic_path_attempts),
            "nondeterminism": dict(sorted(sources.items())),
        }


def _encode(value: Any) -> bytes:
    return (json.dumps(value, indent=1, ensure_ascii=False) + "\n").encode(
        "utf-8", "surrogateescape"
    )
