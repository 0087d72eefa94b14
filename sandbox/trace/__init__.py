"""Tracing of sandboxed builds: what ran, what it touched, what it tried to reach.

Two kernel mechanisms that work rootless and never stop the build for long:
seccomp user notification (a supervisor process sees chosen syscalls with their
arguments: exec, exit, network, randomness, uname, directory listings, file
writes) and fanotify on the build's tmpfs (every file read there, without the
reader's pid, which the kernel hides from unprivileged listeners).
"""

from sandbox.trace.levels import TraceLevel

__all__ = ["TraceLevel"]
