"""The trace of one build (``trace.json``) and its summary (``result.json``'s ``trace``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from sandbox.errors import UserError
from sandbox.trace.addresses import is_loopback
from sandbox.uris import TRACE_SCHEMA


class TraceFormatError(UserError):
    """A trace.json that is not what hermetic writes (damaged, truncated, edited)."""


# Lists of trace.json in the order they keep their items when the file must be cut:
# network evidence first, then attempts on hermetic's tools, programs, files.
_CUT_ORDER = (
    "network",
    "hermetic_path_attempts",
    "executions",
    "failed_executions",
    "processes",
    "files",
    "writers",
    "nondeterminism",
    "other_reads",
)


@dataclass(frozen=True, kw_only=True)
class Execution:
    """One exec that started a program in process ``pid`` ("ran"), or may have
    ("unknown": the process made no traced call after it, so it was not observed)."""

    seq: int  # order among every exec of the build
    pid: int  # the build's own pid (inside its pid namespace)
    ppid: int
    path: str  # as the build named it (a link, /proc/self/..., a memfd's name)
    argv: tuple[str, ...]
    outcome: str = "ran"

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "pid": self.pid,
            "ppid": self.ppid,
            "path": self.path,
            "argv": list(self.argv),
            "outcome": self.outcome,
        }

    @classmethod
    def from_json(cls, read: _Read) -> Execution:
        return cls(
            seq=read.integer("seq"),
            pid=read.integer("pid"),
            ppid=read.integer("ppid"),
            path=read.text("path"),
            argv=read.strs("argv"),
            outcome=read.maybe_text("outcome") or "ran",
        )


@dataclass(frozen=True, kw_only=True)
class FailedExecution:
    """An exec the kernel refused: the process went on with its old program."""

    pid: int
    path: str
    argv: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "path": self.path, "argv": list(self.argv)}

    @classmethod
    def from_json(cls, read: _Read) -> FailedExecution:
        return cls(pid=read.integer("pid"), path=read.text("path"), argv=read.strs("argv"))


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

    @classmethod
    def from_json(cls, read: _Read) -> Process:
        return cls(
            pid=read.integer("pid"),
            ppid=read.integer("ppid"),
            execs=read.ints("execs"),
            exit_status=read.maybe_integer("exit_status"),
        )


@dataclass(frozen=True, kw_only=True)
class FileRecord:
    """What happened to one path in the build directory."""

    path: str
    read_by: tuple[int, ...] = ()
    unattributed_reads: int = 0  # reads fanotify saw without a pid (see the README)
    written_by: tuple[int, ...] = ()
    created_by: tuple[int, ...] = ()
    removed_by: tuple[int, ...] = ()
    changed_by: tuple[int, ...] = ()  # its mode changed (chmod)
    renamed_from: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"path": self.path}
        for key in ("read_by", "written_by", "created_by", "removed_by", "changed_by"):
            value = getattr(self, key)
            if value:
                data[key] = list(value)
        if self.unattributed_reads:
            data["unattributed_reads"] = self.unattributed_reads
        if self.renamed_from is not None:
            data["renamed_from"] = self.renamed_from
        return data

    @classmethod
    def from_json(cls, read: _Read) -> FileRecord:
        return cls(
            path=read.text("path"),
            read_by=read.ints("read_by", optional=True),
            unattributed_reads=read.maybe_integer("unattributed_reads") or 0,
            written_by=read.ints("written_by", optional=True),
            created_by=read.ints("created_by", optional=True),
            removed_by=read.ints("removed_by", optional=True),
            changed_by=read.ints("changed_by", optional=True),
            renamed_from=read.maybe_text("renamed_from"),
        )


# What the kernel answered when a connect or bind succeeded (or goes on), and what a
# send that was not made by the supervisor says.
_SUCCEEDED = frozenset({"connected", "bound", "in-progress"})
UNOBSERVED = "unobserved"


@dataclass(frozen=True, kw_only=True)
class NetworkAttempt:
    """A call of an IP socket with a destination.

    ``connect`` and ``bind`` are made by the supervisor with the address it recorded:
    their ``outcome`` is the kernel's answer (connected, refused, unreachable, bound,
    address-unavailable, in-progress, ...). Sends (``sendto``, ``sendmsg``,
    ``sendmmsg``) are the kernel's own: their outcome is "unobserved".
    """

    pid: int
    call: str  # connect, bind, sendto, sendmsg, sendmmsg
    family: str  # inet, inet6, or a number
    type: str  # stream, dgram, raw, or unknown
    address: str
    port: int
    outcome: str

    @property
    def failed(self) -> bool:
        return self.outcome not in _SUCCEEDED and self.outcome != UNOBSERVED

    @property
    def loopback(self) -> bool:
        """Inside the build's own network namespace; anything else tried to reach out."""
        return self.family in ("inet", "inet6") and is_loopback(self.address)

    @property
    def counted_by_kernel(self) -> bool:
        """Whether the kernel counted this attempt as refused for want of a route
        (OutNoRoutes): an IP destination outside the namespace it tried to reach."""
        if self.loopback or self.family not in ("inet", "inet6"):
            return False
        return self.outcome == "unreachable" or (self.outcome == UNOBSERVED and self.call != "bind")

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

    @classmethod
    def from_json(cls, read: _Read) -> NetworkAttempt:
        return cls(
            pid=read.integer("pid"),
            call=read.text("call"),
            family=read.text("family"),
            type=read.text("type"),
            address=read.text("address"),
            port=read.integer("port"),
            outcome=read.text("outcome"),
        )


