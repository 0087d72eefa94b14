"""Per-build scratch space on the host, and the output directory a build publishes into."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

from sandbox import beneath
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


def remove_tree(path: Path) -> None:
    """Remove a directory tree even when the build took permissions away, at any depth
    and without following a link (see :func:`sandbox.beneath.remove_tree`)."""
    beneath.remove_tree(path)


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


class UnsafeWrite(UserError):
    """A file hermetic would write is a symbolic link, or exists where it must not."""


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write a file so that a reader sees the old content or the whole new one.

    The only safe way to write into a directory others shape (a project's checkout):
    the data goes to a fresh temporary name (``O_EXCL | O_NOFOLLOW``: a link planted
    there is never followed), which is then renamed over ``path``. A rename replaces a
    link instead of writing through it; a link already at ``path`` is refused, so that
    a project cannot redirect hermetic's writes (``hermetic.toml -> ~/.bashrc``).

    Raises:
        UnsafeWrite: ``path`` is a symbolic link.
        OSError: the directory cannot be written.
    """
    _write_new(path, data, mode, replace=True)


def create_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Create ``path`` with ``data``, whole or not at all, never replacing anything.

    The data is written under a temporary name and hard-linked to ``path``: the link
    fails if anything (a file, a dangling link) appeared there meanwhile, and a reader
    never sees a half-written file.

    Raises:
        UnsafeWrite: something exists at ``path``.
        OSError: the directory cannot be written.
    """
    _write_new(path, data, mode, replace=False)


def _write_new(path: Path, data: bytes, mode: int, *, replace: bool) -> None:
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    temp = ""
    try:
        try:
            existing = os.stat(path.name, dir_fd=directory, follow_symlinks=False)
        except FileNotFoundError:
            existing = None
        if existing is not None and stat.S_ISLNK(existing.st_mode):
            raise UnsafeWrite(
                f"{path} is a symbolic link; hermetic does not write through links "
                "(replace it by the file itself)"
            )
        if existing is not None and not replace:
            raise UnsafeWrite(f"{path} exists; it is never overwritten")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        for _ in range(100):
            temp = f".{path.name}.{secrets.token_hex(6)}"
            try:
                fd = os.open(temp, flags, 0o600, dir_fd=directory)
                break
            except FileExistsError:
                continue
            except OSError as e:  # its name alone (".x.1f2e…") would tell the user nothing
                raise OSError(e.errno, f"cannot write {path}: {e.strerror}") from None
        else:
            raise UnsafeWrite(f"{path.parent}: no free temporary name")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fchmod(out.fileno(), mode)
            os.fsync(out.fileno())
        if replace:
            os.replace(temp, path.name, src_dir_fd=directory, dst_dir_fd=directory)
        else:
            try:
                os.link(
                    temp, path.name, src_dir_fd=directory, dst_dir_fd=directory,
                    follow_symlinks=False,
                )  # fmt: skip
            except FileExistsError:
                raise UnsafeWrite(f"{path} exists; it is never overwritten") from None
            os.unlink(temp, dir_fd=directory)
        temp = ""
    finally:
        if temp:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=directory)
        os.close(directory)


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
