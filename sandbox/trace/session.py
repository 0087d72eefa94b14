"""One traced build: the supervisor process, the fanotify watch, the start gate.

Order matters. The supervisor and the fanotify helper are started before the container
is created, so that their start-up overlaps podman's; the supervisor listens before the
container starts (runc hands it the notification fd while starting the container). The
runner stages the source and then waits on the gate, a FIFO made here and mounted where
only the runner can open it, so the fanotify marks are in place, and the staged tree's
directories known, before the build touches anything. The gate is released by writing
the name of the end-of-build sentinel into it: the name reaches the runner and nothing
the build can read. After the build, the runner creates that file in its state directory
(which the build cannot reach either); its fanotify event ends the build's share of the
stream, so the runner's own hand-back copy is not taken for build reads; the supervisor,
told the same name, stops recording when the runner opens it.

Before the gate opens, the session also opens the kernel's network counters of the
build's namespace (``/proc/PID/net/snmp`` and ``snmp6``; an open file keeps the
namespace readable after the container is gone) and reads them again at the end: every
connection or packet the kernel refused for want of a route is an attempt to reach
outside, whatever the trace recorded.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import secrets
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psutil

from sandbox.errors import SandboxError
from sandbox.plan import STATE_DIR
from sandbox.trace.assemble import assemble
from sandbox.trace.fanotify import (
    BuildReads,
    FanotifyError,
    FileReads,
    PendingGroup,
    seed_directories,
)
from sandbox.trace.levels import TraceLevel
from sandbox.trace.limits import DEFAULT_TRACE_LIMITS, TraceLimits
from sandbox.trace.model import BuildTrace, TracerUsage
from sandbox.trace.profile import build_profile
from sandbox.trace.supervisor import read_record

log = logging.getLogger(__name__)

_START_TIMEOUT_S = 30.0
_FINISH_TIMEOUT_S = 60.0


def new_token() -> str:
    """Name of the runner's end-of-build sentinel file."""
    return f"build-ended-{secrets.token_hex(8)}"


def load_base_profile(path: Path) -> dict[str, Any]:
    """podman's default seccomp profile, the base of every traced build's profile.

    Raises:
        SandboxError: the file is missing or unreadable.
    """
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise SandboxError(
            f"{path} is missing: tracing starts from podman's default seccomp profile "
            "(package golang-github-containers-common); set HERMETIC_SECCOMP_BASE, or --trace=off"
        ) from None
    except (OSError, ValueError) as e:
        raise SandboxError(f"{path}: unreadable seccomp profile: {e}") from e
    return data


@dataclass(frozen=True, kw_only=True)
class TraceFiles:
    """Host paths a traced build uses."""

    profile: Path  # the seccomp profile podman loads
    socket: Path  # where runc hands over the notification fd
    events: Path  # what the supervisor writes when the build is over
    gate: Path  # the FIFO the runner waits on (mounted at sandbox.plan.GATE)