@dataclass(frozen=True, kw_only=True)
class HermeticPathAttempt:
    """A build process reaching for hermetic's own machinery under ``/.hermetic/``
    (it cannot: the directory is closed to the build's uid)."""

    pid: int
    call: str  # exec, open, unlink, rmdir, mkdir, rename
    path: str

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "call": self.call, "path": self.path}

    @classmethod
    def from_json(cls, read: _Read) -> HermeticPathAttempt:
        return cls(pid=read.integer("pid"), call=read.text("call"), path=read.text("path"))


@dataclass(frozen=True, kw_only=True)
class TracerUsage:
    """What the tracer itself held: events kept, calls it answered without recording
    (past a cap), the supervisor's peak memory, and which of its loops recorded
    (``native`` or ``python``; None in traces from before it said)."""

    events: int = 0
    dropped: int = 0
    peak_memory_bytes: int = 0
    loop: str | None = None

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "events": self.events,
            "dropped": self.dropped,
            "peak_memory_bytes": self.peak_memory_bytes,
        }
        if self.loop is not None:
            document["loop"] = self.loop
        return document

    @classmethod
    def from_json(cls, read: _Read) -> TracerUsage:
        return cls(
            events=read.integer("events"),
            dropped=read.integer("dropped"),
            peak_memory_bytes=read.integer("peak_memory_bytes"),
            loop=read.maybe_text("loop"),
        )


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

    @classmethod
    def from_json(cls, read: _Read) -> NondeterminismRead:
        return cls(
            source=read.text("source"),
            pid=read.maybe_integer("pid"),
            detail=read.maybe_text("detail") or "",
            count=read.integer("count"),
        )


