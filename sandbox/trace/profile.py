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
  (the kernel kills the process with SIGSYS) rather than traced wrong;
- sockets of four families only: ``AF_UNIX``, ``AF_INET``, ``AF_INET6`` (with the
  protocols of TCP, UDP, UDP-Lite, ICMP and MPTCP) and ``AF_NETLINK``; any other family
  fails with EAFNOSUPPORT (``AF_VSOCK`` would reach the hypervisor's host from a VM
  whatever the network namespace; ``AF_ALG`` and the rest are kernel surface no build
  needs), another protocol with ENOSYS (SCTP connects through ``setsockopt``, which the
  supervisor does not see); ``socketpair`` is ``AF_UNIX`` only;
- no ``prctl(PR_SET_MM)`` (EPERM): ``PR_SET_MM_MAP`` needs no privilege and rewrites
  where /proc/PID/stat says a program's code, stack and arguments are, which is how
  the supervisor tells whether an exec ran (the option is an ``int``: only its low 32
  bits are compared, as the kernel reads them);
- no ``memfd_secret``; and where memory is watched from the host (no memory cgroup),
  no ``memfd_create``: a memfd's pages are in no process's RSS and in no mount the
  watchdog can measure (see docs/sandbox.md).

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
# What makes or changes a file without opening it for writing: a hard link or symlink
# is a new output, truncate changes content, a mode change the executable bit.
CHANGES = (
    "link",
    "linkat",
    "symlink",
    "symlinkat",
    "mknod",
    "mknodat",
    "truncate",
    "chmod",
    "fchmod",
    "fchmodat",
    "fchmodat2",
)
OPENS = ("open", "creat", "openat2")  # rare next to openat, so always seen
TRACED = PROGRAMS + NETWORK + NONDETERMINISM + TREE + CHANGES + OPENS

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
UNSUPPORTED = ("clone3", "io_uring_setup", "io_uring_enter", "io_uring_register", "memfd_secret")
SOCKETS = ("socket", "socketpair")
HARDENED = (*MOUNTS, *UNSUPPORTED, *SOCKETS, "clone", "unshare")
PR_SET_MM = 35
EINVAL = 22
EOPNOTSUPP = 95
EAFNOSUPPORT = 97
AF_UNIX = 1
AF_INET = 2
AF_INET6 = 10
AF_NETLINK = 16
NETLINK_AUDIT = 9  # podman's profile refuses it (EINVAL) to a container without CAP_AUDIT_WRITE
# IP protocols a socket may name (0 picks the type's default): ICMP, TCP, UDP, ICMPv6,
# UDP-Lite, MPTCP. Each connects and sends through the calls the supervisor sees.
IP_PROTOCOLS = (0, 1, 6, 17, 58, 136, 262)
# Compatibility ABIs podman's profile allows beside the native one.
_COMPAT_ARCHES = frozenset({"SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_ARM"})


def _masked(name: str, mask: int, value: int, errno: int | None = None) -> dict[str, Any]:
    """``name`` when argument 0 masked with ``mask`` is ``value``: allowed, or failing
    with ``errno``."""
    found: dict[str, Any] = {
        "names": [name],
        "action": ALLOW if errno is None else "SCMP_ACT_ERRNO",
        "args": [{"index": 0, "value": mask, "valueTwo": value, "op": "SCMP_CMP_MASKED_EQ"}],
    }
    if errno is not None:
        found["errnoRet"] = errno
    return found


def _flags(name: str, allowed_unless: int) -> list[dict[str, Any]]:
    """``name`` allowed when its flags (argument 0) have none of ``allowed_unless``,
    EPERM for each of those bits; the rules never overlap in action."""
    bits = [1 << bit for bit in range(64) if allowed_unless & (1 << bit)]
    return [
        _masked(name, allowed_unless, 0),
        *(_masked(name, bit, bit, EPERM) for bit in bits),
    ]


def _int_option_rules(name: str, denied: int) -> list[dict[str, Any]]:
    """``name`` allowed unless the low 32 bits of argument 0 (an ``int`` to the kernel)
    are ``denied`` (EPERM). The allowed values are split by their lowest bit that
    differs from ``denied``: 32 classes that, with the denied one, never overlap."""
    allowed = [
        _masked(name, (2 << bit) - 1, (denied & ((1 << bit) - 1)) | (~denied & (1 << bit)))
        for bit in range(32)
    ]
    return [*allowed, _masked(name, 0xFFFFFFFF, denied, EPERM)]


def _condition(index: int, op: str, value: int) -> dict[str, Any]:
    return {"index": index, "value": value, "valueTwo": 0, "op": op}