class TraceSession:
    """Runs the tracers around one container; :meth:`finish` returns the trace."""

    def __init__(
        self,
        *,
        level: TraceLevel,
        token: str,
        files: TraceFiles,
        base_profile: dict[str, Any],
        build_dir: str,
        initial_paths: set[str],
        personalities: tuple[int, ...] = (),
        limits: TraceLimits = DEFAULT_TRACE_LIMITS,
        memfd: bool = True,
    ) -> None:
        self.level = level
        self.limits = limits
        self.personalities = personalities
        self.memfd = memfd
        self.token = token
        self.files = files
        self.build_dir = build_dir
        self.initial_paths = initial_paths
        self._base = base_profile
        self._supervisor: subprocess.Popen[bytes] | None = None
        self._pending_group: PendingGroup | None = None
        self._supervisor_stderr: str | None = None  # read once, when it has failed
        self._start_reported = False  # its failure at start is already the error
        self._reads: BuildReads | None = None
        self._gaps: list[str] = []
        self._interfaces: list[str] = []
        self._no_route: NoRouteCounter | None = None
        self._events_seen = 0

    def before_create(self) -> None:
        """Write the profile and the gate, and start the supervisor and the fanotify
        helper, without waiting for either: their start-up overlaps the container's
        creation (:meth:`before_start` waits)."""
        self._supervisor = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sandbox.trace.supervisor",
                "--socket",
                str(self.files.socket),
                "--out",
                str(self.files.events),
                "--max-events",
                str(self.limits.max_events),
                "--max-bytes",
                str(self.limits.max_event_bytes),
                "--sentinel",
                f"{STATE_DIR}/{self.token}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._pending_group = PendingGroup([self.build_dir, STATE_DIR])
        profile = build_profile(
            self._base,
            level=self.level,
            listener=str(self.files.socket),
            personalities=self.personalities,
            memfd=self.memfd,
        )
        self.files.profile.write_text(json.dumps(profile))
        self.files.gate.unlink(missing_ok=True)
        os.mkfifo(self.files.gate)
        # The runner (the container's root, not this user inside) opens it for reading.
        self.files.gate.chmod(0o644)

    def before_start(self) -> None:
        """Wait until the supervisor listens (runc hands it the notification fd while
        starting the container).

        Raises:
            SandboxError: the supervisor did not come up.
        """
        process = self._supervisor
        if process is None or process.stdout is None:
            raise SandboxError("the trace supervisor was not started")
        deadline = time.monotonic() + _START_TIMEOUT_S
        try:
            while True:
                remaining = max(deadline - time.monotonic(), 0.0)
                if not select.select([process.stdout], [], [], remaining)[0]:
                    raise SandboxError("the trace supervisor did not start listening")
                line = process.stdout.readline()
                if line == b"ready\n":
                    return
                if not line:
                    break  # it exited
                # Anything else on its stdout (a site hook's print) is not the answer.
        finally:
            process.stdout.close()
        try:
            process.wait(timeout=_START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self._start_reported = True
        raise SandboxError(
            f"the trace supervisor exited at start:\n{self._supervisor_error()[-3000:]}"
        )

    def _supervisor_error(self) -> str:
        """What the supervisor wrote on stderr (read once: it has ended)."""
        if self._supervisor_stderr is None:
            stream = self._supervisor.stderr if self._supervisor is not None else None
            self._supervisor_stderr = stream.read().decode("utf-8", "replace") if stream else ""
        return self._supervisor_stderr

    def after_start(self, init_pid: int, *, timeout_s: float) -> None:
        """Once the runner waits at its gate: start the file watch, then let the build go."""
        gate = _open_gate(self.files.gate, init_pid, timeout_s)
        if gate is None:
            return  # the container ended before reaching the gate
        try:
            self._interfaces = _interfaces(init_pid)
            try:
                self._no_route = NoRouteCounter(init_pid)
            except (OSError, ValueError) as e:
                self._gaps.append(
                    "the kernel's count of packets refused in the build's network namespace "
                    f"could not be read ({e}): network attempts the trace missed would not show"
                )
            try:
                build_on_host = Path(f"/proc/{init_pid}/root") / self.build_dir.lstrip("/")
                pending, self._pending_group = self._pending_group, None
                if pending is None:
                    raise FanotifyError("the fanotify helper was not started")
                group, (build_fs, state_fs) = pending.open(init_pid)
                try:
                    self._reads = BuildReads(
                        group,
                        seed_directories(build_on_host, self.build_dir, build_fs),
                        state_fs,
                        self.token,
                        max_paths=self.limits.max_events,
                        max_bytes=self.limits.max_event_bytes,
                    )
                except BaseException:
                    os.close(group)  # nothing reads it: a node would collect them
                    raise
                self._reads.start()
            except (FanotifyError, OSError, ValueError) as e:
                log.warning("file reads will not be traced: %s", e)
                self._gaps.append(f"reads in the build dir were not traced: {e}")
            try:
                os.write(gate, f"{self.token}\n".encode())
            except OSError as e:
                log.debug("gate: %s", e)  # the runner is gone; nothing waits
        finally:
            os.close(gate)

    def finish(self) -> BuildTrace:
        """Collect what the tracers saw (after the container has exited)."""
        reads: FileReads | None = self._reads.stop() if self._reads is not None else None
        self._reads = None
        if reads is not None and not reads.finished:
            self._gaps.append("the build did not end normally; the trace stops where it was cut")
        no_route = None
        if self._no_route is not None:
            try:
                no_route = self._no_route.since_start()
            except (OSError, ValueError) as e:
                self._gaps.append(f"the kernel's count of refused packets could not be read: {e}")
            finally:
                self._no_route.close()
                self._no_route = None
        header, events = self._supervisor_record()
        container_pid = header.get("container_pid")
        trace = assemble(
            events=events,
            reads=reads,
            level=self.level.value,
            build_dir=self.build_dir,
            initial_paths=self.initial_paths,
            interfaces=self._interfaces,
            init_pid=container_pid if isinstance(container_pid, int) else None,
            kernel_no_route=no_route,
        )
        trailer: dict[str, Any] = header.get("trailer") or {}
        if header and not trailer:
            self._gaps.append("the trace supervisor's record ends early: events may be missing")
        dropped: dict[str, int] = trailer.get("dropped") or {}
        if dropped:
            calls = ", ".join(f"{n} {name}" for name, n in sorted(dropped.items()))
            self._gaps.append(
                f"the tracer kept {self._events_seen} events (at most "
                f"{self.limits.max_events}, and {self.limits.max_event_bytes} bytes of paths, "
                f"arguments and addresses); it recorded none of the {sum(dropped.values())} "
                f"calls after that ({calls})"
            )
        if reads is not None and reads.dropped:
            self._gaps.append(
                f"{reads.dropped} reads in the build dir were not recorded: more than "
                f"{self.limits.max_events} distinct files, or {self.limits.max_event_bytes} "
                "bytes of their paths, were read"
            )
        return replace(
            trace,
            gaps=(*self._gaps, *trace.gaps),
            notifications=int(trailer.get("notifications", 0)),
            tracer=TracerUsage(
                events=self._events_seen,
                dropped=sum(dropped.values()),
                peak_memory_bytes=int(trailer.get("peak_memory_bytes", 0)),
                loop=trailer["loop"] if trailer.get("loop") in ("native", "python") else None,
            ),
        )

    def failure(self) -> str | None:
        """Why the supervisor died, if it did (a container then fails to start)."""
        process = self._supervisor
        if process is None or process.poll() is None or process.returncode == 0:
            return None
        if self._start_reported:
            return None  # the error already says why
        error = self._supervisor_error()
        return f"the trace supervisor exited with {process.returncode}:\n{error[-3000:]}"

    def _supervisor_record(self) -> tuple[dict[str, Any], Iterator[list[Any]]]:
        """The supervisor's header and its events, read as they are used; counts them."""
        process = self._supervisor
        self._events_seen = 0
        if process is None:
            return {}, iter(())
        # It leaves by itself once the last traced process is gone.
        try:
            process.wait(timeout=_FINISH_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.terminate()
            process.wait(timeout=10)
            self._gaps.append("the trace supervisor had to be stopped")
        try:
            header, events = read_record(self.files.events)
        except (OSError, ValueError) as e:
            error = self._supervisor_error()
            self._gaps.append(f"the trace supervisor left no readable record: {e} {error[-2000:]}")
            return {}, iter(())

        def counted() -> Iterator[list[Any]]:
            try:
                for event in events:
                    self._events_seen += 1
                    yield event
            except ValueError as e:
                self._gaps.append(f"the trace supervisor's record is unreadable past a point: {e}")

        return header, counted()

    def close(self) -> None:
        """Stop whatever still runs (after an error or an interrupt)."""
        if self._pending_group is not None:
            self._pending_group.close()  # the container never reached its gate
            self._pending_group = None
        if self._reads is not None:
            self._reads.stop()
            self._reads = None
        if self._no_route is not None:
            self._no_route.close()
            self._no_route = None
        if self._supervisor is not None:
            if self._supervisor.poll() is None:
                self._supervisor.kill()
                self._supervisor.wait()
            for stream in (self._supervisor.stdout, self._supervisor.stderr):
                if stream is not None:
                    stream.close()
        self.files.socket.unlink(missing_ok=True)


def _open_gate(gate: Path, init_pid: int, timeout_s: float) -> int | None:
    """The gate's write end, once the runner has opened it for reading (until then a
    non-blocking open fails with ENXIO); None when the container ended first."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return os.open(gate, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            if e.errno != errno.ENXIO:
                log.warning("the build's start gate %s: %s", gate, e)
                return None
        if not psutil.pid_exists(init_pid) or time.monotonic() > deadline:
            return None
        time.sleep(0.005)


class NoRouteCounter:
    """The kernel's count of connections and packets refused for want of a route in a
    network namespace (IPv4 ``OutNoRoutes`` plus IPv6 ``Ip6OutNoRoutes``): with only
    ``lo`` there, every attempt to reach another address. The files are opened once;
    an open proc net file keeps its namespace, so they stay readable after the
    container is gone.

    Raises:
        OSError, ValueError: the counters cannot be opened or parsed.
    """

    def __init__(self, pid: int) -> None:
        self._fds = [os.open(f"/proc/{pid}/net/snmp", os.O_RDONLY | os.O_CLOEXEC)]
        with suppress(FileNotFoundError):  # no IPv6 in this kernel: no IPv6 socket either
            self._fds.append(os.open(f"/proc/{pid}/net/snmp6", os.O_RDONLY | os.O_CLOEXEC))
        self._start = self._now()

    def _read(self, fd: int) -> str:
        os.lseek(fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks).decode("ascii")

    def _now(self) -> int:
        total = 0
        lines = self._read(self._fds[0]).splitlines()
        ip = [line.split()[1:] for line in lines if line.startswith("Ip: ")]
        if len(ip) != 2 or "OutNoRoutes" not in ip[0]:
            raise ValueError("no Ip OutNoRoutes in the kernel's snmp counters")
        total += int(ip[1][ip[0].index("OutNoRoutes")])
        if len(self._fds) > 1:
            for line in self._read(self._fds[1]).splitlines():
                fields = line.split()
                if len(fields) == 2 and fields[0] == "Ip6OutNoRoutes":
                    total += int(fields[1])
                    break
            else:
                raise ValueError("no Ip6OutNoRoutes in the kernel's snmp6 counters")
        return total

    def since_start(self) -> int:
        """Refused since the counter was made."""
        return self._now() - self._start

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []


def _interfaces(init_pid: int) -> list[str]:
    """Network interfaces of the build's namespace (evidence that only lo exists)."""
    try:
        lines = Path(f"/proc/{init_pid}/net/dev").read_text().splitlines()[2:]
    except OSError:
        return []
    return sorted(line.split(":", 1)[0].strip() for line in lines if ":" in line)