@dataclass(frozen=True, kw_only=True)
class OutputWriter:
    """Who last wrote an output file."""

    pid: int
    path: str  # the program the writing process ran (its last exec)
    argv: tuple[str, ...]
    seq: int | None = None  # that exec's seq in ``executions``

    def to_json(self) -> dict[str, Any]:
        # The command line is the execution's, named by its seq: one process that writes
        # N files with a long command line would otherwise repeat it N times.
        data: dict[str, Any] = {"pid": self.pid, "program": self.path, "exec": self.seq}
        if self.seq is None and self.argv:  # no execution to name: the argv itself
            data["argv"] = list(self.argv)
        return data

    @classmethod
    def from_json(cls, read: _Read, argv_of: dict[int, tuple[str, ...]]) -> OutputWriter:
        """``argv_of``: each execution's argv by its seq (older trace.json files wrote the
        writer's argv itself)."""
        seq = read.maybe_integer("exec")
        if "argv" in read.document:
            argv = read.strs("argv")
        elif seq is None:
            argv = ()
        elif seq in argv_of:
            argv = argv_of[seq]
        else:
            raise TraceFormatError(f"{read.where}.exec: no execution has seq {seq}")
        return cls(pid=read.integer("pid"), path=read.text("program"), argv=argv, seq=seq)


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
    failed_executions: tuple[FailedExecution, ...] = ()
    # The kernel's count of connections and packets refused for want of a route in the
    # build's network namespace (None: not read), and how many of them the trace lacks.
    kernel_no_route: int | None = None
    unseen_network_attempts: int = 0

    def writer_of(self, path: str) -> OutputWriter | None:
        return self.writers.get(path)

    def _lists(self) -> dict[str, list[Any]]:
        return {
            "executions": [e.to_json() for e in self.executions],
            "failed_executions": [e.to_json() for e in self.failed_executions],
            "processes": [p.to_json() for p in self.processes],
            "files": [f.to_json() for f in self.files],
            "other_reads": [f.to_json() for f in self.other_reads],
            "network": [n.to_json() for n in self.network],
            "hermetic_path_attempts": [a.to_json() for a in self.hermetic_path_attempts],
            "nondeterminism": [n.to_json() for n in self.nondeterminism],
            "writers": [[path, w.to_json()] for path, w in sorted(self.writers.items())],
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
            "failed_executions": lists["failed_executions"],
            "processes": lists["processes"],
            "exec_failures": self.exec_failures,
            "files": lists["files"],
            "other_reads": lists["other_reads"],
            "network": lists["network"],
            "kernel": {
                "no_route": self.kernel_no_route,
                "unseen_network_attempts": self.unseen_network_attempts,
            },
            "hermetic_path_attempts": lists["hermetic_path_attempts"],
            "nondeterminism": lists["nondeterminism"],
            "writers": dict(lists["writers"]),
        }

    def to_json_bytes(self) -> bytes:
        return _encode(self.to_json())

    @classmethod
    def from_json(cls, document: Any) -> BuildTrace:
        """Read a trace.json as :meth:`to_json` writes it.

        Raises:
            TraceFormatError: not a trace hermetic wrote (a field missing, of the wrong type
                or inconsistent), naming the field.
        """
        read = _Read(document, "trace.json")
        if read.text("_schema") != TRACE_SCHEMA:
            raise TraceFormatError(f"trace.json: _schema: expected {TRACE_SCHEMA}")
        gaps = read.strs("gaps")
        if read.flag("complete") is bool(gaps):
            raise TraceFormatError("trace.json: complete: true only when there are no gaps")
        executions = tuple(Execution.from_json(r) for r in read.objects("executions"))
        argv_of = {execution.seq: execution.argv for execution in executions}
        # traces written before the kernel's count and failed executions were kept lack
        # them: the count is then unknown (None), as when it could not be read
        kernel = _Read(read.document.get("kernel", {}), "trace.json.kernel")
        return cls(
            level=read.text("level"),
            executions=executions,
            failed_executions=tuple(
                FailedExecution.from_json(r)
                for r in read.objects("failed_executions", optional=True)
            ),
            processes=tuple(Process.from_json(r) for r in read.objects("processes")),
            exec_failures=read.integer("exec_failures"),
            files=tuple(FileRecord.from_json(r) for r in read.objects("files")),
            network=tuple(NetworkAttempt.from_json(r) for r in read.objects("network")),
            nondeterminism=tuple(
                NondeterminismRead.from_json(r) for r in read.objects("nondeterminism")
            ),
            interfaces=read.strs("network_interfaces"),
            gaps=gaps,
            notifications=read.integer("notifications"),
            writers={
                path: OutputWriter.from_json(writer, argv_of)
                for path, writer in read.table("writers")
            },
            other_reads=tuple(FileRecord.from_json(r) for r in read.objects("other_reads")),
            hermetic_path_attempts=tuple(
                HermeticPathAttempt.from_json(r) for r in read.objects("hermetic_path_attempts")
            ),
            tracer=TracerUsage.from_json(_Read(read.value("tracer"), "trace.json.tracer")),
            kernel_no_route=kernel.maybe_integer("no_route"),
            unseen_network_attempts=kernel.maybe_integer("unseen_network_attempts") or 0,
        )

    def fitted(self, max_bytes: int) -> tuple[BuildTrace, bytes]:
        """This trace and its trace.json, cut to at most ``max_bytes``.

        A trace that fits is returned as is. Otherwise the lists are kept in order
        of precedence, network evidence first (``_CUT_ORDER``): the first list that does
        not fit keeps its first items, and the lists after it none. The trace says in its
        gaps what was left out: it is then incomplete, and so is its summary.
        """
        data = self.to_json_bytes()
        if len(data) <= max_bytes:
            return self, data
        full = self._lists()
        sizes = {name: [len(_dumps(item)) + 4 for item in items] for name, items in full.items()}
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
                if count < len(full[name]):
                    # Nothing after a list that was cut: a writer or a process could name
                    # an execution that was left out, and trace.json would not read back.
                    left = 0
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
                failed_executions=self.failed_executions[: len(kept["failed_executions"])],
                processes=self.processes[: len(kept["processes"])],
                files=self.files[: len(kept["files"])],
                other_reads=self.other_reads[: len(kept["other_reads"])],
                network=self.network[: len(kept["network"])],
                hermetic_path_attempts=self.hermetic_path_attempts[
                    : len(kept["hermetic_path_attempts"])
                ],
                nondeterminism=self.nondeterminism[: len(kept["nondeterminism"])],
                writers={path: self.writers[path] for path, _ in kept["writers"]},
            )
            data = trimmed.to_json_bytes()
            if len(data) <= max_bytes or budget <= 0:
                return trimmed, data  # (with every list empty, as small as it gets)
            budget -= len(data) - max_bytes  # the document around the lists was larger

    def summary(self) -> dict[str, Any]:
        """The short form that goes into result.json and the provenance.

        ``network_attempts`` counts attempts to reach outside the build's network
        namespace (any destination but loopback), never fewer than the kernel refused
        there; ``loopback_attempts`` the traffic that stays inside it (a test suite's
        local server).
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
            "network_attempts": len(outside) + self.unseen_network_attempts,
            "network_targets": sorted({f"{n.call} {n.address}:{n.port}" for n in outside}),
            "loopback_attempts": len(self.network) - len(outside),
            "hermetic_path_attempts": len(self.hermetic_path_attempts),
            "nondeterminism": dict(sorted(sources.items())),
        }


_TABLES = frozenset({"writers"})  # objects keyed by path: one line per entry


def _encode(document: dict[str, Any]) -> bytes:
    """trace.json: one line per field, and one per item of a list or table, each
    item compact; a record (``tracer``, ``kernel``) on its field's line. (Indented JSON
    would take Python's pure encoder: 7x slower on a GNU hello trace, and on the path of
    every traced build.)"""
    lines = []
    for key, value in document.items():
        name = _dumps(key)
        if isinstance(value, list) and value:
            items = ",\n  ".join(_dumps(item) for item in value)
            lines.append(f" {name}: [\n  {items}\n ]")
        elif key in _TABLES and value:
            entries = ",\n  ".join(f"{_dumps(k)}: {_dumps(v)}" for k, v in value.items())
            lines.append(f" {name}: {{\n  {entries}\n }}")
        else:
            lines.append(f" {name}: {_dumps(value)}")
    return ("{\n" + ",\n".join(lines) + "\n}\n").encode("ascii")


def _dumps(value: Any) -> str:
    # ASCII: a name that is not UTF-8 (its bytes kept as surrogates) is escaped as
    # \udcXX, so trace.json is valid UTF-8 JSON whatever names the build made.
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"))


class _Read:
    """Typed, validated reading of one object of a trace.json (errors name the field)."""

    def __init__(self, document: Any, where: str) -> None:
        if not isinstance(document, dict):
            raise TraceFormatError(f"{where}: expected an object")
        self.document = document
        self.where = where

    def _fail(self, key: str, expected: str) -> TraceFormatError:
        shown = repr(self.document.get(key))[:40]
        return TraceFormatError(f"{self.where}.{key}: expected {expected}, got {shown}")

    def value(self, key: str) -> Any:
        if key not in self.document:
            raise TraceFormatError(f"{self.where}.{key}: missing")
        return self.document[key]

    def integer(self, key: str) -> int:
        value = self.value(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._fail(key, "an integer")
        return value

    def maybe_integer(self, key: str) -> int | None:
        return None if self.document.get(key) is None else self.integer(key)

    def text(self, key: str) -> str:
        value = self.value(key)
        if not isinstance(value, str):
            raise self._fail(key, "a string")
        return value

    def maybe_text(self, key: str) -> str | None:
        return None if self.document.get(key) is None else self.text(key)

    def flag(self, key: str) -> bool:
        value = self.value(key)
        if not isinstance(value, bool):
            raise self._fail(key, "true or false")
        return value

    def _list(self, key: str, optional: bool) -> list[Any]:
        value = self.document.get(key, []) if optional else self.value(key)
        if not isinstance(value, list):
            raise self._fail(key, "a list")
        return value

    def ints(self, key: str, *, optional: bool = False) -> tuple[int, ...]:
        value = self._list(key, optional)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise self._fail(key, "a list of integers")
        return tuple(value)

    def strs(self, key: str) -> tuple[str, ...]:
        value = self._list(key, False)
        if not all(isinstance(v, str) for v in value):
            raise self._fail(key, "a list of strings")
        return tuple(value)

    def objects(self, key: str, *, optional: bool = False) -> list[_Read]:
        return [
            _Read(item, f"{self.where}.{key}[{i}]")
            for i, item in enumerate(self._list(key, optional))
        ]

    def table(self, key: str) -> list[tuple[str, _Read]]:
        value = self.value(key)
        if not isinstance(value, dict):
            raise self._fail(key, "an object")
        return [
            (str(k), _Read(v, f"{self.where}.{key}[{str(k)[:40]!r}]")) for k, v in value.items()
        ]
