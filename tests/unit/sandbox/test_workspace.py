from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from sandbox.errors import HostToolMissing
from sandbox.source_tree import OUT_MARKER
from sandbox.workspace import (
    OutDirError,
    UnsafeWrite,
    create_file,
    publishing,
    remove_tree,
    require_static,
    write_atomically,
)


def test_publishing_creates_and_replaces_its_own_directory(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with publishing(out) as partial:
        (partial / "result.json").write_text("1")
    assert (out / "result.json").read_text() == "1" and (out / OUT_MARKER).exists()
    with publishing(out) as partial:
        (partial / "result.json").write_text("2")
    assert (out / "result.json").read_text() == "2"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_publishing_never_overwrites_a_foreign_directory(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    with pytest.raises(OutDirError, match="not a hermetic output directory"), publishing(out):
        pass
    assert (out / "thesis.tex").read_text() == "years of work"


def test_publishing_keeps_the_old_results_on_error(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with publishing(out) as partial:
        (partial / "result.json").write_text("old")
    with pytest.raises(RuntimeError), publishing(out) as partial:
        (partial / "result.json").write_text("half")
        raise RuntimeError
    assert (out / "result.json").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_remove_tree_copes_with_closed_permissions(tmp_path: Path) -> None:
    locked = tmp_path / "tree" / "locked"
    locked.mkdir(parents=True)
    (locked / "file").write_text("x")
    locked.chmod(0o500)
    remove_tree(tmp_path / "tree")
    assert not (tmp_path / "tree").exists()


def test_runner_busybox_must_be_static(tmp_path: Path) -> None:
    require_static(Path("/bin/busybox"))  # busybox-static, installed by the set-up
    dynamic = shutil.which("ls")
    assert dynamic is not None
    with pytest.raises(HostToolMissing, match="busybox-static"):
        require_static(Path(dynamic))
    with pytest.raises(HostToolMissing, match="busybox-static"):
        require_static(tmp_path / "absent")


def test_atomic_writes_never_follow_a_link(tmp_path: Path) -> None:
    """A project cannot point hermetic's writes elsewhere (review real-1 #3): a link at
    the target is refused, a link planted at a temporary name is never written through."""
    victim = tmp_path / "victim"
    victim.write_text("precious")
    project = tmp_path / "project"
    project.mkdir()
    (project / "hermetic.lock").symlink_to(victim)
    with pytest.raises(UnsafeWrite, match="symbolic link"):
        write_atomically(project / "hermetic.lock", b"{}")
    # the temporary names of the old writers (.NAME.tmp, .NAME.pin), planted as links
    for name in (".hermetic.toml.tmp", ".hermetic.toml.pin", ".hermetic.toml."):
        (project / name).symlink_to(victim)
    write_atomically(project / "hermetic.toml", b"[build]\n")
    assert victim.read_text() == "precious"
    assert (project / "hermetic.toml").read_bytes() == b"[build]\n"
    assert not (project / "hermetic.toml").is_symlink()
    assert oct((project / "hermetic.toml").stat().st_mode & 0o777) == oct(0o644)
    # control: the same path without the link is replaced whole
    write_atomically(project / "hermetic.toml", b"[build]\ncommand = []\n", mode=0o600)
    assert (project / "hermetic.toml").read_bytes() == b"[build]\ncommand = []\n"
    assert oct((project / "hermetic.toml").stat().st_mode & 0o777) == oct(0o600)
    assert sorted(p.name for p in project.iterdir() if p.name.startswith(".hermetic.toml.")) == [
        ".hermetic.toml.",
        ".hermetic.toml.pin",
        ".hermetic.toml.tmp",
    ], "no temporary file is left behind"


def test_create_file_never_replaces_anything(tmp_path: Path) -> None:
    target = tmp_path / "hermetic.toml"
    create_file(target, b"one\n")
    assert target.read_text() == "one\n"
    with pytest.raises(UnsafeWrite, match="exists"):
        create_file(target, b"two\n")
    assert target.read_text() == "one\n"
    dangling = tmp_path / "dangling.toml"
    dangling.symlink_to(tmp_path / "nowhere" / "bashrc")
    with pytest.raises(UnsafeWrite, match="symbolic link"):
        create_file(dangling, b"x")
    assert not (tmp_path / "nowhere").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in any directory")
def test_a_directory_that_cannot_be_written_is_named_in_the_error(tmp_path: Path) -> None:
    locked = tmp_path / "images"
    locked.mkdir()
    write_atomically(locked / "lock.json", b"{}")  # control: writable, it is written
    locked.chmod(0o555)
    try:
        with pytest.raises(OSError, match=f"cannot write {locked / 'lock.json'}: Permission"):
            write_atomically(locked / "lock.json", b"{}\n")
        assert os.listdir(locked) == ["lock.json"]  # no temporary file left
    finally:
        locked.chmod(0o755)
