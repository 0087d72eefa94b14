"""The real backend: runs a plan in a rootless podman container and watches it from the host."""

from __future__ import annotations

import json
import logging
import os
import select
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

from sandbox.backend import (
    Cancel,
    RunOutcome,
    RunStatus,
    SandboxBackend,
    Tracer,
    TraceRun,
    tree_size,
)
from sandbox.config import SandboxConfig
from sandbox.cri_log import CriLogFollower
from sandbox.errors import BuildCancelled, SandboxError
from sandbox.lifecycle import reap_directories, stamped_prefix
from sandbox.logcap import CappedLog
from sandbox.monitor import ResourceMonitor
from sandbox.observer import BuildObserver
from sandbox.plan import (
    MONITOR_INTERVAL_S,
    TOOLS_DIR,
    BuildPlan,
    Enforcement,
    HostCapabilities,
    Workspace,
    inodes,
)
from sandbox.podman_api import (
    BuildContainer,
    PodmanService,
    PodmanSession,
    kill_stuck_creations,
)
from sandbox.trace.levels import TraceLevel
from sandbox.trace.model import BuildTrace
from sandbox.trace.profile import build_profile
from sandbox.trace.session import TraceFiles, TraceSession, load_base_profile

log = logging.getLogger(__name__)

# The runner's copy of a full build dir may sit a little above the limit (status files).
_HANDBACK_SLACK = 16 * 1024**2
_PING_INTERVAL_S = 5.0
_SERVICE_GONE = (
    "podman could not wait for the build container: the podman service stopped answering "
    "while the build ran; the next hermetic command starts a new one"
)
TRACE_KIND = "hermetic-trace"  # the tracer's socket directories, in the temp dir
# Below this, a scratch file system is as good as full when a build could not hand back.
_SCRATCH_NEARLY_FULL = 4 * 1024**2


class PodmanBackend(SandboxBackend):
    """Builds in podman containers over one API session."""

    def __init__(
        self, session: PodmanSession, *, seccomp_base: Path, tracer: Tracer | None = None
    ) -> None:
        self.session = session
        self.seccomp_base = seccomp_base
        self.tracer = tracer or SeccompTracer(seccomp_base)
        self._local = threading.local()
        self._profiles: dict[tuple[tuple[int, ...], bool], str] = {}  # untraced profiles, rendered

    def _session(self) -> PodmanSession:
        """A session of this thread's own: builds of a check run side by side."""
        if threading.current_thread() is threading.main_thread():
            return self.session
        session: PodmanSession | None = getattr(self._local, "session", None)
        if session is None:
            session = self.session.sibling()
            self._local.session = session
        return session

    @classmethod
    @contextmanager
    def connect(
        cls, config: SandboxConfig, *, tracer: Tracer | None = None
    ) -> Iterator[PodmanBackend]:
        """Connect to podman (starting a private service if none answers) for a while.

        Args:
            tracer: traces builds (default: the seccomp supervisor, :class:`SeccompTracer`).
        """
        service = PodmanService(
            url=config.podman_url,
            podman_bin=config.podman_bin,
            idle_s=config.podman_idle_s,
            request_timeout_s=config.podman_timeout_s,
        )
        with service as session:
            yield cls(session, seccomp_base=config.seccomp_base, tracer=tracer)

    def image_store(self) -> PodmanSession:
        return self._session()

    def host_capabilities(self, image_reference: str) -> HostCapabilities:
        session = self._session()
        if not session.image_exists(image_reference):
            raise SandboxError(
                f"image {image_reference} is not loaded in this user's podman storage; "
                "build it with 'hermetic image build NAME|PATH' (or let 'hermetic build' "
                "build or pull it)"
            )
        return session.host_capabilities()

    def _reap_containers(self) -> list[str]:
        reaped = kill_stuck_creations()  # first: a stuck creation holds podman's lock
        for container_id, name in self._session().orphans():
            log.info("removing build container %s, left by a hermetic that no longer runs", name)
            self._session().remove_container(container_id)
            reaped.append(name)
        sockets = reap_directories(Path(tempfile.gettempdir()), TRACE_KIND)
        return reaped + [str(path) for path in sockets]

    def _untraced_profile(self, personalities: tuple[int, ...], *, memfd: bool) -> str:
        text = self._profiles.get((personalities, memfd))
        if text is None:
            profile = build_profile(
                load_base_profile(self.seccomp_base),
                level=TraceLevel.OFF,
                personalities=personalities,
                memfd=memfd,
            )
            text = self._profiles[(personalities, memfd)] = json.dumps(profile)
        return text

    def run(
        self,
        plan: BuildPlan,
        workspace: Workspace,
        log_path: Path,
        observer: BuildObserver,
        cancel: Cancel | None = None,
    ) -> RunOutcome:
        if cancel is not None and cancel.is_set():
            raise BuildCancelled("the build was cancelled before it started")
        _open_to_the_runner(workspace)
        tracing_build = self.tracer.session(plan, workspace) if plan.trace else nullcontext()
        with tracing_build as tracing:
            if tracing is not None:
                tracing.before_create()
            else:
                profile = self._untraced_profile(plan.personalities, memfd=plan.memfd_allowed)
                workspace.seccomp_profile.write_text(profile)
            container = self._session().create(plan.container)
            try:
                if tracing is not None:
                    tracing.before_start()
                watch = _Watch(plan, workspace, container, log_path, observer, tracing, cancel)
                outcome = watch.run()
            except SandboxError as e:
                reason = tracing.failure() if tracing is not None else None
                if reason is None:
                    raise
                raise SandboxError(f"{e}\n{reason}\n(--trace=off builds without it)") from e
            finally:
                container.remove()
            if tracing is not None:
                outcome = replace(outcome, trace=tracing.finish())
            return outcome


