"""The source tree digest is machine independent and covers exactly what the build sees."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path, PurePath

import pytest

from sandbox.errors import InputError
from sandbox.source_tree import (
    OUT_MARKER,
    credential_in,
    place_file,
    set_mtimes,
    stage_source,
    tree_digest,
)


def make_tree(root: Path) -> Path:
    (root / "src").mkdir(parents=True)
    (root / "src" / "main.c").write_text("int main(void){return 0;}\n")
    (root / "configure").write_text("#!/bin/sh\n")
    (root / "configure").chmod(0o755)
    (root / "empty").mkdir()
    os.symlink("src/main.c", root / "link")
    return root


def test_same_tree_same_digest_regardless_of_place_time_and_umask(tmp_path: Path) -> None:
    one = make_tree(tmp_path / "one")
    two = tmp_path / "elsewhere" / "two"
    shutil.copytree(one, two, symlinks=True)
    set_mtimes(two, 12345)
    (two / "src" / "main.c").chmod(0o664)  # a group-writable checkout
    (two / "configure").chmod(0o775)
    assert tree_digest(one) == tree_digest(two)


def _relink(link: Path, target: str) -> None:
    link.unlink()
    os.symlink(target, link)


@pytest.mark.parametrize(
    "change",
    [
        lambda r: (r / "src" / "main.c").write_text("int main(void){return 1;}\n"),
        lambda r: (r / "configure").chmod(0o644),
        lambda r: _relink(r / "link", "configure"),
        lambda r: (r / "new-empty-dir").mkdir(),
        lambda r: (r / "src" / "main.c").rename(r / "src" / "other.c"),
    ],
    ids=["content", "exec bit", "symlink target", "new directory", "rename"],
)
def test_every_change_changes_the_digest(tmp_path: Path, change: object) -> None:
    root = make_tree(tmp_path / "tree")
    before = tree_digest(root)
    change(root)  # type: ignore[operator]
    assert tree_digest(root) != before


def test_git_and_hermetic_output_dirs_are_not_source(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "tree")
    before = tree_digest(root)
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / "hermetic-out" / "run1").mkdir(parents=True)
    (root / "hermetic-out" / OUT_MARKER).touch()
    (root / "hermetic-out" / "run1" / "result.json").write_text("{}")
    assert tree_digest(root) == before


def test_special_files_are_refused(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "tree")
    os.mkfifo(root / "pipe")
    with pytest.raises(InputError, match="pipe"):
        tree_digest(root)


def test_staging_copies_exactly_what_it_digests(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "tree")
    staged = tmp_path / "staged"
    snapshot = stage_source(root, staged)
    assert snapshot.digest == tree_digest(root) == tree_digest(staged)
    assert snapshot.files == 2
    assert os.readlink(staged / "link") == "src/main.c"
    assert (staged / "configure").stat().st_mode & 0o777 == 0o755
    assert (staged / "src" / "main.c").stat().st_mode & 0o777 == 0o644
    assert (staged / "empty").is_dir()


def test_set_mtimes_touches_links_not_targets(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "tree")
    os.symlink("/etc/hostname", root / "outside")
    before = Path("/etc/hostname").stat().st_mtime
    set_mtimes(root, 1000)
    assert (root / "src" / "main.c").stat().st_mtime == 1000
    assert os.lstat(root / "outside").st_mtime == 1000
    assert Path("/etc/hostname").stat().st_mtime == before


def test_place_file(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "tree")
    blob = tmp_path / "blob"
    blob.write_bytes(b"dep")
    place_file(blob, root, Path("vendor/dep.tar.gz"))
    assert (root / "vendor" / "dep.tar.gz").read_bytes() == b"dep"
    with pytest.raises(InputError, match="already exists"):
        place_file(blob, root, Path("configure"))


def test_place_file_never_follows_a_symlinked_directory(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "tree")
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, root / "vendor")
    blob = tmp_path / "blob"
    blob.write_bytes(b"dep")
    with pytest.raises(InputError, match="not a plain directory"):
        place_file(blob, root, Path("vendor/dep.tar.gz"))
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "text"),
    [
        (".npmrc", "registry=https://r.example/\n//registry.npmjs.org/:_authToken=npm_LITERAL\n"),
        (".npmrc", "_auth = dXNlcjpwYXNz\n"),
        ("sub/.npmrc", "//npm.example/:_password=aHVudGVyMg==\n"),
        (".yarnrc.yml", "npmAuthToken: npm_abc\n"),
        (".pypirc", "[pypi]\nusername = __token__\npassword = pypi-AgEIcHlwaS5vcmc\n"),
        (".netrc", "machine example.org login alice password s3cret\n"),
        ("pip.conf", "[global]\nindex-url = https://alice:s3cret@pypi.example/simple\n"),
        (".git-credentials", "https://alice:ghp_token@github.com\n"),
        (".docker/config.json", '{"auths": {"r.example": {"auth": "YWxpY2U6czNjcmV0"}}}'),
    ],
)
def test_a_credential_in_the_source_is_refused(tmp_path: Path, name: str, text: str) -> None:
    """review real-1 #7: the source tree goes into the build (whose outputs anyone may
    read) and to rebuilder nodes; a project .npmrc's token was copied into an artifact."""
    source = tmp_path / "src"
    (source / name).parent.mkdir(parents=True, exist_ok=True)
    (source / name).write_text(text)
    with pytest.raises(InputError, match=f"{re.escape(name)}: holds a credential") as caught:
        stage_source(source, tmp_path / "staged")
    assert credential_in(PurePath(name), text.encode()) is not None
    for secret in (
        "LITERAL",
        "dXNlcjpw",
        "aHVudGVy",
        "npm_abc",
        "AgEIcHl",
        "s3cret",
        "ghp_",
        "YWxp",
    ):
        assert secret not in str(caught.value), "the error shows none of the secret"


@pytest.mark.parametrize(
    ("name", "text"),
    [
        (".npmrc", "registry=https://r.example/\n//r.example/:_authToken=${NPM_TOKEN}\n"),
        (".npmrc", "# _authToken=commented-out\nsave-exact=true\n"),
        (".pypirc", "[distutils]\nindex-servers = pypi\n[pypi]\nusername = __token__\n"),
        ("pip.conf", "[global]\nindex-url = https://pypi.example/simple\n"),
        ("config.json", '{"auth": "not a docker file: any project may have one"}'),
        (".netrc.example", "machine x login y password z\n"),
    ],
)
def test_files_without_a_credential_are_staged(tmp_path: Path, name: str, text: str) -> None:
    """Control: the same files without a literal secret (or files that only share a name
    with nothing) are staged as they are."""
    source = tmp_path / "src"
    (source / name).parent.mkdir(parents=True, exist_ok=True)
    (source / name).write_text(text)
    stage_source(source, tmp_path / "staged")
    assert (tmp_path / "staged" / name).read_text() == text
