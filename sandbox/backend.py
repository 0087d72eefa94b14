"""The sandbox backend interface: run one planned build and say what happened, and the
tracer interface a backend is given. Implementations (``podman_backend``, ``fake``) import
this module; the registry that names them is the package's (``sandbox.connect_backend``)."""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from sandbox.errors import SandboxError
from sandbox.lifecycle import reap_directories
from sandbox.logcap import LogSummary
from sandbox.monitor import ResourceUsage
from sandbox.observer import BuildObserver
from sandbox.plan import BuildPlan, HostCapabilities, Workspace
from sandbox.trace.model import BuildTrace

if TYPE_CHECKING:
    from sandbox.image_build import ImageStore

STATUS_FILE = "status"
TASKS_FILE = "tasks"
HANDBACK_DIR = "build"
SCRATCH_KIND = "build"  # scratch directories are named build-<owner stamp>-<random>

Cancel = threading.Event
"""Set to stop a build in flight (its container is killed, the build raises BuildCancelled)."""


class RunStatus(StrEnum):
    """How the container ended."""

    EXITED = "exited"  # the build command finished (with any exit code)
    TIMEOUT = "timeout"
    LIMIT_EXCEEDED = "limit_exceeded"
    CANCELLED = "cancelled"  # stopped on request; never reported as a build's result


@dataclass(frozen=True, kw_only=True)
class RunOutcome:
    """The result of running one plan."""

    status: RunStatus
    exit_code: int | None
    exceeded: str | None  # which limit, for LIMIT_EXCEEDED
    duration_s: float
    build_dir: Path | None  # the handed-back build directory, when the build finished
    log: LogSummary
    resources: ResourceUsage
    trace: BuildTrace | None = None


class TraceRun(ABC):
    """One build's tracer while the build runs."""

    def before_create(self) -> None:  # noqa: B027 - an optional hook
        """Get ready before the container is created (e.g. write its seccomp profile)."""

    def before_start(self) -> None:  # noqa: B027 - an optional hook
        """Ready to trace: called after the container is created, before it starts."""

    def after_start(self, init_pid: int, *, timeout_s: float) -> None:  # noqa: B027 - optional
        """The build's container started with ``init_pid`` (host pid) as its init."""

    def failure(self) -> str | None:
        """Why the tracer failed, when a sandbox error may be its doing (None: it did not)."""
        return None

    @abstractmethod
    def finish(self) -> BuildTrace:
        """The trace of the build, after it ended."""


class Tracer(ABC):
    """Traces builds for a backend (injected: the podman backend's seccomp supervisor, or
    a scripted tracer that gives the fake backend traces)."""

    @abstractmethod
    def session(self, plan: BuildPlan, workspace: Workspace) -> AbstractContextManager[TraceRun]:
        """Trace one build (``plan.trace`` is set) for the duration of a ``with`` block."""


class SandboxBackend(ABC):
    """Runs planned builds. Implementations: podman (real) and a scripted fake."""

    @abstractmethod
    def host_capabilities(self, image_reference: str) -> HostCapabilities:
        """What the host can enforce; checks that the image is present.

        Raises:
            SandboxError: the backend is unusable or the image is missing.
        """

    def image_store(self) -> ImageStore | None:
        """Where images can be built or pulled into; None when the backend has no images."""
        return None

    @abstractmethod
    def run(
        self,
        plan: BuildPlan,
        workspace: Workspace,
        log_path: Path,
        observer: BuildObserver,
        cancel: Cancel | None = None,
    ) -> RunOutcome:
        """Run the plan to completion, timeout or limit, or until ``cancel`` is set.

        Raises:
            SandboxError: the sandbox itself failed (not the build).
            BuildCancelled: ``cancel`` was set; nothing of the build is left.
        """

    def reap_orphans(self, work_dir: Path) -> list[str]:
        """Remove what hermetic processes that no longer run left behind: their build
        containers and their scratch directories under ``work_dir``.

        Only what carries an owner stamp of a dead process is touched, so this is safe
        while other hermetic commands of the same user build.

        Returns:
            The names of what was removed.

        Raises:
            SandboxError: the backend could not list its containers.
        """
        reaped = self._reap_containers()
        reaped += [str(path) for path in reap_directories(work_dir, SCRATCH_KIND)]
        return reaped

    def _reap_containers(self) -> list[str]:
        """Remove containers of dead owners (backends with containers override this)."""
        return []

    @staticmethod
    def read_handback(workspace: Workspace) -> tuple[int | None, int, Path | None]:
        """Read what the runner handed back: (build exit code, tasks started, build dir).

        The exit code is None when the runner never finished (killed or failed).
        """
        status_text = _read_number(workspace.out / STATUS_FILE)
        if status_text is None:
            return None, 0, None
        if not status_text.lstrip("-").isdigit():
            raise SandboxError(f"the runner's status file in {workspace.out} is not a number")
        tasks_text = _read_number(workspace.out / TASKS_FILE) or ""
        tasks = int(tasks_text) if tasks_text.isdigit() else 0
        build_dir = workspace.out / HANDBACK_DIR
        if build_dir.is_symlink() or not build_dir.is_dir():
            raise SandboxError(f"the runner handed back no build directory in {workspace.out}")
        return int(status_text), tasks, build_dir


def _read_number(path: Path) -> str | None:
    """A few bytes of a hand-back file, never following a link the build may have planted."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as stream:
        return stream.read(32).decode("ascii", "replace").strip()


def tree_size(root: Path, limit: int) -> int:
    """Bytes under ``root``, counting only until ``limit`` is passed (cheap guard)."""
    total = 0
    stack = [root]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                    else:
                        total += entry.stat(follow_symlinks=False).st_size
                    if total > limit:
                        return total
        except OSError:
            continue  # the runner is rewriting the directory
    return total
