"""A traced process's open files, read through a pidfd (Linux 5.6+).

A pidfd stays the same process's: opened while the process waits for its answer, it
cannot later name another process that got the pid again, as /proc/PID can once the
supervisor has let the process go on.
"""

from __future__ import annotations

import ctypes
import errno
import os

_SYS_PIDFD_GETFD = 438
PIDFD_THREAD = os.O_EXCL  # Linux 6.9+: a pidfd of any thread, not only a group leader

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def open_pidfd(pid: int) -> int:
    """A pidfd of thread ``pid`` (of its thread group where the kernel predates
    PIDFD_THREAD); OSError when it is gone."""
    try:
        return os.pidfd_open(pid, PIDFD_THREAD)
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
    return os.pidfd_open(pid)


def fd_target(pidfd: int, fd: int) -> bytes:
    """What the process's ``fd`` refers to, as /proc/PID/fd/FD says it; OSError when
    the fd is closed or the process gone. The copy is closed at once: a held pipe end
    would keep its reader from ever seeing the end."""
    copy = _syscall(_SYS_PIDFD_GETFD, pidfd, fd, 0)
    if copy < 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))
    try:
        return os.readlink(b"/proc/self/fd/%d" % copy)
    finally:
        os.close(copy)
