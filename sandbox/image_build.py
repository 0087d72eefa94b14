"""Building an image from its recipe: mmdebstrap (rootless), a deterministic OCI archive,
a check against the lock, and a load into podman by digest.
"""

from __future__ import annotations

import logging
import os
import platform
import re
import tarfile
import tempfile
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from sandbox.digests import sha256_file
from sandbox.environment import NORMALIZED
from sandbox.errors import ImageError
from sandbox.images import LOCK_FILENAME, ImageDefinition, ImageLock, ImageRecipe
from sandbox.oci import describe_image, write_archive
from sandbox.proc import run as run_program
from sandbox.workspace import remove_tree

log = logging.getLogger(__name__)

_LOCALE_RE = re.compile(r"^[A-Za-z0-9_.@-]+ [A-Za-z0-9_-]+$")
_ARCHITECTURES = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv7l": "armhf",
    "ppc64le": "ppc64el",
    "s390x": "s390x",
    "riscv64": "riscv64",
}
_MMDEBSTRAP_TIMEOUT_S = 3600


class ImageStore(Protocol):
    """Where images are loaded (podman's storage, through the API)."""

    def image_exists(self, reference: str) -> bool: ...

    def image_id(self, reference: str) -> str: ...

    def load_archive(self, archive: Path) -> list[str]: ...


class ImageBuildStatus(StrEnum):
    """What ``hermetic image build`` did."""

    ALREADY_LOADED = "already_loaded"  # the locked image was present; nothing built
    MATCHES_LOCK = "matches_lock"  # built, same digest as the lock, loaded
    LOCKED = "locked"  # built, lock written (new image or --update-lock), loaded
    MISMATCH = "mismatch"  # built, different digest from the lock, not loaded


@dataclass(frozen=True, kw_only=True)
class ImageBuildOutcome:
    """The built image's lock, and how it compares with the recorded one."""

    status: ImageBuildStatus
    built: ImageLock
    recorded: ImageLock | None

    def package_changes(self) -> list[str]:
        """Human lines naming each package whose version differs from the lock."""
        old = self.recorded.packages if self.recorded else {}
        new = self.built.packages
        lines = []
        for name in sorted(set(old) | set(new)):
            if old.get(name) != new.get(name):
                lines.append(f"{name}: {old.get(name, '(absent)')} -> {new.get(name, '(absent)')}")
        return lines


def host_architecture() -> str:
    """The Debian/OCI name of this machine's architecture."""
    machine = platform.machine()
    return _ARCHITECTURES.get(machine, machine)


def customize_hooks(recipe: ImageRecipe) -> list[str]:
    """mmdebstrap hooks that add locales and the build user (pure).

    Raises:
        ImageError: a locale line is malformed or the locales package is missing.
    """
    hooks = []
    if recipe.locales:
        if "locales" not in recipe.packages:
            raise ImageError(
                f"image {recipe.name}: 'locales' must be in packages to generate locales"
            )
        for line in recipe.locales:
            if not _LOCALE_RE.match(line):
                raise ImageError(f"image {recipe.name}: locales: {line!r} is not 'NAME CHARSET'")
        lines = " ".join(f"'{line}'" for line in recipe.locales)
        hooks.append(f'printf \'%s\\n\' {lines} > "$1/etc/locale.gen" && chroot "$1" locale-gen')
    user, uid, gid, home = NORMALIZED.user, NORMALIZED.uid, NORMALIZED.gid, NORMALIZED.home
    hooks.append(
        f"echo '{user}:x:{uid}:{gid}:{user}:{home}:/bin/sh'"
        ' >> "$1/etc/passwd"'
        f" && echo '{user}:x:{gid}:' >> \"$1/etc/group\""
        f' && mkdir -p "$1{home}" && chown {uid}:{gid} "$1{home}"'
    )
    return hooks


def mmdebstrap_argv(recipe: ImageRecipe, rootfs: Path) -> list[str]:
    """The mmdebstrap command that makes the recipe's root filesystem tarball (pure)."""
    argv = [
        "mmdebstrap",
        "--mode=unshare",
        f"--variant={recipe.variant}",
        "--format=tar",
        "--quiet",
    ]
    if recipe.packages:
        argv.append("--include=" + ",".join(recipe.packages))
    if recipe.strip_docs:
        for path in ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*"):
            argv.append(f"--dpkgopt=path-exclude={path}")
        argv.append("--dpkgopt=path-include=/usr/share/doc/*/copyright")
    argv.extend(f"--customize-hook={hook}" for hook in customize_hooks(recipe))
    argv.extend([recipe.suite, str(rootfs), recipe.mirror])
    return argv


