"""A scripted sandbox backend for tests and downstream users: no podman, no isolation.

It records every plan it is asked to run. Its "build" copies the staged source into
the hand-back directory and lets a script change it, like a build would.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

from sandbox.backend import (
    HANDBACK_DIR,
    STATUS_FILE,
    TASKS_FILE,
    Cancel,
    RunOutcome,
    RunStatus,
    SandboxBackend,
    Tracer,
    TraceRun,
)
from sandbox.config import SandboxConfig
from sandbox.errors import BuildCancelled
from sandbox.logcap import CappedLog
from sandbox.monitor import ResourceUsage
from sandbox.observer import BuildObserver
from sandbox.plan import BuildPlan, HostCapabilities, Workspace
from sandbox.trace.model import BuildTrace

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


TraceScript = Callable[[Path, BuildPlan], BuildTrace]
"""What a scripted tracer saw of a build: from its handed-back build directory and plan."""


class ScriptedTracer(Tracer):
    """Gives the fake backend's traced builds the trace ``script`` makes of them."""

    def __init__(self, script: TraceScript) -> None:
        self.script = script

    @contextmanager
    def session(self, plan: BuildPlan, workspace: Workspace) -> Iterator[TraceRun]:
        yield _ScriptedRun(self.script, plan, workspace.out / HANDBACK_DIR)


@dataclass(frozen=True)
class _ScriptedRun(TraceRun):
    script: TraceScript
    plan: BuildPlan
    build_dir: Path

    def finish(self) -> BuildTrace:
        return self.script(self.build_dir, self.plan)


@dataclass
class FakeBackend(SandboxBackend):
    """Runs nothing; records plans; returns what ``script`` says, and for a traced build
    what ``tracer`` saw (no tracer: no trace)."""

    script: Script = _succeed
    tracer: Tracer | None = None
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
        traced = self.tracer is not None and plan.trace is not None
        with (
            self.tracer.session(plan, workspace)
            if traced and self.tracer
            else nullcontext() as tracing
        ):
            outcome = self._run(plan, workspace, log_path, observer, cancel)
            return replace(outcome, trace=tracing.finish()) if tracing is not None else outcome

    def _run(
        self,
        plan: BuildPlan,
        workspace: Workspace,
        log_path: Path,
        observer: BuildObserver,
        cancel: Cancel | None,
    ) -> RunOutcome:
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
