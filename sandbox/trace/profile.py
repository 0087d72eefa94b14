"""The seccomp profile of every build: podman's default, hardened, and for a traced
build with the traced syscalls handed to hermetic's supervisor (SCMP_ACT_NOTIFY).

Pure: takes the base profile as data. Hardened means, for traced and untraced builds
alike (so that tracing changes nothing a build can do):

- no nested namespaces: ``unshare`` and ``clone`` with any ``CLONE_NEW*`` flag fail
  with EPERM (a user namespace would give the build capabilities over new mounts and
  namespaces of its own); ``setns`` too;
- no ``CLONE_PARENT``: a build process cannot make a sibling of itself, which would be
  a child of hermetic's runner; ``clone3``, whose flags seccomp cannot read, fails with
  ENOSYS, so the C library falls back to ``clone``;
- no mounts: ``mount``, ``umount2``, the new mount API, ``pivot_root``;
- no ``io_uring`` (ENOSYS): its operations open, connect and send without a system
  call the supervisor could see;
- only the native architecture: podman's default also allows i386 (``int 0x80``) and
  x32 system calls, whose numbers and structures differ; their first call is refused
  (the kernel kills the process with SIGSYS) rather than traced wrong.

Beyond these, the traced profile only moves syscalls from "allow" to "allow after the
supervisor has looked".
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


EPERM = 1
ENOSYS = 38
CLONE_NEWTIME = 0x80  # unshare only: in clone's flags these bits are the exit signal
CLONE_PARENT = 0x8000
CLONE_NEWNS = 0x20000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
NAMESPACES = (
    CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID
) | CLONE_NEWNET
MOUNTS = (
    "mount",
    "umount",
    "umount2",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    "pivot_root",
    "setns",
)
UNSUPPORTED = ("clone3", "io_uring_setup", "io_uring_enter", "io_uring_register")
HARDENED = (*MOUNTS, *UNSUPPORTED, "clone", "unshare")
# Compatibility ABIs podman's profile allows beside the native one.
_COMPAT_ARCHES = frozenset({"SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_ARM"})


def _flags(name: str, allowed_unless: int) -> list[dict[str, Any]]:
    """``name`` allowed when its flags (argument 0) have none of ``allowed_unless``,
    EPERM for each of those bits; the rules never overlap in action."""

    def rule(action: str, mask: int, value: int, errno: int | None = None) -> dict[str, Any]:
        found: dict[str, Any] = {
            "names": [name],
            "action": action,
            "args": [{"index": 0, "value": mask, "valueTwo": value, "op": "SCMP_CMP_MASKED_EQ"}],
        }
        if errno is not None:
            found["errnoRet"] = errno
        return found

    bits = [1 << bit for bit in range(64) if allowed_unless & (1 << bit)]
    return [
        rule(ALLOW, allowed_unless, 0),
        *(rule("SCMP_ACT_ERRNO", bit, bit, EPERM) for bit in bits),
    ]


def _harden(profile: dict[str, Any]) -> None:
    """Apply the restrictions of the module docstring to ``profile`` (in place)."""
    for entry in profile.get("archMap") or []:
        entry["subArchitectures"] = []
    if profile.get("architectures"):
        profile["architectures"] = [
            arch for arch in profile["architectures"] if arch not in _COMPAT_ARCHES
        ]
    rules = []
    for rule in profile.get("syscalls", []):
        names = [name for name in rule.get("names", []) if name not in HARDENED]
        if names:
            rules.append({**rule, "names": names})
    rules += _flags("clone", NAMESPACES | CLONE_PARENT)
    rules += _flags("unshare", NAMESPACES | CLONE_NEWTIME)
    rules.append({"names": list(MOUNTS), "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM, "args": []})
    rules.append(
        {"names": list(UNSUPPORTED), "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS, "args": []}
    )
    profile["syscalls"] = rules


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
    _harden(profile)
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