class SeccompTracer(Tracer):
    """Traces a build through its seccomp user notifications (the supervisor)."""

    def __init__(self, seccomp_base: Path) -> None:
        self.seccomp_base = seccomp_base

    @contextmanager
    def session(self, plan: BuildPlan, workspace: Workspace) -> Iterator[TraceRun]:
        assert plan.trace is not None
        # A short directory (unix socket paths are limited to 108 bytes), stamped with
        # its owner so that a later command removes it if this process is killed.
        sockets = Path(tempfile.mkdtemp(prefix=stamped_prefix(TRACE_KIND)))
        session = TraceSession(
            level=plan.trace.level,
            token=plan.trace.token,
            files=TraceFiles(
                profile=workspace.seccomp_profile,
                socket=sockets / "seccomp.sock",
                events=workspace.seccomp_profile.with_name("trace-events.json"),
                gate=workspace.gate,
            ),
            base_profile=load_base_profile(self.seccomp_base),
            build_dir=plan.environment.build_dir,
            initial_paths=_staged_paths(workspace.source, plan.environment.build_dir),
            personalities=plan.personalities,
            limits=plan.trace.limits,
            memfd=plan.memfd_allowed,
        )
        try:
            yield _SupervisedRun(session)
        finally:
            session.close()
            shutil.rmtree(sockets, ignore_errors=True)


class _SupervisedRun(TraceRun):
    def __init__(self, session: TraceSession) -> None:
        self.session = session

    def before_create(self) -> None:
        self.session.before_create()

    def before_start(self) -> None:
        self.session.before_start()

    def after_start(self, init_pid: int, *, timeout_s: float) -> None:
        self.session.after_start(init_pid, timeout_s=timeout_s)

    def failure(self) -> str | None:
        return self.session.failure()

    def finish(self) -> BuildTrace:
        return self.session.finish()


def _open_to_the_runner(workspace: Workspace) -> None:
    """Let the runner, the container's root (a subordinate id here, with no power over
    this user's files), read the source archive and enter the hand-back directory.
    Only this user can reach them: the scratch directory above is private."""
    workspace.source_archive.chmod(0o444)
    workspace.out.chmod(0o755)


