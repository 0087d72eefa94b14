"""Reading the git checkout a source lives in, without running anything the repository
configures: a checkout is as untrusted as the build it holds.

git is run in a clean environment, with no system or global configuration, no replace
objects, no hooks, no fsmonitor and no network, only on a repository this user owns (git's
own ownership check is left on), and never above that repository (a ceiling). Only
plumbing that reads objects is used: nothing that checks files out, so no filter, no
``textconv`` and no attribute of the repository is ever applied.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sandbox.proc import run as run_program

GIT_TIMEOUT_S = 120
MAX_GIT_OUTPUT = 256 * 1024**2  # a listing of a large tree; more is cut, and then fails closed

# Settings given on the command line outrank the repository's own .git/config.
_PINNED_CONFIG = (
    "core.fsmonitor=false",  # a program of the repository's choice, run on index reads
    "core.hooksPath=/dev/null",
    "protocol.allow=never",  # a partial clone must not fetch missing objects
    "credential.helper=",
    "log.showSignature=false",  # gpg.program would run
    "core.pager=cat",
)


@dataclass(frozen=True, kw_only=True)
class GitInvocation:
    """A planned git command: the argv and the complete environment it runs with."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)


def git_invocation(top: Path, args: Sequence[str]) -> GitInvocation:
    """How git is run on the repository at ``top`` (pure; see the module docstring)."""
    argv = ["git"]
    for setting in _PINNED_CONFIG:
        argv += ["-c", setting]
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": "/nonexistent",
        "LC_ALL": "C",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_ATTR_NOSYSTEM": "1",
        "GIT_NO_REPLACE_OBJECTS": "1",
        "GIT_CEILING_DIRECTORIES": str(top.parent),
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_OPTIONAL_LOCKS": "0",
    }
    return GitInvocation(argv=(*argv, "-C", str(top), *args), env=env)


def run_git(top: Path, *args: str, timeout: float = GIT_TIMEOUT_S) -> bytes | None:
    """git's stdout, or None when it fails.

    Raises:
        HostToolMissing: git is not installed.
        HostToolFailed: it timed out.
    """
    planned = git_invocation(top, args)
    done = run_program(
        planned.argv, env=planned.env, timeout=timeout, max_output=MAX_GIT_OUTPUT, check=False
    )
    return done.stdout if done.returncode == 0 else None


def repository_top(directory: Path, *, euid: int | None = None) -> Path | None:
    """The nearest directory at or above ``directory`` holding ``.git``, if this user owns
    it and its ``.git`` (a repository someone else placed above a source is not read:
    CVE-2022-24765); None when there is none, or it is someone else's."""
    try:
        start = directory.resolve(strict=True)
    except OSError:
        return None
    for candidate in (start, *start.parents):
        try:
            marker = (candidate / ".git").lstat()
        except FileNotFoundError:
            continue
        except OSError:
            return None
        try:
            owner = candidate.stat().st_uid
        except OSError:
            return None
        uid = os.geteuid() if euid is None else euid
        return candidate if owner == uid and marker.st_uid == uid else None
    return None


def history_rewritten(top: Path) -> bool:
    """The repository has replace refs or grafts (which make a commit read as another;
    a rewritten repository proves nothing), or that cannot be told."""
    replaced = run_git(top, "for-each-ref", "--format=%(refname)", "refs/replace/")
    grafts = run_git(top, "rev-parse", "--git-path", "info/grafts")
    if replaced is None or grafts is None:
        return True
    grafts_path = top / os.fsdecode(grafts.strip())  # relative to top, or absolute
    return bool(replaced.strip()) or os.path.lexists(grafts_path)