def _socket_rules() -> list[dict[str, Any]]:
    """``socket`` and ``socketpair`` for the families of the module docstring.

    The rules never overlap: a family is allowed, or refused with EAFNOSUPPORT (every
    other value of the 64-bit argument, upper bits included); an allowed family with
    another protocol matches no rule and gets the profile's default (ENOSYS).
    """

    def rule(name: str, *conditions: dict[str, Any], errno: int | None = None) -> dict[str, Any]:
        found: dict[str, Any] = {
            "names": [name],
            "action": ALLOW if errno is None else "SCMP_ACT_ERRNO",
            "args": list(conditions),
        }
        if errno is not None:
            found["errnoRet"] = errno
        return found

    eq, ne = "SCMP_CMP_EQ", "SCMP_CMP_NE"
    rules = [rule("socket", _condition(0, eq, AF_UNIX))]
    for family in (AF_INET, AF_INET6):
        rules += [
            rule("socket", _condition(0, eq, family), _condition(2, eq, protocol))
            for protocol in IP_PROTOCOLS
        ]
    netlink = _condition(0, eq, AF_NETLINK)
    rules.append(rule("socket", netlink, _condition(2, ne, NETLINK_AUDIT)))
    rules.append(rule("socket", netlink, _condition(2, eq, NETLINK_AUDIT), errno=EINVAL))
    allowed = (AF_UNIX, AF_INET, AF_INET6, AF_NETLINK)
    rules += [
        rule("socket", _condition(0, eq, family), errno=EAFNOSUPPORT)
        for family in range(AF_NETLINK)
        if family not in allowed
    ]
    rules.append(rule("socket", _condition(0, "SCMP_CMP_GT", AF_NETLINK), errno=EAFNOSUPPORT))
    rules.append(rule("socketpair", _condition(0, eq, AF_UNIX)))
    rules.append(rule("socketpair", _condition(0, ne, AF_UNIX), errno=EOPNOTSUPP))
    return rules


def _harden(profile: dict[str, Any], *, memfd: bool = True) -> None:
    """Apply the restrictions of the module docstring to ``profile`` (in place);
    ``memfd=False`` refuses ``memfd_create`` too (ENOSYS: callers fall back)."""
    for entry in profile.get("archMap") or []:
        entry["subArchitectures"] = []
    if profile.get("architectures"):
        profile["architectures"] = [
            arch for arch in profile["architectures"] if arch not in _COMPAT_ARCHES
        ]
    denied = {*HARDENED} if memfd else {*HARDENED, "memfd_create"}
    prctl = any(
        rule.get("action") == ALLOW and not rule.get("args") and "prctl" in rule.get("names", [])
        for rule in profile.get("syscalls", [])
    )
    if prctl:  # allowed by the base: allowed still, but for PR_SET_MM
        denied.add("prctl")
    rules = []
    for rule in profile.get("syscalls", []):
        names = [name for name in rule.get("names", []) if name not in denied]
        if names:
            rules.append({**rule, "names": names})
    rules += _socket_rules()
    rules += _flags("clone", NAMESPACES | CLONE_PARENT)
    rules += _flags("unshare", NAMESPACES | CLONE_NEWTIME)
    if prctl:
        rules += _int_option_rules("prctl", PR_SET_MM)
    rules.append({"names": list(MOUNTS), "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM, "args": []})
    unsupported = [*UNSUPPORTED] if memfd else [*UNSUPPORTED, "memfd_create"]
    rules.append({"names": unsupported, "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS, "args": []})
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
    memfd: bool = True,
) -> dict[str, Any]:
    """Derive a build's seccomp profile from podman's default profile.

    Args:
        base: podman's default profile (containers-common's seccomp.json).
        level: off, standard or deep.
        listener: unix socket runc hands the notification fd to (traced builds).
        personalities: personality(2) values to allow besides podman's (a check
            that disables ASLR or reports an old kernel needs them).
        memfd: allow ``memfd_create`` (False where memory is watched from the host).

    Returns:
        The profile; for a traced build with ``listenerPath`` set.

    Raises:
        ValueError: a traced profile without a listener.
    """
    profile = copy.deepcopy(base)
    allowed_in_base = {
        name
        for rule in profile.get("syscalls", [])
        if rule.get("action") == ALLOW and not rule.get("args")
        for name in rule.get("names", [])
    }
    _harden(profile, memfd=memfd)
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
    # A traced call the base refuses stays refused (fchmodat2 in older profiles).
    traced = [name for name in TRACED if name in allowed_in_base or name not in CHANGES]
    kept.append({"names": traced, "action": NOTIFY, "args": []})
    kept.extend(_openat_rules(level))
    kept.extend(_getrandom_rules())
    kept.extend(allowed)
    profile["syscalls"] = kept
    profile["listenerPath"] = listener
    profile["listenerMetadata"] = "hermetic"
    return profile