# podman's own tmpfs where POSIX shared memory lives (shm_open), writable by the build.
_SHM = "/dev/shm"  # noqa: S108 - the container's own, measured from the host
# Kernel memory a file or directory of a tmpfs costs (its inode and dentry), which no
# memory cgroup v1 charges here: counted per entry, so that a million empty files are
# not free.
_INODE_BYTES = 1024


@dataclass(frozen=True)
class _Tmpfs:
    """The container's tmpfs mounts: what they hold is memory, but no process's RSS."""

    measured: tuple[str, ...]  # the build's own: build dir, /tmp, home, /dev/shm
    fixed: int  # hermetic's own (state), which this user cannot reach: their full size
    max_files: int  # files and directories one of them may hold

    @classmethod
    def of(cls, plan: BuildPlan) -> _Tmpfs:
        measured, fixed = [_SHM], 0
        for mount in plan.container["mounts"]:
            if mount["type"] != "tmpfs":
                continue
            target = mount["destination"]
            if target == TOOLS_DIR or target.startswith(f"{TOOLS_DIR}/"):
                size = next(o for o in mount["options"] if o.startswith("size="))
                fixed += int(size.removeprefix("size="))
            else:
                measured.append(target)
        return cls(tuple(measured), fixed, inodes(plan.limit("disk").value))

    def usage(self, init_pid: int) -> tuple[int, int]:
        """Bytes the mounts hold now (each file also counted at what the kernel keeps of
        it), and the most files and directories one of them holds."""
        used, most_files = self.fixed, 0
        for target in self.measured:
            try:
                stats = os.statvfs(f"/proc/{init_pid}/root{target}")
            except OSError:
                continue
            files = stats.f_files - stats.f_ffree
            used += (stats.f_blocks - stats.f_bfree) * stats.f_frsize + files * _INODE_BYTES
            most_files = max(most_files, files)
        return used, most_files


def _staged_paths(source: Path, build_dir: str) -> set[str]:
    """Paths of the staged tree as the build sees them."""
    paths = set()
    for dirpath, dirnames, filenames in os.walk(source):
        for name in (*dirnames, *filenames):
            relative = (Path(dirpath) / name).relative_to(source).as_posix()
            paths.add(f"{build_dir}/{relative}")
    return paths


