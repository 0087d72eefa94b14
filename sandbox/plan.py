"""The pure planner: spec + resolved inputs + host facts -> the exact container to create.

Nothing here touches podman or the filesystem, so every plan has a golden test.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from sandbox.images import ResolvedImage
from sandbox.spec import Spec
from sandbox.trace.levels import TraceLevel
from sandbox.units import format_size

BUILD_DIR = "/build"
TOOLS_DIR = "/.hermetic"
STATE_DIR = "/.hermetic/state"  # the runner's gate and end-of-build sentinel
HOSTNAME = "hermetic"
BUILD_USER = "builder"
BUILD_UID = 1000
BUILD_GID = 1000
BUILD_HOME = "/home/builder"
# A user's PATH: programs are found at the first or second try, which matters when
# every failed exec of a PATH search is a traced call.
BUILD_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
MONITOR_INTERVAL_S = 0.5
_LOG_STORAGE_FLOOR = 16 * 1024**2
_NOFILE = 65536


class Enforcement(StrEnum):
    """How a limit is made to hold."""

    HOST_TIMER = "host-timer"
    LOG_CAP = "log-cap"
    CGROUP = "cgroup"
    RLIMIT = "rlimit"
    HOST_WATCHDOG = "host-watchdog"
    TMPFS_SIZE = "tmpfs-size"


@dataclass(frozen=True, kw_only=True)
class HostCapabilities:
    """What the host can enforce, as podman and the kernel report it."""

    rootless: bool
    cgroup_version: int
    cgroup_controllers: frozenset[str]
    nofile_hard: int
    nproc_hard: int


@dataclass(frozen=True, kw_only=True)
class Workspace:
    """Host paths of one build: the staged source, the hand-back dir, the tools, the log."""

    source: Path
    out: Path
    runner: Path
    busybox: Path
    container_log: Path  # conmon writes the build's output here (CRI format)
    seccomp_profile: Path  # the traced build's profile (written only when tracing)


@dataclass(frozen=True, kw_only=True)
class TraceSetup:
    """What the container needs for tracing: the profile, and the runner's sentinel."""

    level: TraceLevel
    token: str


@dataclass(frozen=True, kw_only=True)
class LimitPlan:
    """One limit, its value and how it is enforced on this host."""

    name: str
    value: int
    unit: str
    enforced_by: tuple[Enforcement, ...]
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "unit": self.unit,
            "enforced_by": [e.value for e in self.enforced_by],
            "detail": self.detail,
        }


@dataclass(frozen=True, kw_only=True)
class BuildPlan:
    """Everything needed to run one build, as data."""

    spec: Spec
    image: ResolvedImage
    source_date_epoch: int
    env: tuple[tuple[str, str], ...]
    limits: tuple[LimitPlan, ...]
    container: dict[str, Any]  # the libpod create request, sent as is
    trace: TraceSetup | None = None

    def limit(self, name: str) -> LimitPlan:
        return next(limit for limit in self.limits if limit.name == name)


def normalized_env(spec: Spec, source_date_epoch: int) -> tuple[tuple[str, str], ...]:
    """The build's whole environment: fixed values, then the spec's additions."""
    env = {
        "HOME": BUILD_HOME,
        "LANG": "C.UTF-8",
        "LOGNAME": BUILD_USER,
        "PATH": BUILD_PATH,
        "SOURCE_DATE_EPOCH": str(source_date_epoch),
        "TZ": "UTC",
        "USER": BUILD_USER,
    }
    env.update(spec.env)
    return tuple(sorted(env.items()))


def _by_cgroup(name: str, value: int, unit: str) -> LimitPlan:
    return LimitPlan(
        name=name,
        value=value,
        unit=unit,
        enforced_by=(Enforcement.CGROUP,),
        detail=f"cgroup {name} controller",
    )


def plan_limits(spec: Spec, host: HostCapabilities) -> tuple[LimitPlan, ...]:
    """Decide how each limit holds here; a limit the host cannot enforce gets a fallback."""
    limits = spec.limits
    plans = [
        LimitPlan(
            name="timeout",
            value=limits.timeout_s,
            unit="s",
            enforced_by=(Enforcement.HOST_TIMER,),
            detail="the container is killed (SIGKILL to its whole pid namespace) when it runs out",
        ),
        LimitPlan(
            name="log",
            value=limits.log_bytes,
            unit="bytes",
            enforced_by=(Enforcement.LOG_CAP,),
            detail="build.log keeps the first bytes and ends with a truncation marker; "
            "podman's own copy is capped at twice the limit (at least 16MiB)",
        ),
    ]
    missing = f"cgroup v{host.cgroup_version}{', rootless' if host.rootless else ''}"
    if "pids" in host.cgroup_controllers:
        plans.append(_by_cgroup("pids", limits.pids, "processes"))
    else:
        pids = min(limits.pids, host.nproc_hard)
        clamp = (
            f" (lowered from {limits.pids}, the host's hard limit)" if pids < limits.pids else ""
        )
        plans.append(
            LimitPlan(
                name="pids",
                value=pids,
                unit="processes",
                enforced_by=(Enforcement.RLIMIT,),
                detail=f"RLIMIT_NPROC={pids}{clamp} for the build user in the container's own user "
                f"namespace; no cgroup pids controller here ({missing})",
            )
        )
    if "memory" in host.cgroup_controllers:
        plans.append(_by_cgroup("memory", limits.memory_bytes, "bytes"))
    else:
        plans.append(
            LimitPlan(
                name="memory",
                value=limits.memory_bytes,
                unit="bytes",
                enforced_by=(Enforcement.RLIMIT, Enforcement.HOST_WATCHDOG),
                detail=f"RLIMIT_DATA={format_size(limits.memory_bytes)} per process, and the build "
                f"is killed when its processes' total RSS, sampled every {MONITOR_INTERVAL_S}s "
                f"on the host, exceeds the limit; no cgroup memory controller here ({missing})",
            )
        )
    plans.append(
        LimitPlan(
            name="disk",
            value=limits.disk_bytes,
            unit="bytes",
            enforced_by=(Enforcement.TMPFS_SIZE, Enforcement.RLIMIT, Enforcement.HOST_WATCHDOG),
            detail=f"{BUILD_DIR}, /tmp and {BUILD_HOME} are each a tmpfs of this size; "
            "RLIMIT_FSIZE caps a single file; the host kills the build when the hand-back "
            "directory grows past the limit",
        )
    )
    return tuple(plans)


