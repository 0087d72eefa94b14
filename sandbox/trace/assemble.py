"""From raw tracer events to a :class:`BuildTrace` (pure: no I/O).

Supervisor events, in the order the build made the calls (host pids):
``["pid", host, nspid, host_ppid, tgid]`` (before any other event of that host pid,
and again when a new process reuses it),
``["exec", host, path, argv, outcome, stdout_stderr, argv_cut(, resolved)]`` (outcome
"ran", "failed" or "unknown", as observed in the process; ``resolved``, for a failed
one, where its links led when that was a directory closed to the build),
``["exit", host, status]``, ``["open", host, path, flags]``, ``["unlink"|"rmdir"|
"mkdir"|"symlink"|"mknod"|"truncate"|"chmod", host, path]``, ``["rename", host, old,
new, exchange]``, ``["link", host, old, new]``, ``["listdir", host, dir, count]``,
``["getrandom", host, length, flags]``, ``["uname", host]``, ``["cpus", host]``,
``["net", host, call, family, type, address, port, outcome]``,
``["unreadable", host, nr, reason]``.

Events of hermetic's own processes are left out, and which those are is decided by
pid, never by a path the build could also use: podman's init (the container's first
process), the runner (the first program another process starts), and the runner's
children and their descendants until they start a program that is not the runner's
busybox, which is how the runner starts the build. Everything else is the build's,
including any attempt of the build to run or touch what lies under ``/.hermetic/``
(recorded apart: the build's uid cannot enter that directory). A thread is judged by
its thread group; a process that the kernel handed to init (an orphan) is the build's.
"""

from __future__ import annotations

import socket
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sandbox.trace.fanotify import FileReads
from sandbox.trace.model import (
    BuildTrace,
    Execution,
    FailedExecution,
    FileRecord,
    HermeticPathAttempt,
    NetworkAttempt,
    NondeterminismRead,
    OutputWriter,
    Process,
    TracerUsage,
)
from sandbox.trace.syscalls import ARGV_MAX_BYTES, O_ACCMODE, O_CREAT, O_TRUNC

HERMETIC_DIR = "/.hermetic/"
# How the runner and its children start programs of their own: its busybox by path,
# or an applet through /proc/self/exe. Only these keep one of its children hermetic's.
RUNNER_PROGRAMS = ("/.hermetic/busybox", "/proc/self/exe")
_INFRA = -1
_HEAP_KEY_BYTES = 8
_GRND_NONBLOCK = 1
# Files whose content differs between machines, builds or variations.
NONDETERMINISTIC_PATHS = (
    ("/dev/urandom", "random"),
    ("/dev/random", "random"),
    ("/proc/sys/kernel/random/", "random"),
    ("/proc/cpuinfo", "cpu_count"),
    ("/sys/devices/system/cpu/", "cpu_count"),
    ("/etc/passwd", "user_database"),
    ("/etc/group", "user_database"),
    ("/etc/hostname", "hostname"),
    ("/etc/localtime", "timezone"),
    ("/usr/share/zoneinfo/", "timezone"),
)
_FAMILIES = {socket.AF_INET: "inet", socket.AF_INET6: "inet6", socket.AF_PACKET: "packet"}
_TYPES = {socket.SOCK_STREAM: "stream", socket.SOCK_DGRAM: "dgram", socket.SOCK_RAW: "raw"}


def nondeterministic_source(path: str) -> str | None:
    for prefix, source in NONDETERMINISTIC_PATHS:
        if path == prefix or (prefix.endswith("/") and path.startswith(prefix)):
            return source
    return None


@dataclass
class _File:
    read_by: list[int] = field(default_factory=list)
    written_by: list[int] = field(default_factory=list)
    created_by: list[int] = field(default_factory=list)
    removed_by: list[int] = field(default_factory=list)
    changed_by: list[int] = field(default_factory=list)
    renamed_from: str | None = None

    def freeze(self, path: str, unattributed: int) -> FileRecord:
        return FileRecord(
            path=path,
            read_by=_unique(self.read_by),
            unattributed_reads=unattributed,
            written_by=_unique(self.written_by),
            created_by=_unique(self.created_by),
            removed_by=_unique(self.removed_by),
            changed_by=_unique(self.changed_by),
            renamed_from=self.renamed_from,
        )


