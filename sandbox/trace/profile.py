"""The seccomp profile of a traced build: podman's default, with the traced syscalls
handed to hermetic's supervisor (SCMP_ACT_NOTIFY) instead of allowed.

Pure: takes the base profile as data. The profile only moves syscalls from "allow"
to "allow after the supervisor has looked"; nothing is denied that was allowed.
"""

from __future__ import annotations

import copy
from typing import Any

from sandbox.trace.levels import TraceLevel
from sandbox.trace.syscalls import O_ACCMODE, O_CLOEXEC, O_CREAT, O_NOCTTY, O_TRUNC

NOTIFY = "SCMP_ACT_NOTIFY"
ALLOW = "SCMP_ACT_ALLOW"

# Seen on every call, in every mode.
PROGRAMS = ("execve", "execveat", "exit_group")  # what ran, with argv and exit status
NETWORK = ("connect", "sendto", "sendmsg", "sendmmsg", "bind")
NONDETERMINISM = ("uname", "getdents", "getdents64", "sched_getaffinity")
TREE = ("unlink", "unlinkat", "rmdir", "mkdir", "mkdirat", "rename", "renameat", "renameat2")
OPENS = ("open", "creat", "openat2")  # rare next to openat, so always seen
TRACED = PROGRAMS + NETWORK + NONDETERMINISM + TREE + OPENS

# openat in standard mode: writes, creations, truncations and plain read-only opens
# are seen; read-only opens with O_CLOEXEC (the dynamic loader's) or O_NOCTTY (the
# compiler's headers) are let through unseen: there are tens of thousands of them,
# and fanotify still reports the reads among them that happen in the build dir.
_READ_ONLY_BITS = O_ACCMODE | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY
HEAP_KEY_BYTES = 8
GRND_NONBLOCK = 1


def _openat(action: str, mask: int, value: int) -> dict[str, Any]:
    return {
        "names": ["openat"],
        "action": action,
        "args": [{"index": 2, "value": mask, "valueTwo": value, "op": "SCMP_CMP_MASKED_EQ"}],
    }


def _openat_rules(level: TraceLevel) -> list[dict[str, Any]]:
    if level is TraceLevel.DEEP:
        return [{"names": ["openat"], "action": NOTIFY, "args": []}]
    # The rules partition every flag value; an unconditional NOTIFY beside a
    # conditional ALLOW would win in libseccomp and see everything.
    return [
        _openat(ALLOW, O_ACCMODE | O_CREAT | O_TRUNC | O_CLOEXEC, O_CLOEXEC),
        _openat(ALLOW, _READ_ONLY_BITS, O_NOCTTY),
        _openat(NOTIFY, O_ACCMODE, 1),
        _openat(NOTIFY, O_ACCMODE, 2),
        _openat(NOTIFY, O_ACCMODE, 3),
        _openat(NOTIFY, O_CREAT, O_CREAT),
        _openat(NOTIFY, O_TRUNC, O_TRUNC),
        _openat(NOTIFY, _READ_ONLY_BITS, 0),
    ]


def _getrandom_rules() -> list[dict[str, Any]]:
    # glibc seeds malloc's heap key with getrandom(8 bytes, GRND_NONBLOCK) in every
    # process: thousands of those say nothing about the build, so they pass unseen.
    def rule(action: str, *conditions: tuple[int, int, str]) -> dict[str, Any]:
        return {
            "names": ["getrandom"],
            "action": action,
            "args": [
                {"index": index, "value": value, "valueTwo": 0, "op": op}
                for index, value, op in conditions
            ],
        }

    return [
        rule(ALLOW, (1, HEAP_KEY_BYTES, "SCMP_CMP_EQ"), (2, GRND_NONBLOCK, "SCMP_CMP_EQ")),
        rule(NOTIFY, (1, HEAP_KEY_BYTES, "SCMP_CMP_NE")),
        rule(NOTIFY, (2, GRND_NONBLOCK, "SCMP_CMP_NE")),
    ]


def build_profile(
    base: dict[str, Any],
    *,
    level: TraceLevel,
    listener: str | None = None,
    personalities: tuple[int, ...] = (),
) -> dict[str, Any]:
    """Derive a build's seccomp profile from podman's default profile.

    Args:
        base: podman's default profile (containers-common's seccomp.json).
        level: off, standard or deep.
        listener: unix socket runc hands the notification fd to (traced builds).
        personalities: personality(2) values to allow besides podman's (a check
            that disables ASLR or reports an old kernel needs them).

    Returns:
        The profile; for a traced build with ``listenerPath`` set.

    Raises:
        ValueError: a traced profile without a listener.
    """
    profile = copy.deepcopy(base)
    allowed = [
        {
            "names": ["personality"],
            "action": ALLOW,
            "args": [{"index": 0, "value": value, "valueTwo": 0, "op": "SCMP_CMP_EQ"}],
        }
        for value in personalities
    ]
    if level is TraceLevel.OFF:
        profile["syscalls"] = [*profile.get("syscalls", []), *allowed]
        return profile
    if listener is None:
        raise ValueError("a traced build's profile needs the supervisor's socket")
    moved = {*TRACED, "openat", "getrandom"}
    kept = []
    for rule in profile.get("syscalls", []):
        if rule.get("action") == ALLOW:
            names = [name for name in rule.get("names", []) if name not in moved]
            if not names:
                continue
            rule = {**rule, "names": names}
        kept.append(rule)
    kept.append({"names": list(TRACED), "action": NOTIFY, "args": []})
    kept.extend(_openat_rules(level))
    kept.extend(_getrandom_rules())
    kept.extend(allowed)
    profile["syscalls"] = kept
    profile["listenerPath"] = listener
    profile["listenerMetadata"] = "hermetic"
    return profile