class _Watch:
    """Starts a container, pumps its log, and enforces the host-side limits."""

    def __init__(
        self,
        plan: BuildPlan,
        workspace: Workspace,
        container: BuildContainer,
        log_path: Path,
        observer: BuildObserver,
        tracing: TraceRun | None,
        cancel: Cancel | None,
    ) -> None:
        self.plan = plan
        self.tracing = tracing
        self.cancel = cancel
        self.workspace = workspace
        self.container = container
        self.observer = observer
        self.log = CappedLog(log_path, plan.limit("log").value)
        self.monitor = ResourceMonitor()
        self.exit_code: list[int] = []
        self.failure: list[BaseException] = []

    def _emit(self, text: bytes) -> None:
        self.log.write(text)
        self.observer.log_line(text)

    def _wait(self, exited: int | None) -> None:
        """Wait for the container to end: on its init's pidfd when there is one (no
        polling while the build runs), then ask podman for the exit status."""
        try:
            if exited is not None:
                select.select([exited], [], [])  # readable once the process has ended
            self.exit_code.append(self.container.wait(promptly=exited is not None))
        except SandboxError as e:
            self.failure.append(e)
        finally:
            if exited is not None:
                os.close(exited)

    def run(self) -> RunOutcome:
        timeout = self.plan.limit("timeout").value
        memory = self.plan.limit("memory")
        watch_memory = Enforcement.HOST_WATCHDOG in memory.enforced_by
        tmpfs = _Tmpfs.of(self.plan)
        disk = self.plan.limit("disk").value + _HANDBACK_SLACK
        started = time.monotonic()
        status, exceeded = RunStatus.EXITED, None
        try:
            self.container.start()
            follower = CriLogFollower(self.workspace.container_log, self._emit)
            pump = threading.Thread(target=follower.run, name="hermetic-log", daemon=True)
            pump.start()
            init_pid, exited = self.container.init_process()
            waiter = threading.Thread(
                target=self._wait, args=(exited,), name="hermetic-wait", daemon=True
            )
            waiter.start()
            if self.tracing is not None and init_pid is not None:
                self.tracing.after_start(init_pid, timeout_s=self.plan.limit("timeout").value)
            pinged = time.monotonic()
            while True:
                if init_pid is not None:
                    self.monitor.sample(init_pid)
                waiter.join(MONITOR_INTERVAL_S)
                if not waiter.is_alive():
                    break
                elapsed = time.monotonic() - started
                self.observer.tick(elapsed)
                if time.monotonic() - pinged > _PING_INTERVAL_S:
                    # Nothing asks podman while the build runs: notice a service that died.
                    pinged = time.monotonic()
                    if self.container.service_gone():
                        self.failure.append(SandboxError(_SERVICE_GONE))
                        break
                in_tmpfs, files = tmpfs.usage(init_pid) if init_pid is not None else (0, 0)
                if self.cancel is not None and self.cancel.is_set():
                    status = RunStatus.CANCELLED
                elif elapsed > timeout:
                    status = RunStatus.TIMEOUT
                elif watch_memory and self.monitor.current_memory_bytes + in_tmpfs > memory.value:
                    # Without a memory cgroup, files in tmpfs are charged to no one:
                    # count them here, as a cgroup would.
                    status, exceeded = RunStatus.LIMIT_EXCEEDED, "memory"
                elif files > tmpfs.max_files:
                    log.info("a build tmpfs holds %d files (at most %d)", files, tmpfs.max_files)
                    status, exceeded = RunStatus.LIMIT_EXCEEDED, "disk"
                elif tree_size(self.workspace.out, disk) > disk:
                    status, exceeded = RunStatus.LIMIT_EXCEEDED, "disk"
                if status is not RunStatus.EXITED:
                    log.info("stopping build: %s %s", status.value, exceeded or "")
                    self.container.kill()
                    waiter.join(30)
                    break
            follower.finished.set()
            pump.join(30)
        finally:
            summary = self.log.close()
        duration = time.monotonic() - started
        if status is RunStatus.CANCELLED:
            raise BuildCancelled("the build was cancelled; its container was killed")
        if self.failure and status is RunStatus.EXITED:
            raise SandboxError(str(self.failure[0])) from self.failure[0]
        build_exit, tasks, build_dir = SandboxBackend.read_handback(self.workspace)
        if status is RunStatus.EXITED and build_exit is None:
            if duration >= timeout:
                # The container's own deadline (conmon) struck before the host timer saw it.
                status = RunStatus.TIMEOUT
            else:
                raise SandboxError(self._no_handback(summary.path))
        return RunOutcome(
            status=status,
            exit_code=build_exit if status is RunStatus.EXITED else None,
            exceeded=exceeded,
            duration_s=duration,
            build_dir=build_dir if status is RunStatus.EXITED else None,
            log=summary,
            resources=self.monitor.usage(tasks_started=tasks),
        )

    def _no_handback(self, log_path: Path) -> str:
        tail = log_path.read_bytes()[-3000:].decode("utf-8", "replace")
        code = self.exit_code[0] if self.exit_code else "unknown"
        text = (
            f"the build container ended (status {code}) without the runner handing the "
            f"build back; last lines of {log_path}:\n{tail}"
        )
        scratch = self.workspace.out.parent.parent
        try:
            free = shutil.disk_usage(self.workspace.out).free
        except OSError:
            return text
        if free < _SCRATCH_NEARLY_FULL:
            text += (
                f"\nThe scratch space {scratch} is full ({free} bytes free): free some space "
                "there or point HERMETIC_WORK_DIR at a larger file system."
            )
        return text
