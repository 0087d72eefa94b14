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
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from sandbox.config import SandboxConfig
from sandbox.digests import sha256_file
from sandbox.environment import NORMALIZED
from sandbox.errors import ImageError, SandboxError
from sandbox.images import ImageCatalog, ImageDefinition, ImageLock, ResolvedImage
from sandbox.oci import describe_image, write_archive
from sandbox.proc import run as run_program
from sandbox.recipe import ImageRecipe
from sandbox.registry import registry_credentials, registry_of, tls_verify_for
from sandbox.spec import Spec
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

    def pull(self, reference: str, *, tls_verify: bool, auth_header: str | None) -> str: ...


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
        ImageError: a locale line is malformed (the recipe checks it; the hook is a shell
            line, so it is checked again where it is made).
    """
    hooks = []
    if recipe.locales:
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
    argv.extend([recipe.suite, str(rootfs), *recipe.sources()])
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
        definition: the recipe and where its lock lives.
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
    current = definition.current_lock is not None
    if recorded is not None and current and not rebuild and store.image_exists(recorded.reference):
        return ImageBuildOutcome(
            status=ImageBuildStatus.ALREADY_LOADED, built=recorded, recorded=recorded
        )
    work_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=work_dir, prefix=f"image-{definition.name}-"))
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
            ref_name=f"hermetic/{definition.name}:latest",
            labels=definition.labels,
        )
        built = ImageLock(
            name=definition.name,
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
            _write_lock(definition.lock_path, built)
            status = ImageBuildStatus.LOCKED
        return ImageBuildOutcome(status=status, built=built, recorded=recorded)
    finally:
        remove_tree(scratch)


def _write_lock(path: Path, lock: ImageLock) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(lock.to_json())
    os.replace(temp, path)


def mismatch_message(outcome: ImageBuildOutcome, definition: ImageDefinition) -> str:
    """Why a built image was refused: the digests and each package version that differs."""
    recorded = outcome.recorded
    lines = [
        f"image {definition.source or definition.name} was built as "
        f"sha256:{outcome.built.image_digest}, but {definition.lock_path} says "
        f"sha256:{recorded.image_digest if recorded else '(none)'}; nothing was loaded"
    ]
    changes = outcome.package_changes()
    if changes:
        lines.append("package versions that differ from the lock:")
        lines.extend(f"  {change}" for change in changes)
    else:
        lines.append("same package versions: the recipe or the image format changed")
    lines.append(
        f"if the new image is the one you trust: '{definition.build_command} --update-lock' "
        "(or 'hermetic build --update-lock'), then commit the lock"
    )
    return "\n".join(lines)


def prepare_image(
    spec: Spec,
    *,
    config: SandboxConfig,
    store: ImageStore,
    update_lock: bool = False,
    announce: Callable[[str], None] | None = None,
) -> ResolvedImage:
    """Make the spec's image present in podman, pinned by digest, before a build.

    A recipe's image is built when its locked image is not loaded, and used only when it
    matches the lock (or the lock is written, with ``update_lock``). A registry image is
    pulled by digest when absent; podman checks the manifest against the digest.

    Args:
        spec: the spec whose image is needed.
        config: images directory, work directory, insecure registries.
        store: podman's image storage.
        update_lock: write a missing or stale lock instead of failing.
        announce: told, in words, before a long step (a build or a pull).

    Raises:
        ImageError: no lock (without ``update_lock``), a built image that does not match
            its lock, an unpinned or unpullable registry image.
    """
    catalog = ImageCatalog(config.images_dir)
    definition = catalog.definition(spec.image, spec_dir=spec.path.resolve().parent)
    if definition is None:
        resolved = catalog.resolve(spec.image)
        if not store.image_exists(resolved.reference):
            if announce is not None:
                announce(f"pulling {resolved.reference}")
            pull_image(resolved.reference, store=store, config=config)
        return resolved
    lock = definition.current_lock
    if lock is not None and store.image_exists(lock.reference):
        return ResolvedImage(
            reference=lock.reference,
            digest=lock.image_digest,
            name=lock.name,
            definition=definition,
        )
    if lock is None and not update_lock:
        definition.locked()  # raises: no lock, or a stale one, and what to run
    if announce is not None:
        announce(f"building image {definition.source or definition.name} (mmdebstrap)")
    outcome = build_image(
        definition, store=store, work_dir=config.work_dir, update_lock=update_lock, rebuild=True
    )
    if outcome.status is ImageBuildStatus.MISMATCH:
        raise ImageError(mismatch_message(outcome, definition))
    built = outcome.built
    return ResolvedImage.of_lock(built, definition)


def pull_image(reference: str, *, store: ImageStore, config: SandboxConfig) -> None:
    """Pull an image pinned by digest from its registry, with the user's credentials.

    Raises:
        ImageError: a short name (no registry), an insecure non-loopback registry, or a
            failed pull (unreachable, refused, or content that does not match the digest).
    """
    repository = reference.partition("@")[0]
    registry = registry_of(repository)
    if registry is None:
        raise ImageError(
            f"{reference} is not loaded and names no registry; write it as "
            "'host[:port]/repository@sha256:<64 hex>' so that it can be pulled"
        )
    tls_verify = tls_verify_for(registry, config.insecure_registries)
    credentials = registry_credentials(repository)
    try:
        store.pull(
            reference,
            tls_verify=tls_verify,
            auth_header=credentials.to_header() if credentials else None,
        )
    except SandboxError as e:
        raise ImageError(
            f"could not pull {reference} from {registry}: {e}\n(a registry that serves other "
            "content than the pinned digest is refused; check the digest and the registry)"
        ) from e
    if not store.image_exists(reference):
        raise ImageError(f"podman pulled {reference} but does not hold it under that digest")