def _unique(values: Iterable[int]) -> tuple[int, ...]:
    return tuple(dict.fromkeys(values))


class _Assembler:
    def __init__(
        self, build_dir: str, initial_paths: set[str], deep: bool, init_pid: int | None
    ) -> None:
        self.build_dir = build_dir.rstrip("/")
        self.deep = deep
        self.existing = set(initial_paths)
        self.ns: dict[int, int] = {}
        self.parent: dict[int, int] = {}
        self.group: dict[int, int] = {}  # thread -> thread group (its process)
        self.init = init_pid
        self.runner: int | None = None
        # Per process: the seq of its last exec, None for the build's before any exec,
        # _INFRA for hermetic's own.
        self.image: dict[int, int | None] = {}
        self.executions: list[Execution] = []
        self.failed: list[FailedExecution] = []
        self.execs_of: dict[int, list[int]] = defaultdict(list)
        self.parent_of: dict[int, int] = {}
        self.exits: dict[int, int] = {}
        self.files: dict[str, _File] = defaultdict(_File)
        self.other: dict[str, _File] = defaultdict(_File)
        self.writer: dict[str, tuple[int, int | None]] = {}
        self.network: list[NetworkAttempt] = []
        self.nondeterminism: Counter[tuple[str, int | None, str]] = Counter()
        self.exec_failures = 0
        self.unreadable = 0
        self.cut_argv = 0
        self.attempts: list[HermeticPathAttempt] = []

    def inside(self, path: str) -> bool:
        return path == self.build_dir or path.startswith(self.build_dir + "/")

    def place(self, event: Sequence[Any]) -> None:
        """A ``pid`` event: where a host pid sits in the container. A host pid placed
        again is a new process that reuses it: nothing of the old one carries over."""
        host = event[1]
        self.image.pop(host, None)
        self.ns[host], self.parent[host] = event[2], event[3]
        self.group[host] = event[4] if len(event) > 4 else host
        if self.init is None and event[2] == 1:
            self.init = host

    def image_of(self, host: int) -> int | None:
        host = self.group.get(host, host)
        chain: list[int] = []
        found: int | None = None
        while host in self.image or (host in self.parent and len(chain) < 4096):
            if host in self.image:
                found = self.image[host]
                break
            chain.append(host)
            parent = self.parent[host]
            if parent == self.init and host != self.runner:
                break  # an orphan of the build, handed to init: still the build's
            host = self.group.get(parent, parent)
        for member in chain:
            self.image[member] = found
        return found

    def build_pid(self, host: int) -> int | None:
        """The pid in the build's namespace, or None for hermetic's own processes."""
        if self.image_of(host) == _INFRA:
            return None
        pid = self.ns.get(host, 0)
        parent = self.parent.get(host)
        if pid and pid not in self.parent_of:
            self.parent_of[pid] = self.ns.get(parent, 0) if parent is not None else 0
        return pid

    def feed(self, event: Sequence[Any]) -> None:
        kind, host = event[0], event[1]
        if kind == "pid":
            self.place(event)
            return
        if kind == "exec":
            cut = len(event) > 6 and bool(event[6])
            resolved = event[7] if len(event) > 7 else None
            ran = self.exec(host, event[2], list(event[3]), str(event[4]), cut, resolved)
            for path in event[5] if ran and len(event) > 5 else ():
                self.inherited_output(host, path)
            return
        pid = self.build_pid(host)
        if pid is None:
            return
        handler = getattr(self, f"on_{kind}", None)
        if handler is not None:
            handler(host, pid, event[2:])

    def exec(
        self,
        host: int,
        path: str,
        argv: list[str],
        outcome: str,
        cut: bool,
        resolved: str | None = None,
    ) -> bool:
        """An exec attempt; True when it (may have) started a program of the build."""
        process = self.group.get(host, host)
        if self.init is None:
            self.init = process  # the container's first program is podman's init
        if process == self.init:
            self.image[process] = _INFRA
            return False
        if self.runner is None:
            self.runner = process  # the first program anyone else starts: the runner
        if process == self.runner:
            self.image[process] = _INFRA
            return False
        failed = outcome == "failed"
        if self.image_of(host) == _INFRA:
            if failed or path.startswith(RUNNER_PROGRAMS):
                return False  # one of the runner's children, running the runner's busybox
            self.image[process] = None  # the runner starting the build: the build's now
        pid = self.build_pid(host) or 0
        for spelled in (path, resolved):
            if spelled is not None and spelled.startswith(HERMETIC_DIR):
                self.attempts.append(HermeticPathAttempt(pid=pid, call="exec", path=spelled))
                break
        self.cut_argv += cut
        if failed:
            self.exec_failures += 1
            self.failed.append(FailedExecution(pid=pid, path=path, argv=tuple(argv)))
            return False
        seq = len(self.executions) + 1
        self.executions.append(
            Execution(
                seq=seq,
                pid=pid,
                ppid=self.parent_of.get(pid, 0),
                path=path,
                argv=tuple(argv),
                outcome=outcome,
            )
        )
        self.image[process] = seq
        self.execs_of[pid].append(seq)
        return True

    def touches_hermetic(self, pid: int, call: str, path: str) -> None:
        if path.startswith(HERMETIC_DIR) or path == HERMETIC_DIR.rstrip("/"):
            self.attempts.append(HermeticPathAttempt(pid=pid, call=call, path=path))

    def inherited_output(self, host: int, path: str) -> None:
        """The program just started writes to ``path`` through stdout or stderr."""
        pid = self.build_pid(host)
        if pid is None or not self.inside(path):
            return
        record = self.files[path]
        if pid not in record.written_by:
            record.written_by.append(pid)
        self.writer[path] = (pid, self.image_of(host))

    def on_exit(self, host: int, pid: int, rest: Sequence[Any]) -> None:
        self.exits[pid] = rest[0]

    def on_open(self, host: int, pid: int, rest: Sequence[Any]) -> None:
        path, flags = rest[0], rest[1]
        self.touches_hermetic(pid, "open", path)
        writes = bool(flags & O_ACCMODE or flags & (O_CREAT | O_TRUNC))
        if self.inside(path):
            record = self.files[path]
            if writes:
                record.written_by.append(pid)
                self.writer[path] = (pid, self.image_of(host))
                if flags & O_CREAT and path not in self.existing:
                    record.created_by.append(pid)
                    self.existing.add(path)
            else:
                record.read_by.append(pid)
            return
        source = nondeterministic_source(path)
        if source is not None and not writes:
            self.nondeterminism[(source, pid, path)] += 1
        if self.deep:
            target = self.other[path]
            (target.written_by if writes else target.read_by).append(pid)

    def on_unlink(self, host: int, pid: int, rest: Sequence[Any]) -> None:
        self.touches_hermetic(pid, "unlink", rest[0])
        if self.inside(rest[0]):
            self.files[rest[0]].removed_by.append(pid)
            self.existing.discard(rest[0])
            self.writer.pop(rest[0], None)

    on_rmdir = on_unlink

    def on_mkdir(self, host: int, pid: int, rest: Sequence[Any]) -> None:
        self.touches_hermetic(pid, "mkdir", rest[0])
        if self.inside(rest[0]):
            self.files[rest[0]].created_by.append(pid)
            self.existing.add(rest[0])

    def on_rename(self, host: int, pid: int, rest: Sequence[Any]) -> None:
        old, new = rest[0], rest[1]
        exchange = len(rest) > 2 and bool(rest[2])
        self.touches_hermetic(pid, "rename", old)
        self.touches_hermetic(pid, "rename", new)
        if exchange:  # both names stay, each with the other's file
            for path in (old, new):
                if self.inside(path):
                    self.files[path].written_by.append(pid)
            first, second = self.writer.pop(old, None), self.writer.pop(new, None)
            if first is not None and self.inside(new):
                self.writer[new] = first
            if second is not None and self.inside(old):
                self.writer[old] = second
            return
        if self.inside(new):
            record = self.files[new]
            record.renamed_from = old
            record.written_by.append(pid)
            self.existing.add(new)
            if old in self.writer:
                self.writer[new] = self.writer.pop(old)
        if self.inside(old):
            self.existing.discard(old)

    def _made(self, host: int, pid: int, path: str, call: str) -> None:
        """``path`` now exists with content this process chose (a link, a node)."""
        self.touches_hermetic(pid, call, path)
        if self.inside(path):
            record = self.files[path]
            record.written_by.append(pid)
            if path not in self.existing:
                record.created_by.append(pid)
                self.existing.add(path)
            self.writer[path] = (pid, self.image_of(host))

    def on_link(self, host: int, pid: int, rest: Sequence[Any]) -> None:
        old, new = rest[0], rest[1]
        self.touches_hermetic(pid, "link", old)
        self._made(host, pid, new, "link")
        if self.inside(new) and old in self.writer:
            self.writer[new] = self.writer[old]  # the same file: the same writer

    def on_symlink(self, host: int, pid: int, rest: Sequence[Any]) -> None:
        self._made(host, pid, rest[0], "symlink")

    def on_mknod(self, host: int, pid: int, rest: Sequence[Any]) -> None:
        self._made(host, pid, rest[0], "mknod")

    def on_truncate(self, host: int, pid: int, rest: Sequence[Any]) -> None:
        path = rest[0]
        self.touches_hermetic(pid, "truncate", path)
        if self.inside(path):
            self.files[path].written_by.append(pid)
            self.writer[path] = (pid, self.image_of(host))

    def on_chmod(self, host: int, pid: int, rest: Sequence[Any]) -> None:
        path = rest[0]
        self.touches_hermetic(pid, "chmod", path)
        if self.inside(path):
            self.files[path].changed_by.append(pid)

    def on_listdir(self, host: int, pid: int, rest: Sequence[Any]) -> None:
        count = rest[1] if len(rest) > 1 else 1
        self.nondeterminism[("listdir", pid, rest[0])] += count

    def on_getrandom(self, host: int, pid: int, rest: Sequence[Any]) -> None:
        length, flags = rest[0], rest[1]
        if length == _HEAP_KEY_BYTES and flags == _GRND_NONBLOCK:
            # glibc seeds malloc's heap key this way in every process: not build input.
            self.nondeterminism[("heap_key", pid, "getrandom(8, GRND_NONBLOCK)")] += 1
        else:
            self.nondeterminism[("getrandom", pid, f"{length} bytes")] += 1

    def on_uname(self, host: int, pid: int, rest: Sequence[Any]) -> None:
        self.nondeterminism[("uname", pid, "")] += 1

    def on_cpus(self, host: int, pid: int, rest: Sequence[Any]) -> None:
        self.nondeterminism[("cpu_count", pid, "sched_getaffinity")] += 1

    def on_net(self, host: int, pid: int, rest: Sequence[Any]) -> None:
        call, family, kind, address, port, outcome = rest[:6]
        self.network.append(
            NetworkAttempt(
                pid=pid,
                call=call,
                family=_FAMILIES.get(family, str(family)),
                type=_TYPES.get(kind, "unknown"),
                address=address,
                port=port,
                outcome=outcome,
            )
        )

    def on_unreadable(self, host: int, pid: int, rest: Sequence[Any]) -> None:
        self.unreadable += 1

    def writers(self) -> dict[str, OutputWriter]:
        found = {}
        by_seq = {e.seq: e for e in self.executions}
        for path, (pid, at_write) in self.writer.items():
            later = [s for s in self.execs_of.get(pid, []) if at_write is None or s > at_write]
            seq = later[-1] if later else at_write
            execution = by_seq.get(seq) if seq is not None else None
            found[path] = OutputWriter(
                pid=pid,
                path=execution.path if execution else "",
                argv=execution.argv if execution else (),
                seq=execution.seq if execution else None,
            )
        return found

    def processes(self) -> tuple[Process, ...]:
        pids = set(self.parent_of) | set(self.execs_of) | set(self.exits)
        pids.discard(0)
        return tuple(
            Process(
                pid=pid,
                ppid=self.parent_of.get(pid, 0),
                execs=tuple(self.execs_of.get(pid, ())),
                exit_status=self.exits.get(pid),
            )
            for pid in sorted(pids)
        )


