"""A scripted sandbox backend for tests and downstream users: no podman, no isolation.

It records every plan it is asked to run. Its "build" copies the staged source into
the hand-back directory and lets a script change it, like a build would.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sandbox.backend import (
    HANDBACK_DIR,
    STATUS_FILE,
    TASKS_FILE,
    Cancel,
    RunOutcome,
    RunStatus,
    SandboxBackend,
)
from sandbox.config import SandboxConfig
from sandbox.errors import BuildCancelled
from sandbox.logcap import CappedLog
from sandbox.monitor import ResourceUsage
from sandbox.observer import BuildObserver
from sandbox.plan import BuildPlan, HostCapabilities, Workspace

CGROUP_V1_ROOTLESS = HostCapabilities(
    rootless=True,
    cgroup_version=1,
    cgroup_controllers=frozenset(),
    nofile_hard=20000,
    nproc_hard=96365,
)


@dataclass(frozen=True, kw_only=True)
class FakeRun:
    """What a scripted build does: its output, exit code and how it ended."""

    log: bytes = b""
    exit_code: int = 0
    status: RunStatus = RunStatus.EXITED
    exceeded: str | None = None
    # Runs until cancelled, like a long build (at most this many seconds, then it ends).
    hold_s: float = 0.0


Script = Callable[[Path, BuildPlan], FakeRun]


def _succeed(build_dir: Path, plan: BuildPlan) -> FakeRun:
    return FakeRun(log=b"fake build\n")


@dataclass
class FakeBackend(SandboxBackend):
    """Runs nothing; records plans; returns what ``script`` says."""

    script: Script = _succeed
    capabilities: HostCapabilities = CGROUP_V1_ROOTLESS
    plans: list[BuildPlan] = field(default_factory=list)
    images_asked: list[str] = field(default_factory=list)
    cancelled: list[BuildPlan] = field(default_factory=list)

    @classmethod
    @contextmanager
    def connect(cls, config: SandboxConfig) -> Iterator[FakeBackend]:
        yield cls()

    def host_capabilities(self, image_reference: str) -> HostCapabilities:
        self.images_asked.append(image_reference)
        return self.capabilities

    def run(
        self,
        plan: BuildPlan,
        workspace: Workspace,
        log_path: Path,
        observer: BuildObserver,
        cancel: Cancel | None = None,
    ) -> RunOutcome:
        self.plans.append(plan)
        build_dir = workspace.out / HANDBACK_DIR
        shutil.copytree(workspace.source, build_dir, symlinks=True)
        scripted = self.script(build_dir, plan)
        if cancel is not None and cancel.wait(scripted.hold_s):
            self.cancelled.append(plan)
            raise BuildCancelled("the build was cancelled")
        log = CappedLog(log_path, plan.limit("log").value)
        log.write(scripted.log)
        for line in scripted.log.splitlines(keepends=True):
            observer.log_line(line)
        if scripted.status is RunStatus.EXITED:
            (workspace.out / STATUS_FILE).write_text(f"{scripted.exit_code}\n")
            (workspace.out / TASKS_FILE).write_text("1\n")
        else:
            shutil.rmtree(build_dir)
        exit_code, tasks, handed_back = SandboxBackend.read_handback(workspace)
        return RunOutcome(
            status=scripted.status,
            exit_code=exit_code,
            exceeded=scripted.exceeded,
            duration_s=0.0,
            build_dir=handed_back,
            log=log.close(),
            resources=ResourceUsage(tasks_started=tasks),
        )
