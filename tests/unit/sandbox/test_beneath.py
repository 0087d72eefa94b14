"""Paths checked by resolution: the symlink-chain escape and links on the way."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import pytest

from sandbox.beneath import make_dirs_beneath, open_beneath, read_link_beneath, resolve_beneath
from sandbox.errors import OutputError
from sandbox.outputs import collect_outputs, copy_outputs
from tests.chains import lexically_inside, make_chain


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "deep" / "tree"
    root.mkdir(parents=True)
    make_chain(root)
    return root


def test_the_chain_reads_as_inside_but_reaches_the_host(tree: Path) -> None:
    # negative control: the spelling passes the old check, and the kernel reads the host file
    assert lexically_inside("a", os.readlink(tree / "a"))
    assert (tree / "a").read_bytes() == Path("/etc/passwd").read_bytes()
    # the defence: resolved step by step, it leaves the tree
    assert resolve_beneath(tree, "a") is None


def test_ordinary_links_resolve_inside(tree: Path) -> None:
    assert resolve_beneath(tree, "ok") == PurePosixPath("real.txt")
    assert resolve_beneath(tree, "x0/x1/../x1") == PurePosixPath("x0/x1")
    dd = "/".join(f"x{i}" for i in range(20)) + "/dd"
    assert resolve_beneath(tree, dd) == PurePosixPath(".")  # the root itself: inside
    assert resolve_beneath(tree, "missing/file") == PurePosixPath("missing/file")  # dangling
    assert resolve_beneath(tree, "missing/../../x") is None
    os.symlink("/etc", tree / "abs")
    assert resolve_beneath(tree, "abs") is None
    os.symlink("loop", tree / "loop")
    assert resolve_beneath(tree, "loop") is None


@pytest.mark.parametrize("kernel", [True, False], ids=["openat2", "walk"])
def test_open_beneath_follows_no_link(tree: Path, kernel: bool) -> None:
    fd = open_beneath(tree, "real.txt", kernel=kernel)
    with os.fdopen(fd, "rb") as stream:
        assert stream.read() == b"real\n"  # control: a plain file opens
    (tree / "sub").mkdir()
    (tree / "sub" / "f").write_text("f")
    os.symlink("sub", tree / "via")
    for path in ("a", "ok", "via/f"):
        with pytest.raises(OSError):
            os.close(open_beneath(tree, path, kernel=kernel))
    for bad in ("../x", "/etc/passwd", "sub/../real.txt", ""):
        with pytest.raises(ValueError):
            open_beneath(tree, bad, kernel=kernel)
    assert read_link_beneath(tree, "ok") == "real.txt"
    assert read_link_beneath(tree, "real.txt") is None
    with pytest.raises(OSError):
        read_link_beneath(tree, "via/f")


def test_make_dirs_beneath_does_not_walk_through_a_link(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    os.symlink(outside, dest / "d")
    with pytest.raises(OSError):
        make_dirs_beneath(dest, "d/sub")
    assert list(outside.iterdir()) == []
    os.close(make_dirs_beneath(dest, "e/f"))  # control
    assert (dest / "e" / "f").is_dir()


def test_outputs_refuse_the_chain_and_keep_an_inside_link(tree: Path, tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="symlink leaving"):
        collect_outputs(tree, ("a",))
    manifest = collect_outputs(tree, ("ok", "real.txt"))
    dest = tmp_path / "published"
    copy_outputs(tree, manifest, dest)
    assert os.readlink(dest / "ok") == "real.txt" and (dest / "ok").read_text() == "real\n"