def read_packages(rootfs: Path) -> dict[str, str]:
    """Installed package versions, read from the tarball's dpkg status file."""
    with tarfile.open(rootfs) as tar:
        member = next(
            (m for m in tar if m.name.lstrip("./") == "var/lib/dpkg/status" and m.isfile()), None
        )
        if member is None:
            raise ImageError(f"{rootfs}: no var/lib/dpkg/status; not a Debian root filesystem")
        stream = tar.extractfile(member)
        assert stream is not None
        text = stream.read().decode("utf-8", "replace")
    packages = {}
    for stanza in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1)
            for line in stanza.splitlines()
            if ": " in line and not line[0].isspace()
        )
        if "Package" in fields and fields.get("Status", "").endswith(" installed"):
            arch = fields.get("Architecture", "all")
            name = (
                fields["Package"]
                if arch in ("all", host_architecture())
                else f"{fields['Package']}:{arch}"
            )
            packages[name] = fields.get("Version", "")
    return packages


def build_image(
    definition: ImageDefinition,
    *,
    store: ImageStore,
    work_dir: Path,
    update_lock: bool = False,
    rebuild: bool = False,
) -> ImageBuildOutcome:
    """Build an image, compare it with its lock and load it when it may be used.

    Args:
        definition: the image under images/.
        store: podman storage to load into.
        work_dir: scratch space (the root filesystem is written here).
        update_lock: accept the built image as the new lock.
        rebuild: build even when the locked image is already loaded.

    Returns:
        What happened; on MISMATCH nothing was loaded and the lock is unchanged.

    Raises:
        ImageError, HostToolMissing, HostToolFailed: the image could not be built.
    """
    recipe, recorded = definition.recipe, definition.lock
    current = recorded is not None and recorded.recipe_digest == recipe.digest
    if recorded is not None and current and not rebuild and store.image_exists(recorded.reference):
        return ImageBuildOutcome(
            status=ImageBuildStatus.ALREADY_LOADED, built=recorded, recorded=recorded
        )
    work_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=work_dir, prefix=f"image-{recipe.name}-"))
    try:
        rootfs = scratch / "rootfs.tar"
        env = dict(os.environ, SOURCE_DATE_EPOCH=str(recipe.source_date_epoch), LC_ALL="C.UTF-8")
        run_program(
            mmdebstrap_argv(recipe, rootfs), timeout=_MMDEBSTRAP_TIMEOUT_S, env=env, cwd=scratch
        )
        layer_digest, layer_size = sha256_file(rootfs)
        image = describe_image(
            layer_digest=layer_digest,
            layer_size=layer_size,
            architecture=host_architecture(),
            created=recipe.source_date_epoch,
            ref_name=f"hermetic/{recipe.name}:latest",
            labels={
                "dev.hermetic.image": recipe.name,
                "dev.hermetic.recipe": f"sha256:{recipe.digest}",
            },
        )
        built = ImageLock(
            name=recipe.name,
            architecture=host_architecture(),
            image_digest=image.manifest_digest,
            config_digest=image.config_digest,
            rootfs_digest=layer_digest,
            recipe_digest=recipe.digest,
            packages=read_packages(rootfs),
        )
        if (
            recorded is not None
            and not update_lock
            and (built.image_digest != recorded.image_digest or not current)
        ):
            return ImageBuildOutcome(
                status=ImageBuildStatus.MISMATCH, built=built, recorded=recorded
            )
        archive = scratch / "image.oci.tar"
        write_archive(image, rootfs, archive)
        rootfs.unlink()
        store.load_archive(archive)
        loaded_id = store.image_id(built.reference)
        if loaded_id.removeprefix("sha256:") != built.config_digest:
            raise ImageError(
                f"podman stored {built.reference} as image {loaded_id}, expected config "
                f"sha256:{built.config_digest}; the image store may be damaged"
            )
        status = ImageBuildStatus.MATCHES_LOCK
        if recorded is None or update_lock:
            _write_lock(definition.directory, built)
            status = ImageBuildStatus.LOCKED
        return ImageBuildOutcome(status=status, built=built, recorded=recorded)
    finally:
        remove_tree(scratch)


def _write_lock(directory: Path, lock: ImageLock) -> None:
    path = directory / LOCK_FILENAME
    temp = path.with_name(f".{LOCK_FILENAME}.tmp")
    temp.write_text(lock.to_json())
    os.replace(temp, path)
