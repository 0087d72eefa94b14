"""The git commit a source is named by only when the commit's content is exactly the tree
built (real git, no podman)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from rebuilder.attest.git_source import git_source, repository_uri
from sandbox.source_tree import tree_digest


def git(directory: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(directory), *args],
        check=True,
        capture_output=True,
        text=True,
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
    return done.stdout.strip()


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "sub").mkdir(parents=True)
    (repo / "hermetic.toml").write_text("[build]\n")
    (repo / "sub" / "main.c").write_text("int main(void) { return 0; }\n")
    (repo / "run.sh").write_text("#!/bin/sh\n")
    (repo / "run.sh").chmod(0o755)
    git(repo, "init", "-q")
    git(repo, "remote", "add", "origin", "https://someone:s3cret@git.example/acme/hello.git")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "release")
    return repo


def test_a_clean_checkout_is_named_by_its_commit_without_credentials(checkout: Path) -> None:
    commit = git(checkout, "rev-parse", "HEAD")
    source = git_source(checkout, tree_digest(checkout))
    assert source.git_commit == commit
    assert source.uri == f"git+https://git.example/acme/hello.git@{commit}"
    assert "s3cret" not in (source.uri or "")


def test_a_subdirectory_names_its_path(checkout: Path) -> None:
    source = git_source(checkout / "sub", tree_digest(checkout / "sub"))
    assert source.uri is not None and source.uri.endswith("#sub")


@pytest.mark.parametrize("change", ["modified", "untracked"])
def test_a_tree_that_is_not_the_commit_is_named_by_its_digest_only(
    checkout: Path, change: str
) -> None:
    if change == "modified":
        (checkout / "sub" / "main.c").write_text("int main(void) { return 1; }\n")
    else:
        (checkout / "prebuilt").write_bytes(b"\x7fELF")
    digest = tree_digest(checkout)
    source = git_source(checkout, digest)
    assert source.git_commit is None and source.uri is None and source.sha256 == digest


def test_not_a_checkout_is_named_by_its_digest_only(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "f").write_text("x")
    digest = tree_digest(tmp_path / "plain")
    assert git_source(tmp_path / "plain", digest).git_commit is None


@pytest.mark.parametrize(
    ("remote", "uri"),
    [
        ("git@github.com:acme/hello.git", "git+ssh://git@github.com/acme/hello.git"),
        ("https://tok@host:8443/a/b", "git+https://host:8443/a/b"),
        ("/srv/git/hello", None),
        ("file:///srv/git/hello", None),
    ],
)
def test_remotes_become_uris_others_can_name(remote: str, uri: str | None) -> None:
    assert repository_uri(remote) == uri
