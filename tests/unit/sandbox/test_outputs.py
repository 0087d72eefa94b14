"""Outputs: glob resolution, refusal of unsafe files, the canonical digest."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from sandbox.errors import OutputError
from sandbox.outputs import (
    OutputFile,
    OutputManifest,
    canonical_digest,
    collect_outputs,
    copy_outputs,
)


@pytest.fixture
def build_dir(tmp_path: Path) -> Path:
    root = tmp_path / "build"
    (root / "dist" / "sub").mkdir(parents=True)
    (root / "hello").write_bytes(b"\x7fELF binary")
    (root / "hello").chmod(0o755)
    (root / "dist" / "a.tar.gz").write_bytes(b"a")
    (root / "dist" / "b.tar.gz").write_bytes(b"b")
    (root / "dist" / "notes.txt").write_bytes(b"n")
    (root / "dist" / "sub" / "c.tar.gz").write_bytes(b"c")
    (root / ".hidden").write_bytes(b"h")
    return root


def paths(manifest: OutputManifest) -> list[str]:
    return [f.path for f in manifest.files]


def test_globs(build_dir: Path) -> None:
    manifest = collect_outputs(build_dir, ("hello", "dist/*.tar.gz"))
    assert paths(manifest) == ["dist/a.tar.gz", "dist/b.tar.gz", "hello"]
    hello = manifest.files[-1]
    assert hello.mode == 0o755 and hello.size == len(b"\x7fELF binary")


def test_globstar_and_directories(build_dir: Path) -> None:
    assert paths(collect_outputs(build_dir, ("**/*.tar.gz",))) == [
        "dist/a.tar.gz",
        "dist/b.tar.gz",
        "dist/sub/c.tar.gz",
    ]
    assert paths(collect_outputs(build_dir, ("dist",))) == [
        "dist/a.tar.gz",
        "dist/b.tar.gz",
        "dist/notes.txt",
        "dist/sub/c.tar.gz",
    ]
    assert paths(collect_outputs(build_dir, (".hidden",))) == [".hidden"]


def test_pattern_matching_nothing_fails(build_dir: Path) -> None:
    with pytest.raises(OutputError, match="'missing' matched nothing"):
        collect_outputs(build_dir, ("hello", "missing"))


def test_setuid_and_setgid_are_refused(build_dir: Path) -> None:
    (build_dir / "hello").chmod(0o4755)
    with pytest.raises(OutputError, match="setuid"):
        collect_outputs(build_dir, ("hello",))
    (build_dir / "hello").chmod(0o2755)
    with pytest.raises(OutputError, match="setgid"):
        collect_outputs(build_dir, ("hello",))
    (build_dir / "hello").chmod(0o755)  # negative control: the same file is fine without it
    assert paths(collect_outputs(build_dir, ("hello",))) == ["hello"]


def test_special_files_are_refused(build_dir: Path) -> None:
    os.mkfifo(build_dir / "pipe")
    with pytest.raises(OutputError, match="special file"):
        collect_outputs(build_dir, ("pipe",))


@pytest.mark.parametrize("target", ["/etc/passwd", "../outside", "dist/../../escape"])
def test_links_leaving_the_build_dir_are_refused(build_dir: Path, target: str) -> None:
    os.symlink(target, build_dir / "link")
    with pytest.raises(OutputError, match="symlink leaving"):
        collect_outputs(build_dir, ("link",))


def test_links_inside_are_kept_as_links(build_dir: Path, tmp_path: Path) -> None:
    os.symlink("../hello", build_dir / "dist" / "hello-link")
    manifest = collect_outputs(build_dir, ("dist/hello-link",))
    assert manifest.files[0].target == "../hello"
    dest = tmp_path / "artifacts"
    copy_outputs(build_dir, manifest, dest)
    assert os.readlink(dest / "dist" / "hello-link") == "../hello"


def test_a_symlinked_directory_is_not_followed(build_dir: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key").write_text("private")
    os.symlink(secret, build_dir / "dist" / "escape")
    with pytest.raises(OutputError, match="symlink leaving"):
        collect_outputs(build_dir, ("dist",))


def test_copy_keeps_content_and_mode(build_dir: Path, tmp_path: Path) -> None:
    manifest = collect_outputs(build_dir, ("hello", "dist/sub"))
    dest = tmp_path / "artifacts"
    copy_outputs(build_dir, manifest, dest)
    assert (dest / "hello").read_bytes() == b"\x7fELF binary"
    assert (dest / "hello").stat().st_mode & 0o7777 == 0o755
    assert (dest / "dist" / "sub" / "c.tar.gz").read_bytes() == b"c"


def _file(path: str, digest: str = "0" * 64, mode: int = 0o644) -> OutputFile:
    return OutputFile(path=path, sha256=digest, size=1, mode=mode)  # type: ignore[arg-type]


def test_canonical_digest_is_order_independent_and_covers_path_mode_content() -> None:
    a, b = _file("a"), _file("b", "1" * 64)
    assert OutputManifest.of([a, b]).digest == OutputManifest.of([b, a]).digest
    base = canonical_digest((a, b))
    assert canonical_digest((a, _file("b", "2" * 64))) != base
    assert canonical_digest((a, _file("b", "1" * 64, mode=0o755))) != base
    assert canonical_digest((a, _file("c", "1" * 64))) != base
    # Only the executable bit counts: the umask decides the rest.
    assert canonical_digest((a, _file("b", "1" * 64, mode=0o664))) == base
    assert canonical_digest((a, _file("b", "1" * 64, mode=0o600))) == base
    assert canonical_digest((a, _file("b", "1" * 64, mode=0o700))) == canonical_digest(
        (a, _file("b", "1" * 64, mode=0o775))
    )
    # The format is a public contract (README, "Digests"): recompute it by hand.
    fields = [b"f", b"644", b"a", b"0" * 64, b"f", b"644", b"b", b"1" * 64]
    by_hand = hashlib.sha256(b"hermetic-outputs-v2\x00" + b"".join(f + b"\x00" for f in fields))
    assert (
        base
        == by_hand.hexdigest()
        == "d6661a1dba68c05167b0af85baca08d09e539132f042395df91cb446c498b980"
    )