def _nondeterminism_order(item: tuple[tuple[str, int | None, str], int]) -> tuple[str, int, str]:
    (source, pid, detail), _ = item
    return source, pid or 0, detail


def assemble(
    *,
    events: Iterable[Sequence[Any]],
    reads: FileReads | None,
    level: str,
    build_dir: str,
    initial_paths: set[str],
    interfaces: Sequence[str],
    notifications: int = 0,
    gaps: Sequence[str] = (),
    init_pid: int | None = None,
    tracer: TracerUsage | None = None,
    kernel_no_route: int | None = None,
) -> BuildTrace:
    """Build the trace (see the module docstring for the event format), in one pass.

    ``init_pid`` is the host pid of the container's first process (runc says it);
    without it, the process whose container pid is 1. ``kernel_no_route`` is how many
    connections and packets the kernel refused in the build's network namespace for
    want of a route (every destination but loopback): when the trace recorded fewer,
    the difference is added to the outside attempts and is a gap (None: not checked;
    the caller says why in ``gaps``).
    """
    assembler = _Assembler(build_dir, initial_paths, deep=level == "deep", init_pid=init_pid)
    for event in events:
        assembler.feed(event)
    found_gaps = list(gaps)
    unattributed: Counter[str] = Counter()
    if reads is not None:
        seen: Counter[str] = Counter(reads.reads)
        for path, count in seen.items():
            attributed = len(assembler.files[path].read_by) if path in assembler.files else 0
            unattributed[path] = max(0, count - attributed)
            assembler.files[path]
        if reads.overflowed:
            found_gaps.append(
                "the fanotify queue overflowed: some reads in the build dir are missing"
            )
        if reads.unresolved:
            found_gaps.append(f"{reads.unresolved} reads in directories the tracer could not place")
    if assembler.unreadable:
        found_gaps.append(f"the arguments of {assembler.unreadable} calls could not be read")
    if assembler.cut_argv:
        found_gaps.append(
            f"the argument lists of {assembler.cut_argv} executions were cut at "
            f"{ARGV_MAX_BYTES} bytes"
        )
    unseen = 0
    if kernel_no_route is not None:
        traced = sum(1 for attempt in assembler.network if attempt.counted_by_kernel)
        unseen = max(0, kernel_no_route - traced)
        if unseen:
            found_gaps.append(
                f"the kernel refused {kernel_no_route} connections or packets to addresses "
                f"outside the build's network namespace; the trace recorded {traced}: "
                f"{unseen} attempts to reach outside are missing from it (counted in "
                "network_attempts)"
            )
    return BuildTrace(
        level=level,
        executions=tuple(assembler.executions),
        failed_executions=tuple(assembler.failed),
        processes=assembler.processes(),
        exec_failures=assembler.exec_failures,
        files=tuple(
            record.freeze(path, unattributed.get(path, 0))
            for path, record in sorted(assembler.files.items())
        ),
        network=tuple(assembler.network),
        nondeterminism=tuple(
            NondeterminismRead(source=source, pid=pid, detail=detail, count=count)
            for (source, pid, detail), count in sorted(
                assembler.nondeterminism.items(),
                key=_nondeterminism_order,
            )
        ),
        interfaces=tuple(interfaces),
        gaps=tuple(found_gaps),
        notifications=notifications,
        writers=assembler.writers(),
        other_reads=tuple(
            record.freeze(path, 0) for path, record in sorted(assembler.other.items())
        ),
        hermetic_path_attempts=tuple(assembler.attempts),
        tracer=tracer or TracerUsage(),
        kernel_no_route=kernel_no_route,
        unseen_network_attempts=unseen,
    )
