"""The traced seccomp profile: what is handed to the supervisor, and that nothing else changes."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from sandbox.trace.levels import TraceLevel
from sandbox.trace.profile import (
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUSER,
    CLONE_PARENT,
    TRACED,
    build_profile,
)
from sandbox.trace.syscalls import O_CLOEXEC, O_CREAT, O_NOCTTY, O_TRUNC

PODMAN_DEFAULT = Path("/usr/share/containers/seccomp.json")
BASE: dict[str, Any] = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "syscalls": [
        {
            "names": ["read", "openat", "execve", "getrandom", "uname"],
            "action": "SCMP_ACT_ALLOW",
            "args": [],
        },
        {"names": ["openat"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 9}]},
        {"names": ["reboot"], "action": "SCMP_ACT_ERRNO", "args": []},
    ],
}


def rules_for(profile: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [rule for rule in profile["syscalls"] if name in rule["names"]]


def matches(rule: dict[str, Any], args: dict[int, int]) -> bool:
    for condition in rule.get("args") or []:
        value = args.get(condition["index"], 0)
        op = condition["op"]
        if op == "SCMP_CMP_GT" and not value > condition["value"]:
            return False
        if op == "SCMP_CMP_MASKED_EQ" and value & condition["value"] != condition["valueTwo"]:
            return False
        if op == "SCMP_CMP_EQ" and value != condition["value"]:
            return False
        if op == "SCMP_CMP_NE" and value == condition["value"]:
            return False
    return True


def actions(profile: dict[str, Any], name: str, args: dict[int, int]) -> set[str]:
    return {rule["action"] for rule in rules_for(profile, name) if matches(rule, args)}


def test_traced_syscalls_go_to_the_supervisor_and_nothing_else_changes() -> None:
    profile = build_profile(BASE, level=TraceLevel.STANDARD, listener="/run/s.sock")
    assert profile["listenerPath"] == "/run/s.sock"
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    assert rules_for(profile, "read")[0]["action"] == "SCMP_ACT_ALLOW"
    assert rules_for(profile, "reboot")[0]["action"] == "SCMP_ACT_ERRNO"
    assert [r["action"] for r in rules_for(profile, "execve")] == ["SCMP_ACT_NOTIFY"]
    assert "execve" in TRACED and "uname" in TRACED
    assert BASE["syscalls"][0]["names"][1] == "openat", "the base profile is not modified"


# Every flag combination that matters, crossed with "other bits" that must not.
FLAGS = [
    sum(bits)
    for bits in itertools.product(
        (0, 1, 2), (0, O_CREAT), (0, O_TRUNC), (0, O_CLOEXEC), (0, O_NOCTTY), (0, 0o200000)
    )
]


@pytest.mark.parametrize("flags", FLAGS)
def test_openat_rules_give_exactly_one_action_for_every_flag_value(flags: int) -> None:
    profile = build_profile(BASE, level=TraceLevel.STANDARD, listener="/s")
    found = actions(profile, "openat", {2: flags})
    assert len(found) == 1, (oct(flags), found)
    quiet_read = (
        flags & 3 == 0 and not flags & (O_CREAT | O_TRUNC) and flags & (O_CLOEXEC | O_NOCTTY)
    )
    assert found == {"SCMP_ACT_ALLOW" if quiet_read else "SCMP_ACT_NOTIFY"}


def test_deep_sees_every_open() -> None:
    profile = build_profile(BASE, level=TraceLevel.DEEP, listener="/s")
    for flags in FLAGS:
        assert actions(profile, "openat", {2: flags}) == {"SCMP_ACT_NOTIFY"}


@pytest.mark.parametrize(
    ("length", "flags", "action"),
    [
        (8, 1, "SCMP_ACT_ALLOW"),
        (16, 1, "SCMP_ACT_NOTIFY"),
        (8, 0, "SCMP_ACT_NOTIFY"),
        (32, 2, "SCMP_ACT_NOTIFY"),
    ],
)
def test_only_glibcs_heap_key_getrandom_passes_unseen(length: int, flags: int, action: str) -> None:
    profile = build_profile(BASE, level=TraceLevel.STANDARD, listener="/s")
    assert actions(profile, "getrandom", {1: length, 2: flags}) == {action}


def test_untraced_profile_only_allows_the_asked_personalities() -> None:
    profile = build_profile(BASE, level=TraceLevel.OFF, personalities=(0x40000,))
    assert "listenerPath" not in profile
    assert profile["syscalls"][:3] == BASE["syscalls"]
    assert actions(profile, "personality", {0: 0x40000}) == {"SCMP_ACT_ALLOW"}
    assert actions(profile, "personality", {0: 0x80000}) == set()
    with pytest.raises(ValueError, match="socket"):
        build_profile(BASE, level=TraceLevel.STANDARD)


def test_podmans_default_profile_converts() -> None:
    base = json.loads(PODMAN_DEFAULT.read_text())
    profile = build_profile(base, level=TraceLevel.STANDARD, listener="/s")
    allowed = {
        n
        for r in profile["syscalls"]
        if r["action"] == "SCMP_ACT_ALLOW" and not r.get("args")
        for n in r["names"]
    }
    assert not allowed & set(TRACED)
    notified = {
        n for r in profile["syscalls"] if r["action"] == "SCMP_ACT_NOTIFY" for n in r["names"]
    }
    base_allowed = {
        n for r in base["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" for n in r["names"]
    }
    assert set(TRACED) & base_allowed <= notified
    # A traced call the base profile refuses stays refused: tracing allows nothing new.
    assert "fchmodat2" not in base_allowed and "fchmodat2" not in notified


LEVELS = [TraceLevel.OFF, TraceLevel.STANDARD]


def profile_at(level: TraceLevel, base: dict[str, Any] | None = None) -> dict[str, Any]:
    base = json.loads(PODMAN_DEFAULT.read_text()) if base is None else base
    return build_profile(base, level=level, listener=None if level is TraceLevel.OFF else "/s")


CLONE_FLAGS = {
    "fork": 0x01200011,  # glibc fork: CHILD_SETTID | CHILD_CLEARTID | SIGCHLD
    "thread": 0x003D0F00,  # pthread_create's fallback to clone
    "vfork": 0x00004111,  # posix_spawn: VM | VFORK | SIGCHLD
    "userns": CLONE_NEWUSER | 0x11,
    "mountns": CLONE_NEWNS | 0x11,
    "pidns+netns": CLONE_NEWPID | CLONE_NEWNET | 0x11,
    "parent": CLONE_PARENT | 0x11,
}


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("kind", sorted(CLONE_FLAGS))
def test_clone_never_makes_namespaces_or_siblings(level: TraceLevel, kind: str) -> None:
    profile = profile_at(level)
    found = actions(profile, "clone", {0: CLONE_FLAGS[kind]})
    denied = kind in ("userns", "mountns", "pidns+netns", "parent")
    assert found == ({"SCMP_ACT_ERRNO"} if denied else {"SCMP_ACT_ALLOW"}), found
    # Negative control: podman's own profile allows every one of them.
    base = json.loads(PODMAN_DEFAULT.read_text())
    assert "SCMP_ACT_ALLOW" in actions(base, "clone", {0: CLONE_FLAGS[kind]})


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize(
    ("flags", "allowed"),
    [
        (0x00000400, True),  # CLONE_FILES
        (0x00000200, True),  # CLONE_FS
        (CLONE_NEWUSER, False),
        (CLONE_NEWNS, False),
        (CLONE_NEWNS | CLONE_NEWUSER, False),
        (0x80, False),  # CLONE_NEWTIME
        (0x40000000, False),  # CLONE_NEWNET
    ],
)
def test_unshare_of_any_namespace_is_denied(level: TraceLevel, flags: int, allowed: bool) -> None:
    found = actions(profile_at(level), "unshare", {0: flags})
    assert found == ({"SCMP_ACT_ALLOW"} if allowed else {"SCMP_ACT_ERRNO"})
    errnos = {
        r.get("errnoRet") for r in rules_for(profile_at(level), "unshare") if matches(r, {0: flags})
    }
    assert errnos == ({None} if allowed else {1})


@pytest.mark.parametrize("level", LEVELS)
def test_mounts_setns_io_uring_and_clone3_are_denied(level: TraceLevel) -> None:
    profile = profile_at(level)
    for name in (
        "mount",
        "umount2",
        "fsopen",
        "fsmount",
        "move_mount",
        "open_tree",
        "pivot_root",
        "setns",
    ):
        assert [(r["action"], r["errnoRet"]) for r in rules_for(profile, name)] == [
            ("SCMP_ACT_ERRNO", 1)
        ], name
    for name in ("clone3", "io_uring_setup", "io_uring_enter"):
        assert [(r["action"], r["errnoRet"]) for r in rules_for(profile, name)] == [
            ("SCMP_ACT_ERRNO", 38)
        ], name
    # Negative control: podman's profile allows them.
    base = json.loads(PODMAN_DEFAULT.read_text())
    assert "SCMP_ACT_ALLOW" in {r["action"] for r in rules_for(base, "mount")}
    assert "SCMP_ACT_ALLOW" in {r["action"] for r in rules_for(base, "clone3")}


@pytest.mark.parametrize("level", LEVELS)
def test_only_the_native_architecture_is_allowed(level: TraceLevel) -> None:
    profile = profile_at(level)
    assert all(entry["subArchitectures"] == [] for entry in profile["archMap"])
    assert "architectures" not in profile or not profile["architectures"]
    base = json.loads(PODMAN_DEFAULT.read_text())
    native = next(e for e in base["archMap"] if e["architecture"] == "SCMP_ARCH_X86_64")
    assert "SCMP_ARCH_X86" in native["subArchitectures"]  # the negative control
    docker_style = build_profile(
        {**BASE, "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
        level=level,
        listener="/s",
    )
    assert docker_style["architectures"] == ["SCMP_ARCH_X86_64"]


AF_VSOCK, AF_ALG, AF_PACKET, AF_BLUETOOTH = 40, 38, 17, 31
IPPROTO_SCTP = 132


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize(
    ("domain", "protocol", "expected"),
    [
        (1, 0, ("SCMP_ACT_ALLOW", None)),  # AF_UNIX
        (2, 0, ("SCMP_ACT_ALLOW", None)),  # AF_INET
        (2, 6, ("SCMP_ACT_ALLOW", None)),
        (2, 17, ("SCMP_ACT_ALLOW", None)),
        (10, 0, ("SCMP_ACT_ALLOW", None)),  # AF_INET6
        (16, 0, ("SCMP_ACT_ALLOW", None)),  # AF_NETLINK
        (16, 9, ("SCMP_ACT_ERRNO", 22)),  # NETLINK_AUDIT, as podman refuses it
        (AF_VSOCK, 0, ("SCMP_ACT_ERRNO", 97)),
        (AF_ALG, 0, ("SCMP_ACT_ERRNO", 97)),
        (AF_PACKET, 0, ("SCMP_ACT_ERRNO", 97)),
        (AF_BLUETOOTH, 0, ("SCMP_ACT_ERRNO", 97)),
        (0, 0, ("SCMP_ACT_ERRNO", 97)),
        ((1 << 32) | 2, 0, ("SCMP_ACT_ERRNO", 97)),  # upper bits set: not AF_INET to seccomp
        (2, IPPROTO_SCTP, None),  # no rule: the profile's default (ENOSYS)
    ],
)
def test_sockets_of_four_families_only(
    level: TraceLevel, domain: int, protocol: int, expected: tuple[str, int | None] | None
) -> None:
    profile = profile_at(level)
    found = [
        (r["action"], r.get("errnoRet"))
        for r in rules_for(profile, "socket")
        if matches(r, {0: domain, 2: protocol})
    ]
    assert found == ([] if expected is None else [expected])
    assert profile["defaultErrnoRet"] == 38
    # Negative control: podman's own profile lets every family through.
    base = json.loads(PODMAN_DEFAULT.read_text())
    if domain in (AF_VSOCK, AF_ALG):
        assert "SCMP_ACT_ALLOW" in actions(base, "socket", {0: domain, 2: protocol})


@pytest.mark.parametrize("level", LEVELS)
def test_socketpair_is_unix_only(level: TraceLevel) -> None:
    profile = profile_at(level)
    assert actions(profile, "socketpair", {0: 1}) == {"SCMP_ACT_ALLOW"}
    assert actions(profile, "socketpair", {0: 2}) == {"SCMP_ACT_ERRNO"}


@pytest.mark.parametrize("level", LEVELS)
def test_memfd_is_refused_only_where_no_cgroup_charges_it(level: TraceLevel) -> None:
    base = json.loads(PODMAN_DEFAULT.read_text())
    listener = None if level is TraceLevel.OFF else "/s"
    watched = build_profile(base, level=level, listener=listener, memfd=False)
    assert [(r["action"], r["errnoRet"]) for r in rules_for(watched, "memfd_create")] == [
        ("SCMP_ACT_ERRNO", 38)
    ]
    charged = build_profile(base, level=level, listener=listener)
    assert actions(charged, "memfd_create", {}) == {"SCMP_ACT_ALLOW"}
    # memfd_secret (memory outside every accounting) is refused everywhere.
    for profile in (watched, charged):
        assert actions(profile, "memfd_secret", {}) == {"SCMP_ACT_ERRNO"}


def test_creations_and_changes_without_an_open_are_traced() -> None:
    profile = profile_at(TraceLevel.STANDARD)
    for name in ("link", "linkat", "symlink", "symlinkat", "mknodat", "truncate", "fchmodat"):
        assert actions(profile, name, {}) == {"SCMP_ACT_NOTIFY"}, name
    assert actions(profile_at(TraceLevel.OFF), "linkat", {}) == {"SCMP_ACT_ALLOW"}


PR_SET_NAME, PR_SET_MM, PR_SET_MM_MAP = 15, 35, 14
PRCTL_OPTIONS = [0, 1, PR_SET_NAME, 34, 36, 38, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 32, 3 << 40]


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("option", [*PRCTL_OPTIONS, PR_SET_MM, PR_SET_MM | 1 << 32])
def test_prctl_set_mm_is_denied_and_every_other_option_allowed(
    level: TraceLevel, option: int
) -> None:
    # PR_SET_MM_MAP rewrites what /proc/PID/stat says of a program: it could make an exec
    # that ran look failed. The kernel reads the option as an int, so upper bits are no
    # way around it.
    profile = profile_at(level)
    found = [r for r in rules_for(profile, "prctl") if matches(r, {0: option, 1: PR_SET_MM_MAP})]
    assert len(found) == 1, found  # the rules never overlap
    denied = option & 0xFFFFFFFF == PR_SET_MM
    assert found[0]["action"] == ("SCMP_ACT_ERRNO" if denied else "SCMP_ACT_ALLOW")
    assert found[0].get("errnoRet") == (1 if denied else None)
    # Negative control: podman's own profile allows it.
    base = json.loads(PODMAN_DEFAULT.read_text())
    assert actions(base, "prctl", {0: option}) == {"SCMP_ACT_ALLOW"}


def test_prctl_stays_refused_where_the_base_refuses_it() -> None:
    for level in LEVELS:
        profile = build_profile(BASE, level=level, listener="/s")
        assert rules_for(profile, "prctl") == []  # the default action: refused
