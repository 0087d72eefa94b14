"""The one way hermetic runs a host program: mandatory timeout, capped output, typed errors."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sandbox.errors import HostToolFailed, HostToolMissing

log = logging.getLogger(__name__)

# The Debian package that provides each program hermetic calls, for the error message.
PACKAGES = {
    "podman": "podman",
    "mmdebstrap": "mmdebstrap",
    "git": "git",
    "newuidmap": "uidmap",
    "runc": "runc",
    "strace": "strace",
    "diffoscope": "diffoscope",
}


@dataclass(frozen=True, kw_only=True)
class Completed:
    """A finished program: its exit status and captured (capped) output."""

    returncode: int
    stdout: bytes
    stderr: bytes


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    max_output: int = 16 * 1024**2,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    check: bool = True,
    stdout_path: Path | None = None,
) -> Completed:
    """Run a host program to completion.

    Args:
        argv: program and arguments (never a shell string).
        timeout: seconds before the program is killed.
        max_output: bytes of stdout and of stderr kept; the rest is dropped.
        env: the complete environment, or None to inherit.
        cwd: working directory.
        check: raise when the exit status is not 0.
        stdout_path: send stdout to this file instead of capturing it.

    Returns:
        The exit status and the captured output.

    Raises:
        HostToolMissing: the program is not installed.
        HostToolFailed: it timed out, or exited non-zero while ``check`` is set.
    """
    args = list(argv)
    log.debug("running %s", args)
    try:
        if stdout_path is not None:
            with stdout_path.open("wb") as sink:
                done = subprocess.run(
                    args,
                    stdout=sink,
                    stderr=subprocess.PIPE,
                    timeout=timeout,
                    env=None if env is None else dict(env),
                    cwd=cwd,
                    check=False,
                )
            out = b""
        else:
            done = subprocess.run(
                args,
                capture_output=True,
                timeout=timeout,
                env=None if env is None else dict(env),
                cwd=cwd,
                check=False,
            )
            out = done.stdout[:max_output]
    except FileNotFoundError as e:
        if e.filename in (args[0], None):
            tool = Path(args[0]).name
            raise HostToolMissing(tool=tool, package=PACKAGES.get(tool, tool)) from e
        raise
    except subprocess.TimeoutExpired as e:
        stderr = (e.stderr or b"")[:max_output].decode("utf-8", "replace")
        raise HostToolFailed(argv=args, returncode=None, stderr=stderr) from e
    err = done.stderr[:max_output]
    if check and done.returncode != 0:
        raise HostToolFailed(
            argv=args, returncode=done.returncode, stderr=err.decode("utf-8", "replace")
        )
    return Completed(returncode=done.returncode, stdout=out, stderr=err)
