"""The syscalls hermetic traces, by name and by number on each supported architecture."""

from __future__ import annotations

import os

# Linux x86_64 numbers (arch/x86/entry/syscalls/syscall_64.tbl).
X86_64 = {
    "open": 2,
    "stat": 4,
    "connect": 42,
    "sendto": 44,
    "sendmsg": 46,
    "bind": 49,
    "execve": 59,
    "uname": 63,
    "sched_getaffinity": 204,
    "getdents": 78,
    "rename": 82,
    "mkdir": 83,
    "rmdir": 84,
    "creat": 85,
    "unlink": 87,
    "exit_group": 231,
    "openat": 257,
    "mkdirat": 258,
    "unlinkat": 263,
    "renameat": 264,
    "getdents64": 217,
    "sendmmsg": 307,
    "renameat2": 316,
    "getrandom": 318,
    "execveat": 322,
    "openat2": 437,
    "truncate": 76,
    "link": 86,
    "symlink": 88,
    "chmod": 90,
    "fchmod": 91,
    "mknod": 133,
    "mknodat": 259,
    "linkat": 265,
    "symlinkat": 266,
    "fchmodat": 268,
    "fchmodat2": 452,
}
ARCHITECTURES = {"x86_64": X86_64}

# Flags of open(2) on x86_64 (asm-generic/fcntl.h).
O_ACCMODE = 0o3
O_CREAT = 0o100
O_NOCTTY = 0o400
O_TRUNC = 0o1000
O_CLOEXEC = 0o2000000
AT_FDCWD = -100

# What the supervisor reads of a call's strings at most.
PATH_MAX = 4096  # a longer path fails with ENAMETOOLONG: nothing is lost by cutting it
ARG_MAX_STRING = 128 * 1024  # MAX_ARG_STRLEN: a longer argument fails with E2BIG
ARGV_MAX_BYTES = 1024 * 1024  # one exec's argument list as kept (pointers included)


def numbers() -> dict[str, int]:
    """Syscall numbers of this machine.

    Raises:
        RuntimeError: the architecture is not supported for tracing.
    """
    machine = os.uname().machine
    if machine not in ARCHITECTURES:
        raise RuntimeError(f"tracing supports {', '.join(ARCHITECTURES)}, not {machine}")
    return ARCHITECTURES[machine]
