"""The planner is pure: golden plans, and the limit fallbacks for each kind of host."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sandbox.digests import Sha256
from sandbox.fake import CGROUP_V1_ROOTLESS
from sandbox.images import ResolvedImage
from sandbox.plan import (
    BuildPlan,
    Enforcement,
    HostCapabilities,
    TraceSetup,
    Workspace,
    inodes,
    plan_build,
)
from sandbox.spec import Spec
from sandbox.trace.levels import TraceLevel

GOLDEN = Path(__file__).parent / "golden"
SPEC = """
[build]
image = "debian-bookworm"
command = ["sh", "-c", "./configure && make"]
outputs = ["hello"]
env = { CFLAGS = "-O2" }
source_date_epoch = 1700000000

[limits]
timeout = "30m"
memory = "2GiB"
pids = 500
disk = "1GiB"
log = "8MiB"
"""
IMAGE = ResolvedImage(
    reference="localhost/hermetic/debian-bookworm@sha256:" + "ab" * 32,
    digest=Sha256("ab" * 32),
    name="debian-bookworm",
)
WORKSPACE = Workspace(
    source=Path("/work/ws/src"),
    out=Path("/work/ws/out"),
    runner=Path("/work/ws/runner.sh"),
    busybox=Path("/bin/busybox"),
    container_log=Path("/work/ws/container.log"),
    seccomp_profile=Path("/work/ws/seccomp.json"),
    source_archive=Path("/work/ws/src.tar"),
    faketime=Path("/usr/lib/faketime/libfaketime.so.1"),
)
V1 = CGROUP_V1_ROOTLESS
HOSTS = {
    "cgroup_v1_rootless": V1,
    "cgroup_v2_delegated": HostCapabilities(
        rootless=True,
        cgroup_version=2,
        cgroup_controllers=frozenset({"memory", "pids", "cpu"}),
        nofile_hard=1048576,
        nproc_hard=400,
    ),
}


def plan_for(host: HostCapabilities, epoch: int = 1) -> BuildPlan:
    return plan_build(
        spec=spec(),
        image=IMAGE,
        source_date_epoch=epoch,
        workspace=WORKSPACE,
        host=host,
        name="x",
    )


def spec() -> Spec:
    return Spec.from_document(
        __import__("tomllib").loads(SPEC), path=Path("/src/hermetic.toml"), source_dir=Path("/src")
    )


@pytest.mark.parametrize("host_name", sorted(HOSTS))
def test_golden_plan(host_name: str) -> None:
    plan = plan_build(
        spec=spec(),
        image=IMAGE,
        source_date_epoch=1700000000,
        workspace=WORKSPACE,
        host=HOSTS[host_name],
        name="hermetic-test",
    )
    rendered = (
        json.dumps(
            {
                "container": plan.container,
                "env": dict(plan.env),
                "limits": {limit.name: limit.to_json() for limit in plan.limits},
            },
            indent=2,
            sort_keys=True,
        )
        + "\n"
    )
    golden = GOLDEN / f"plan_{host_name}.json"
    if os.environ.get("HERMETIC_UPDATE_GOLDEN"):
        golden.write_text(rendered)
    assert rendered == golden.read_text()


def test_isolation_settings_are_always_present() -> None:
    plan = plan_for(V1)
    c = plan.container
    assert c["netns"] == {"nsmode": "none"}
    assert c["read_only_filesystem"] is True
    assert c["cap_drop"] == ["ALL"]
    assert c["no_new_privileges"] is True
    assert c["env_host"] is False and c["httpproxy"] is False
    binds = [m for m in c["mounts"] if m["type"] == "bind"]
    writable = [m["source"] for m in binds if "rw" in m["options"]]
    assert writable == [str(WORKSPACE.out)]  # the only writable host path: the hand-back dir
    assert "seccomp_profile_path" in c  # hermetic's hardened profile, traced or not


def test_hermetics_machinery_is_out_of_the_builds_reach() -> None:
    plan = plan_build(
        spec=spec(),
        image=IMAGE,
        source_date_epoch=1,
        workspace=WORKSPACE,
        host=V1,
        name="x",
        trace=TraceSetup(level=TraceLevel.STANDARD, token="build-ended-0123456789abcdef"),
    )
    c = plan.container
    # The runner is the container's root with four capabilities; the build runs as
    # 1000:1000 (the runner's nsenter), where those capabilities are gone.
    assert c["user"] == "0:0" and c["cap_drop"] == ["ALL"]
    assert sorted(c["cap_add"]) == ["CAP_CHOWN", "CAP_KILL", "CAP_SETGID", "CAP_SETUID"]
    assert c["command"][5:7] == ["1000", "1000"] and c["no_new_privileges"] is True
    mounts = {m["destination"]: m for m in c["mounts"]}
    tools = mounts["/.hermetic"]
    assert tools["type"] == "tmpfs" and "mode=0700" in tools["options"]
    assert "U" not in tools["options"]  # the container's root's, not the build user's
    under = [d for d in mounts if d.startswith("/.hermetic/")]
    assert sorted(under) == [
        "/.hermetic/busybox",
        "/.hermetic/gate",
        "/.hermetic/out",
        "/.hermetic/runner.sh",
        "/.hermetic/src.tar",
        "/.hermetic/state",
    ]
    assert "mode=0700" in mounts["/.hermetic/state"]["options"]
    assert mounts["/.hermetic/gate"]["source"] == str(WORKSPACE.gate)
    assert all("U" not in m["options"] for m in c["mounts"] if m["type"] == "tmpfs")
    # The sentinel's name is in nothing the build can read: not the command (its
    # /proc/PID/cmdline is world-readable) and not the environment.
    text = json.dumps(c)
    assert "build-ended-0123456789abcdef" not in text
    assert c["command"][7] == "traced"
    # Untraced: no state, no gate.
    assert "/.hermetic/state" not in {m["destination"] for m in plan_for(V1).container["mounts"]}


def test_cgroup_v1_falls_back_and_says_so() -> None:
    limits = {limit.name: limit for limit in plan_for(V1).limits}
    assert limits["memory"].enforced_by == (Enforcement.RLIMIT, Enforcement.HOST_WATCHDOG)
    assert "no cgroup memory controller" in limits["memory"].detail
    assert "plus what its tmpfs mounts hold" in limits["memory"].detail
    assert limits["pids"].enforced_by == (Enforcement.RLIMIT,)
    assert "RLIMIT_NPROC=500" in limits["pids"].detail
    assert limits["disk"].enforced_by[0] is Enforcement.TMPFS_SIZE
    assert limits["timeout"].enforced_by == (
        Enforcement.HOST_TIMER,
        Enforcement.CONTAINER_DEADLINE,
    )


def test_a_limit_above_the_host_hard_limit_is_lowered_and_reported() -> None:
    host = HostCapabilities(
        rootless=True,
        cgroup_version=1,
        cgroup_controllers=frozenset(),
        nofile_hard=1024,
        nproc_hard=300,
    )
    plan = plan_for(host, epoch=1)
    pids = plan.limit("pids")
    assert pids.value == 300 and "lowered from 500" in pids.detail
    assert {"type": "nproc", "soft": 300, "hard": 300} in plan.container["r_limits"]
    assert {"type": "nofile", "soft": 1024, "hard": 1024} in plan.container["r_limits"]


def test_environment_is_normalized_and_extended() -> None:
    plan = plan_for(V1, epoch=42)
    assert dict(plan.env) == {
        "CFLAGS": "-O2",
        "HOME": "/home/builder",
        "LANG": "C.UTF-8",
        "LOGNAME": "builder",
        "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "SOURCE_DATE_EPOCH": "42",
        "TZ": "UTC",
        "USER": "builder",
    }
    command = plan.container["command"]
    assert command[:3] == ["/.hermetic/busybox", "sh", "/.hermetic/runner.sh"]
    # build dir, home, uid, gid, untraced, every CPU, 8 variables
    assert command[3:10] == ["/build", "/home/builder", "1000", "1000", "-", "-", "8"]
    assert command[18:] == ["0", "sh", "-c", "./configure && make"]  # no wrappers


def test_a_varied_environment_changes_only_what_it_varies() -> None:
    from dataclasses import replace

    from sandbox.environment import NORMALIZED, SourceOrder

    varied = replace(
        NORMALIZED,
        build_dir="/elsewhere/b",
        hostname="other",
        uid=2000,
        gid=2000,
        user="u2",
        home="/home/u2",
        lc_all="fr_CH.UTF-8",
        tz="<+14>-14",
        umask="0002",
        extra_env=(("EXTRA", "1"),),
        source_order=SourceOrder.REVERSED,
        clock_offset="+373d",
        cpus="0",
        aslr=False,
        uname26=True,
    )
    base = plan_for(V1)
    plan = plan_build(
        spec=spec(),
        image=IMAGE,
        source_date_epoch=1,
        workspace=WORKSPACE,
        host=V1,
        name="x",
        environment=varied,
    )
    c = plan.container
    assert (c["hostname"], c["user"], c["work_dir"], c["umask"]) == (
        "other",
        "0:0",  # the runner; the build runs as 2000:2000
        "/elsewhere/b",
        "0002",
    )
    assert c["userns"]["value"] == "uid=2000,gid=2000"
    targets = [m["destination"] for m in c["mounts"]]
    assert "/elsewhere/b" in targets and "/home/u2" in targets
    assert "/.faketime/libfaketime.so.1" in targets  # every build process loads it
    env = dict(plan.env)
    assert env["LC_ALL"] == "fr_CH.UTF-8" and env["TZ"] == "<+14>-14" and env["EXTRA"] == "1"
    assert env["LD_PRELOAD"] == "/.faketime/libfaketime.so.1" and env["FAKETIME"] == "+373d"
    assert env["HOME"] == "/home/u2" and env["USER"] == "u2"
    command = c["command"]
    assert command[3:9] == ["/elsewhere/b", "/home/u2", "2000", "2000", "-", "0"]
    wrappers = command[9 + 1 + len(plan.env) :][:5]
    assert wrappers == ["4", "/usr/bin/setarch", "linux64", "--addr-no-randomize", "--uname-2.6"]
    assert plan.personalities == (0x40000 | 0x20000,)
    # the normalized plan has no wrappers; both have hermetic's own seccomp profile
    assert base.personalities == ()
    assert "seccomp_profile_path" in base.container and "seccomp_profile_path" in c


def test_memfd_sysctls_and_file_counts_follow_the_host() -> None:
    v1, v2 = plan_for(V1), plan_for(HOSTS["cgroup_v2_delegated"])
    # Without a memory cgroup the watchdog cannot see a memfd: the build may not make one.
    assert not v1.memfd_allowed and v2.memfd_allowed
    for plan in (v1, v2):
        assert plan.container["sysctl"] == {
            "kernel.shm_rmid_forced": "1",
            "net.ipv4.ip_unprivileged_port_start": "0",
        }
    assert inodes(1024**3) == 65536 and inodes(1) == 4096
    assert "more than 65536 files" in v1.limit("disk").detail
