"""git on an untrusted checkout: a clean environment, no configuration but the
repository's, nothing the repository configures is run, no repository of another user."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from sandbox.build import resolve_source_date_epoch
from sandbox.git_checkout import git_invocation, repository_top
from sandbox.spec import Spec
from tests.conftest import write_spec

SPEC = '[build]\nimage = "test-image"\ncommand = ["make"]\noutputs = ["out"]\n'
COMMIT_TIME = 1700000000


def git(directory: Path, *args: str, stdin: bytes | None = None) -> str:
    done = subprocess.run(
        ["git", "-C", str(directory), *args],
        check=True,
        capture_output=True,
        input=stdin,
        env={
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@t",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@t",
            "GIT_CONFIG_NOSYSTEM": "1",
            "HOME": str(directory),
            "PATH": "/usr/bin:/bin",
        },
    )
    return done.stdout.decode().strip()


def test_git_is_planned_with_a_clean_environment_and_a_ceiling(tmp_path: Path) -> None:
    planned = git_invocation(tmp_path / "repo", ["ls-tree", "HEAD"])
    assert planned.argv[-4:] == ("-C", str(tmp_path / "repo"), "ls-tree", "HEAD")
    assert not any("safe.directory" in arg for arg in planned.argv)  # git's ownership check
    for setting in ("core.fsmonitor=false", "core.hooksPath=/dev/null", "protocol.allow=never"):
        assert setting in planned.argv
    assert planned.env == {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": "/nonexistent",
        "LC_ALL": "C",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_ATTR_NOSYSTEM": "1",
        "GIT_NO_REPLACE_OBJECTS": "1",
        "GIT_CEILING_DIRECTORIES": str(tmp_path),
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_OPTIONAL_LOCKS": "0",
    }


def test_the_repository_is_the_nearest_one_this_user_owns(tmp_path: Path) -> None:
    top = tmp_path / "repo"
    (top / "sub").mkdir(parents=True)
    git(top, "init", "-q")
    assert repository_top(top / "sub") == top  # positive control
    assert repository_top(tmp_path) is None
    assert repository_top(top / "sub", euid=os.getuid() + 1) is None  # as another user


def signed_looking_head(repo: Path, marker: Path) -> None:
    """A HEAD commit with a signature header, and a repository config that would run a
    program of its choice to check it on `git log`."""
    (repo / "f").write_text("x\n")
    git(repo, "add", "f")
    git(repo, "commit", "-qm", "x")
    tree = git(repo, "rev-parse", "HEAD^{tree}")
    commit = (
        f"tree {tree}\nauthor t <t@t> {COMMIT_TIME} +0000\ncommitter t <t@t> {COMMIT_TIME} +0000\n"
        "gpgsig -----BEGIN PGP SIGNATURE-----\n \n x\n -----END PGP SIGNATURE-----\n\nsigned\n"
    )
    signed = git(repo, "hash-object", "-t", "commit", "-w", "--stdin", stdin=commit.encode())
    git(repo, "reset", "-q", "--soft", signed)
    program = repo.parent / "fake-gpg"
    program.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    program.chmod(0o755)
    git(repo, "config", "gpg.program", str(program))
    git(repo, "config", "log.showSignature", "true")


def test_source_date_epoch_from_git_runs_nothing_the_repository_configures(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "gpg-ran"
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    signed_looking_head(repo, marker)
    spec = Spec.from_toml(write_spec(repo, SPEC))
    assert resolve_source_date_epoch(spec) == (COMMIT_TIME, "git")
    assert not marker.exists(), "git log ran the repository's gpg.program"
