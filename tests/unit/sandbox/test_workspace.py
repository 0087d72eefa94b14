from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sandbox.errors import HostToolMissing
from sandbox.source_tree import OUT_MARKER
from sandbox.workspace import OutDirError, publishing, remove_tree, require_static


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
