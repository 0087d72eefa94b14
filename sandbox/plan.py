"""The pure planner: spec + resolved inputs + host facts -> the exact container to create.

Nothing here touches podman or the filesystem, so every plan has a golden test.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from sandbox.environment import NORMALIZED, BuildEnvironment
from sandbox.images import ResolvedImage
from sandbox.spec import Spec
from sandbox.trace.levels import TraceLevel
from sandbox.trace.limits import DEFAULT_TRACE_LIMITS, TraceLimits
from sandbox.units import format_size

# hermetic's own machinery inside the container, on a tmpfs that only the container's
# root (the runner) may enter: the build's uid cannot reach anything below it.
TOOLS_DIR = "/.hermetic"
TOOLS_MODE = "0700"
STATE_DIR = "/.hermetic/state"  # the end-of-build sentinel, on a tmpfs fanotify watches
STATE_MODE = "0700"
STATE_SIZE = 1024**2
GATE = "/.hermetic/gate"  # a FIFO made on the host: the start gate, and the sentinel's name
# Outside TOOLS_DIR: every process of the build loads it.
FAKETIME = "/.faketime/libfaketime.so.1"
SETARCH = "/usr/bin/setarch"  # util-linux, in every Debian image
MONITOR_INTERVAL_S = 0.5
# The container's own deadline (conmon kills it) trails hermetic's timer by this much, so
# it strikes only when hermetic is gone (killed, or its host lost).
CONTAINER_DEADLINE_MARGIN_S = 15
_LOG_STORAGE_FLOOR = 16 * 1024**2
_NOFILE = 65536
_TOOLS_SIZE = 64 * 1024  # mount points only
# Files and directories a build tmpfs may hold: one per 16 KiB of the disk limit. Each
# costs kernel memory no cgroup v1 charges, a host inode and a traced open or two when
# it is handed back, which bytes alone do not bound (empty files cost none). podman
# takes no nr_inodes= for a tmpfs: the host watchdog counts them.
BYTES_PER_INODE = 16 * 1024
_MIN_INODES = 4096
# SysV shared memory nobody has attached is freed at once: a detached segment would
# hold memory outside every process's RSS and every tmpfs the watchdog measures.
# Every port may be bound, as in Docker: the trace supervisor makes the build's binds
# itself (with its own privileges there), so no port may need a privilege to bind.
SYSCTLS = {"kernel.shm_rmid_forced": "1", "net.ipv4.ip_unprivileged_port_start": "0"}
# What the runner (the container's root) needs, and nothing more: to hand the build
# dir and home to the build user, to become that user, and to stop the build. All of
# them are lost at the change of uid (no_new_privileges keeps them from coming back).
RUNNER_CAPABILITIES = ("CAP_CHOWN", "CAP_KILL", "CAP_SETGID", "CAP_SETUID")


class Enforcement(StrEnum):
    """How a limit is made to hold."""

    HOST_TIMER = "host-timer"
    CONTAINER_DEADLINE = "container-deadline"
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

    source: Path  # the staged tree (hashed on the host)
    source_archive: Path  # the same tree as a tar, in the order the build should see it
    out: Path
    runner: Path
    busybox: Path
    container_log: Path  # conmon writes the build's output here (CRI format)
    seccomp_profile: Path  # written only when the build needs its own profile
    faketime: Path  # libfaketime, mounted only when a check shifts the clock

    @property
    def gate(self) -> Path:
        """The start gate of a traced build: a FIFO beside the hand-back dir."""
        return self.out.parent / "gate"


@dataclass(frozen=True, kw_only=True)
class TraceSetup:
    """Tracing of one build: the level, its caps, and the name of the runner's
    end-of-build sentinel (secret: it reaches the runner through the gate, never
    through anything the build can read)."""

    level: TraceLevel
    token: str
    limits: TraceLimits = DEFAULT_TRACE_LIMITS


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
    environment: BuildEnvironment = NORMALIZED

    @property
    def memfd_allowed(self) -> bool:
        """Whether the build may create memfds: only where a memory cgroup charges their
        pages (the host watchdog cannot see a memfd nobody maps)."""
        return Enforcement.CGROUP in self.limit("memory").enforced_by

    @property
    def personalities(self) -> tuple[int, ...]:
        """Personalities the seccomp profile must allow beyond podman's defaults."""
        value = self.environment.personality
        return () if value is None else (value,)

    def limit(self, name: str) -> LimitPlan:
        return next(limit for limit in self.limits if limit.name == name)


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
            enforced_by=(Enforcement.HOST_TIMER, Enforcement.CONTAINER_DEADLINE),
            detail="the container is killed (SIGKILL to its whole pid namespace) when it runs "
            f"out; conmon kills it {CONTAINER_DEADLINE_MARGIN_S}s later by itself if hermetic "
            "is gone",
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
                f"is killed when its processes' total RSS plus what its tmpfs mounts hold (build "
                f"dir, /tmp, home, /dev/shm, hermetic's state, and the kernel's share of their "
                f"files), sampled every {MONITOR_INTERVAL_S}s on the host, exceeds the limit; "
                f"memfd_create is refused; no cgroup memory controller here ({missing})",
            )
        )
    plans.append(
        LimitPlan(
            name="disk",
            value=limits.disk_bytes,
            unit="bytes",
            enforced_by=(Enforcement.TMPFS_SIZE, Enforcement.RLIMIT, Enforcement.HOST_WATCHDOG),
            detail="the build dir, /tmp and the home dir are each a tmpfs of this size; "
            "RLIMIT_FSIZE caps a single file; the host kills the build when one of them holds "
            f"more than {inodes(limits.disk_bytes)} files and directories (sampled every "
            f"{MONITOR_INTERVAL_S}s), or when the hand-back directory grows past the limit",
        )
    )
    return tuple(plans)


