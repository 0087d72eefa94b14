"""The git commit a source is named by only when the commit's content is exactly the tree
built (real git, no podman)."""

from __future__ import annotations

import os
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


# --- a hostile repository (review gate-1, findings 1 and 2) ------------------------------


def smudge_filter(repo: Path, marker: Path, rewrite: str = "cat") -> None:
    """A filter in the repository's own config that records that it ran: what a hostile
    checkout (or a repository someone else owns above the source) can carry."""
    git(repo, "config", "filter.x.smudge", f"sh -c 'touch {marker}; {rewrite}'")
    (repo / ".git" / "info").mkdir(exist_ok=True)
    (repo / ".git" / "info" / "attributes").write_text("* filter=x\n")


def test_a_smudge_filter_in_the_repository_never_runs(checkout: Path, tmp_path: Path) -> None:
    marker = tmp_path / "filter-ran"
    smudge_filter(checkout, marker, rewrite="sed s/return/exit/")
    # the working tree is what the filter would produce from the commit
    (checkout / "sub" / "main.c").write_text("int main(void) { exit 0; }\n")
    source = git_source(checkout, tree_digest(checkout))
    assert not marker.exists(), "git ran the repository's filter on the host"
    assert source.git_commit is None  # the tree is not the commit's content


def test_a_filter_in_the_config_does_not_spoil_an_honest_checkout(
    checkout: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "filter-ran"
    smudge_filter(checkout, marker)
    source = git_source(checkout, tree_digest(checkout))
    assert source.git_commit == git(checkout, "rev-parse", "HEAD")  # positive control
    assert not marker.exists()


def test_a_repository_above_the_source_runs_no_filter(tmp_path: Path) -> None:
    """shared.sh: a repository in a parent directory, its filter over every path."""
    marker = tmp_path / "filter-ran"
    top = tmp_path / "shared"
    (top / "proj" / "src").mkdir(parents=True)
    (top / "proj" / "src" / "f").write_text("x\n")
    git(top, "init", "-q")
    git(top, "add", ".")
    git(top, "commit", "-qm", "m")
    smudge_filter(top, marker)
    (top / "proj" / "src" / "f").write_text("mine\n")  # the victim's own source
    source = git_source(top / "proj" / "src", tree_digest(top / "proj" / "src"))
    assert not marker.exists(), "git ran a filter of the repository above the source"
    assert source.git_commit is None


def evil_replacement(repo: Path) -> tuple[str, str]:
    """gitspoof.sh: an evil commit, and a replace ref making the honest one read as it."""
    honest = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "evil")
    (repo / "sub" / "main.c").write_text("int main(void) { return 66; }\n")
    (repo / "vendored.bin").write_bytes(b"\x7fELF backdoor")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "evil")
    evil = git(repo, "rev-parse", "HEAD")
    git(repo, "replace", honest, evil)
    git(repo, "checkout", "-q", honest)  # HEAD: the honest commit; the tree: the evil one
    return honest, evil


def test_a_replace_ref_cannot_name_the_honest_commit_for_an_evil_tree(checkout: Path) -> None:
    honest, _ = evil_replacement(checkout)
    assert (checkout / "vendored.bin").exists()  # control: the replacement is in effect
    source = git_source(checkout, tree_digest(checkout))
    assert source.git_commit is None, f"{honest} named for a tree it does not hold"


def test_replace_refs_or_grafts_make_no_commit_provable(checkout: Path) -> None:
    (checkout / "NEWS").write_text("1.1\n")
    git(checkout, "add", "NEWS")
    git(checkout, "commit", "-qm", "1.1")
    commit = git(checkout, "rev-parse", "HEAD")
    assert git_source(checkout, tree_digest(checkout)).git_commit == commit  # control
    git(checkout, "replace", "--graft", commit)  # HEAD replaced by a parentless copy
    assert git_source(checkout, tree_digest(checkout)).git_commit is None
    git(checkout, "replace", "-d", commit)
    assert git_source(checkout, tree_digest(checkout)).git_commit == commit
    (checkout / ".git" / "info").mkdir(exist_ok=True)
    (checkout / ".git" / "info" / "grafts").write_text(f"{commit}\n")
    assert git_source(checkout, tree_digest(checkout)).git_commit is None


def test_a_repository_someone_else_owns_is_not_read(checkout: Path) -> None:
    """shared.sh's other half: run as another user (root, say), a checkout that this user
    does not own names no commit (git's CVE-2022-24765 rule, no safe.directory=*)."""
    digest = tree_digest(checkout)
    assert git_source(checkout, digest).git_commit is not None  # control: the owner
    assert git_source(checkout, digest, euid=os.getuid() + 1).git_commit is None
