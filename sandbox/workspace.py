"""Per-build scratch space on the host, and the output directory a build publishes into."""

from __future__ import annotations

import os
import shutil
import stat
import struct
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from sandbox.errors import HostToolMissing, UserError
from sandbox.lifecycle import reap_directories, stamped_prefix
from sandbox.plan import Workspace
from sandbox.source_tree import OUT_MARKER

_PT_INTERP = 3


def require_static(busybox: Path) -> None:
    """Check that the runner's busybox is statically linked, so it runs in any image.

    Raises:
        HostToolMissing: it is absent or dynamically linked.
    """
    try:
        header = busybox.read_bytes()[: 1 << 16]
    except OSError:
        raise HostToolMissing(tool=str(busybox), package="busybox-static") from None
    if header[:4] != b"\x7fELF" or header[4] != 2:
        raise HostToolMissing(tool=f"{busybox} (a 64-bit ELF)", package="busybox-static")
    little = header[5] == 1
    order = "<" if little else ">"
    phoff = struct.unpack_from(order + "Q", header, 0x20)[0]
    phentsize, phnum = struct.unpack_from(order + "HH", header, 0x36)
    for index in range(phnum):
        offset = phoff + index * phentsize
        if (
            offset + 4 <= len(header)
            and struct.unpack_from(order + "I", header, offset)[0] == _PT_INTERP
        ):
            raise HostToolMissing(tool=f"{busybox} (statically linked)", package="busybox-static")


def _force_remove(function: Callable[..., Any], path: str, _error: BaseException) -> None:
    # A build may leave directories without write permission; we own them, so open up and retry.
    parent = Path(path).parent
    parent.chmod(parent.stat().st_mode | stat.S_IRWXU)
    if Path(path).is_dir() and not Path(path).is_symlink():
        Path(path).chmod(stat.S_IRWXU)
    function(path)


def remove_tree(path: Path) -> None:
    """Remove a directory tree even when the build took permissions away."""

    def onerror(function: Callable[..., Any], name: str, info: Any) -> None:
        _force_remove(function, name, info[1])

    shutil.rmtree(path, onerror=onerror)


@contextmanager
def build_workspace(work_dir: Path, busybox: Path, faketime: Path) -> Iterator[Workspace]:
    """A fresh scratch directory with the staged source, the hand-back dir and the runner."""
    require_static(busybox)
    work_dir.mkdir(parents=True, exist_ok=True)
    # Stamped with this process: a later command removes it if this process is killed.
    root = Path(tempfile.mkdtemp(dir=work_dir, prefix=stamped_prefix("build")))
    try:
        (root / "src").mkdir()
        (root / "out").mkdir()
        runner = root / "runner.sh"
        runner.write_bytes(resources.files("sandbox").joinpath("runner.sh").read_bytes())
        runner.chmod(0o444)
        yield Workspace(
            source=root / "src",
            out=root / "out",
            runner=runner,
            busybox=busybox,
            container_log=root / "container.log",
            seccomp_profile=root / "seccomp.json",
            source_archive=root / "src.tar",
            faketime=faketime,
        )
    finally:
        remove_tree(root)


class OutDirError(UserError):
    """The output directory cannot be used."""


def claim_dir(path: Path, made_by: str) -> bool:
    """Make ``path`` a fresh, marked directory of hermetic's.

    A directory hermetic made before (it holds the marker) is replaced, so nothing stale
    survives; the marker keeps it out of later source trees.

    Returns:
        False, touching nothing, when ``path`` is someone else's non-empty directory.
    """
    if path.exists():
        if not (path / OUT_MARKER).exists() and any(path.iterdir()):
            return False
        remove_tree(path)
    path.mkdir(parents=True)
    (path / OUT_MARKER).write_text(f"made by {made_by}; safe to replace\n")
    return True


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write a file so that a reader sees the old content or the whole new one."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        Path(temp).chmod(mode)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


@contextmanager
def publishing(out_dir: Path) -> Iterator[Path]:
    """Yield a private directory that replaces ``out_dir`` once the block succeeds.

    A directory hermetic made before (it holds the marker file) is replaced; any other
    non-empty directory is refused, so no user file is ever overwritten. On error
    the partial directory is removed and ``out_dir`` is left as it was.

    Raises:
        OutDirError: ``out_dir`` exists and is not hermetic's.
    """
    foreign = out_dir.exists() and not (out_dir / OUT_MARKER).exists()
    if foreign and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise OutDirError(
            f"{out_dir} exists and is not a hermetic output directory; "
            "choose another --out or remove it"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    reap_directories(out_dir.parent, "partial")  # what a killed hermetic left half-written
    partial = Path(
        tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.{stamped_prefix('partial')}")
    )
    try:
        (partial / OUT_MARKER).write_text("made by hermetic build; safe to replace\n")
        yield partial
        if out_dir.exists():
            remove_tree(out_dir)
        partial.chmod(0o755)
        os.replace(partial, out_dir)
    finally:
        if partial.exists():
            remove_tree(partial)