def inodes(disk_bytes: int) -> int:
    """Files and directories each build tmpfs may hold, for a disk limit."""
    return max(disk_bytes // BYTES_PER_INODE, _MIN_INODES)


def _tmpfs(target: str, size: int, mode: str, *, exec_: bool = True) -> dict[str, Any]:
    # Owned by the container's root; the runner hands the build's own ones to the
    # build user. exec: builds run what they compile (configure tests, test suites).
    return {
        "destination": target,
        "type": "tmpfs",
        "source": "tmpfs",
        "options": [
            f"size={size}",
            f"mode={mode}",
            "exec" if exec_ else "noexec",
            "nosuid",
            "nodev",
        ],
    }


def _bind(source: Path, target: str, *, read_only: bool) -> dict[str, Any]:
    return {
        "destination": target,
        "type": "bind",
        "source": str(source),
        "options": ["rbind", "ro" if read_only else "rw", "nosuid", "nodev"],
    }


def _runner_command(
    spec: Spec,
    environment: BuildEnvironment,
    env: tuple[tuple[str, str], ...],
    trace: TraceSetup | None,
) -> list[str]:
    # Everything here is visible to the build (/proc/PID/cmdline): never the token.
    env_args = [f"{key}={value}" for key, value in env]
    wrappers: list[str] = []
    if environment.personality is not None:
        wrappers += [SETARCH, "linux64"]
        wrappers += [] if environment.aslr else ["--addr-no-randomize"]
        wrappers += ["--uname-2.6"] if environment.uname26 else []
    return [
        f"{TOOLS_DIR}/busybox",
        "sh",
        f"{TOOLS_DIR}/runner.sh",
        environment.build_dir,
        environment.home,
        str(environment.uid),
        str(environment.gid),
        "traced" if trace else "-",
        environment.cpus if environment.cpus is not None else "-",
        str(len(env_args)),
        *env_args,
        str(len(wrappers)),
        *wrappers,
        *spec.command,
    ]


def plan_build(
    *,
    spec: Spec,
    image: ResolvedImage,
    source_date_epoch: int,
    workspace: Workspace,
    host: HostCapabilities,
    name: str,
    trace: TraceSetup | None = None,
    environment: BuildEnvironment = NORMALIZED,
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
        environment: the build's surroundings (normalized unless a check varies them).

    Returns:
        The plan, including the exact libpod create request.
    """
    env = environment.variables(source_date_epoch=source_date_epoch, spec_env=spec.env)
    if environment.clock_offset is not None:
        env = tuple(
            sorted(
                {
                    **dict(env),
                    "LD_PRELOAD": FAKETIME,
                    "FAKETIME": environment.clock_offset,
                    "FAKETIME_DONT_FAKE_MONOTONIC": "1",
                }.items()
            )
        )
    limits = plan_limits(spec, host)
    by_name = {limit.name: limit for limit in limits}
    disk = by_name["disk"].value
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
    uid, gid = environment.uid, environment.gid
    container: dict[str, Any] = {
        "name": name,
        "image": image.reference,
        "command": _runner_command(spec, environment, env, trace),
        "env": {},
        "env_host": False,
        "httpproxy": False,  # podman would otherwise copy the host's proxy variables in
        "hostname": environment.hostname,
        # The runner is the container's root; it runs the build as uid:gid (see runner.sh).
        "user": "0:0",
        "work_dir": environment.build_dir,
        "umask": environment.umask,
        "netns": {"nsmode": "none"},
        "read_only_filesystem": True,
        "read_write_tmpfs": False,
        "cap_drop": ["ALL"],
        "cap_add": list(RUNNER_CAPABILITIES),
        "no_new_privileges": True,
        "init": True,
        # Always hermetic's profile: podman's default, less nested namespaces, mounts,
        # io_uring and other architectures' system calls (sandbox/trace/profile.py).
        "seccomp_profile_path": str(workspace.seccomp_profile),
        "sysctl": dict(SYSCTLS),
        "mounts": [
            _tmpfs(environment.build_dir, disk, "0755"),
            _tmpfs("/tmp", disk, "1777"),  # noqa: S108 - the container's own /tmp
            _tmpfs(environment.home, disk, "0700"),
            _tmpfs(TOOLS_DIR, _TOOLS_SIZE, TOOLS_MODE, exec_=False),
            _bind(workspace.source_archive, f"{TOOLS_DIR}/src.tar", read_only=True),
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
        # conmon's own deadline: it holds even when hermetic is killed
        "timeout": by_name["timeout"].value + CONTAINER_DEADLINE_MARGIN_S,
    }
    if environment.clock_offset is not None:
        container["mounts"].append(_bind(workspace.faketime, FAKETIME, read_only=True))
    if trace is not None:
        container["mounts"].append(_tmpfs(STATE_DIR, STATE_SIZE, STATE_MODE, exec_=False))
        container["mounts"].append(_bind(workspace.gate, GATE, read_only=True))
    if host.rootless:
        # The build user is the invoking user outside, so the hand-back directory
        # stays readable and removable without podman unshare; the runner (root inside)
        # is a subordinate id outside, which the build's uid cannot signal or trace.
        container["userns"] = {"nsmode": "keep-id", "value": f"uid={uid},gid={gid}"}
    return BuildPlan(
        spec=spec,
        image=image,
        source_date_epoch=source_date_epoch,
        env=env,
        limits=limits,
        container=container,
        trace=trace,
        environment=environment,
    )