def _tmpfs(target: str, size: int, mode: str) -> dict[str, Any]:
    # exec: builds run what they compile (configure tests, test suites).
    return {
        "destination": target,
        "type": "tmpfs",
        "source": "tmpfs",
        "options": [f"size={size}", f"mode={mode}", "U", "exec", "nosuid", "nodev"],
    }


def _bind(source: Path, target: str, *, read_only: bool) -> dict[str, Any]:
    return {
        "destination": target,
        "type": "bind",
        "source": str(source),
        "options": ["rbind", "ro" if read_only else "rw", "nosuid", "nodev"],
    }


def plan_build(
    *,
    spec: Spec,
    image: ResolvedImage,
    source_date_epoch: int,
    workspace: Workspace,
    host: HostCapabilities,
    name: str,
    trace: TraceSetup | None = None,
) -> BuildPlan:
    """Plan one build (pure).

    Args:
        spec: the validated spec.
        image: the image, pinned by digest.
        source_date_epoch: the value the build sees.
        workspace: host paths prepared for this build.
        host: what this host can enforce.
        name: the container name.
        trace: tracing to set up, or None for an untraced build.

    Returns:
        The plan, including the exact libpod create request.
    """
    env = normalized_env(spec, source_date_epoch)
    limits = plan_limits(spec, host)
    by_name = {limit.name: limit for limit in limits}
    disk = by_name["disk"].value
    env_args = [f"{key}={value}" for key, value in env]
    command = [
        f"{TOOLS_DIR}/busybox",
        "sh",
        f"{TOOLS_DIR}/runner.sh",
        trace.token if trace else "-",
        str(len(env_args)),
        *env_args,
        *spec.command,
    ]
    rlimits = [
        {
            "type": "nofile",
            "soft": min(_NOFILE, host.nofile_hard),
            "hard": min(_NOFILE, host.nofile_hard),
        },
        {"type": "core", "soft": 0, "hard": 0},
        {"type": "fsize", "soft": disk, "hard": disk},
    ]
    resources: dict[str, Any] = {}
    pids = by_name["pids"]
    if Enforcement.CGROUP in pids.enforced_by:
        resources["pids"] = {"limit": pids.value}
    else:
        rlimits.append({"type": "nproc", "soft": pids.value, "hard": pids.value})
    memory = by_name["memory"]
    if Enforcement.CGROUP in memory.enforced_by:
        resources["memory"] = {"limit": memory.value, "swap": memory.value}
    else:
        rlimits.append({"type": "data", "soft": memory.value, "hard": memory.value})
    container: dict[str, Any] = {
        "name": name,
        "image": image.reference,
        "command": command,
        "env": {},
        "env_host": False,
        "httpproxy": False,  # podman would otherwise copy the host's proxy variables in
        "hostname": HOSTNAME,
        "user": f"{BUILD_UID}:{BUILD_GID}",
        "work_dir": BUILD_DIR,
        "umask": "0022",
        "netns": {"nsmode": "none"},
        "read_only_filesystem": True,
        "read_write_tmpfs": False,
        "cap_drop": ["ALL"],
        "no_new_privileges": True,
        "init": True,
        "mounts": [
            _tmpfs(BUILD_DIR, disk, "0755"),
            _tmpfs("/tmp", disk, "1777"),  # noqa: S108 - the container's own /tmp
            _tmpfs(BUILD_HOME, disk, "0700"),
            _bind(workspace.source, f"{TOOLS_DIR}/src", read_only=True),
            _bind(workspace.out, f"{TOOLS_DIR}/out", read_only=False),
            _bind(workspace.runner, f"{TOOLS_DIR}/runner.sh", read_only=True),
            _bind(workspace.busybox, f"{TOOLS_DIR}/busybox", read_only=True),
        ],
        "r_limits": rlimits,
        "resource_limits": resources,
        "log_configuration": {
            "driver": "k8s-file",
            # in our scratch dir: podman's own log dir belongs to the container's root
            "path": str(workspace.container_log),
            # podman's own copy (k8s-file, with per-line prefixes) stays bounded on disk
            "size": max(2 * by_name["log"].value, _LOG_STORAGE_FLOOR),
        },
        "labels": {"dev.hermetic.build": name},
    }
    if trace is not None:
        # Syscalls hermetic observes go to its supervisor first; nothing else changes.
        container["seccomp_profile_path"] = str(workspace.seccomp_profile)
        container["mounts"].append(_tmpfs(STATE_DIR, 1024**2, "0700"))
    if host.rootless:
        # The build user is the invoking user outside, so the hand-back directory
        # stays readable and removable without podman unshare.
        container["userns"] = {"nsmode": "keep-id", "value": f"uid={BUILD_UID},gid={BUILD_GID}"}
    return BuildPlan(
        spec=spec,
        image=image,
        source_date_epoch=source_date_epoch,
        env=env,
        limits=limits,
        container=container,
        trace=trace,
    )
