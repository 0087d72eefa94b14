"""The traced seccomp profile: what is handed to the supervisor, and that nothing else changes."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from sandbox.trace.levels import TraceLevel
from sandbox.trace.profile import TRACED, build_profile
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
    for condition in rule["args"]:
        value = args[condition["index"]]
        op = condition["op"]
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
    assert set(TRACED) <= notified
