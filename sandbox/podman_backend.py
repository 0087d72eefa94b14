"""The real backend: runs a plan in a rootless podman container and watches it from the host."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from sandbox.backend import RunOutcome, RunStatus, SandboxBackend, tree_size
from sandbox.config import SandboxConfig
from sandbox.cri_log import CriLogFollower
from sandbox.errors import SandboxError
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
from sandbox.podman_api import BuildContainer, PodmanService, PodmanSession
from sandbox.trace.levels import TraceLevel
from sandbox.trace.profile import build_profile
from sandbox.trace.session import TraceFiles, TraceSession, load_base_profile

log = logging.getLogger(__name__)

# The runner's copy of a full build dir may sit a little above the limit (status files).
_HANDBACK_SLACK = 16 * 1024**2


class PodmanBackend(SandboxBackend):
    """Builds in podman containers over one API session."""

    def __init__(self, session: PodmanSession, *, seccomp_base: Path) -> None:
        self.session = session
        self.seccomp_base = seccomp_base
        self._local = threading.local()

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
    def connect(cls, config: SandboxConfig) -> Iterator[PodmanBackend]:
        """Connect to podman (starting a private service if none answers) for a while."""
        with PodmanService(url=config.podman_url, podman_bin=config.podman_bin) as session:
            yield cls(session, seccomp_base=config.seccomp_base)

    def host_capabilities(self, image_reference: str) -> HostCapabilities:
        session = self._session()
        if not session.image_exists(image_reference):
            raise SandboxError(
                f"image {image_reference} is not loaded in this user's podman storage; "
                "build it with 'hermetic image build NAME' (for images under images/) "
                "or load it by digest"
            )
        return session.host_capabilities()

    def run(
        self, plan: BuildPlan, workspace: Workspace, log_path: Path, observer: BuildObserver
    ) -> RunOutcome:
        _open_to_the_runner(workspace)
        with self._tracing(plan, workspace) as tracing:
            if tracing is not None:
                tracing.before_create()
            else:
                profile = build_profile(
                    load_base_profile(self.seccomp_base),
                    level=TraceLevel.OFF,
                    personalities=plan.personalities,
                    memfd=plan.memfd_allowed,
                )
                workspace.seccomp_profile.write_text(json.dumps(profile))
            container = self._session().create(plan.container)
            try:
                outcome = _Watch(plan, workspace, container, log_path, observer, tracing).run()
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

    @contextmanager
    def _tracing(self, plan: BuildPlan, workspace: Workspace) -> Iterator[TraceSession | None]:
        if plan.trace is None:
            yield None
            return
        # A short directory: unix socket paths are limited to 108 bytes.
        sockets = Path(tempfile.mkdtemp(prefix="hermetic-trace-"))
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
            yield session
        finally:
            session.close()
            shutil.rmtree(sockets, ignore_errors=True)


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
        tracing: TraceSession | None,
    ) -> None:
        self.plan = plan
        self.tracing = tracing
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

    def _wait(self) -> None:
        try:
            self.exit_code.append(self.container.wait())
        except SandboxError as e:
            self.failure.append(e)

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
            waiter = threading.Thread(target=self._wait, name="hermetic-wait", daemon=True)
            pump.start()
            waiter.start()
            init_pid = self.container.init_pid()
            if self.tracing is not None and init_pid is not None:
                self.tracing.after_start(init_pid, timeout_s=self.plan.limit("timeout").value)
            while True:
                if init_pid is not None:
                    self.monitor.sample(init_pid)
                waiter.join(MONITOR_INTERVAL_S)
                if not waiter.is_alive():
                    break
                elapsed = time.monotonic() - started
                self.observer.tick(elapsed)
                in_tmpfs, files = tmpfs.usage(init_pid) if init_pid is not None else (0, 0)
                if elapsed > timeout:
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
        if self.failure and status is RunStatus.EXITED:
            raise SandboxError(str(self.failure[0])) from self.failure[0]
        build_exit, tasks, build_dir = SandboxBackend.read_handback(self.workspace)
        if status is RunStatus.EXITED and build_exit is None:
            tail = summary.path.read_bytes()[-3000:].decode("utf-8", "replace")
            code = self.exit_code[0] if self.exit_code else "unknown"
            raise SandboxError(
                f"the build container ended (status {code}) without the runner handing the "
                f"build back; last lines of {summary.path}:\n{tail}"
            )
        return RunOutcome(
            status=status,
            exit_code=build_exit if status is RunStatus.EXITED else None,
            exceeded=exceeded,
            duration_s=duration,
            build_dir=build_dir if status is RunStatus.EXITED else None,
            log=summary,
            resources=self.monitor.usage(tasks_started=tasks),
        )
