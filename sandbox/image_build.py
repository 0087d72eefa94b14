"""Building an image from its recipe: mmdebstrap (rootless), a deterministic OCI archive,
a check against the lock, and a load into podman by digest.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import tarfile
import tempfile
from collections.abc import Callable, Mapping
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
from sandbox.recipe import LOCALE_RE, ImageRecipe, checked_text
from sandbox.registry import registry_credentials, registry_of, tls_verify_for
from sandbox.spec import Spec
from sandbox.workspace import remove_tree, write_atomically

log = logging.getLogger(__name__)

_ARCHITECTURES = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv7l": "armhf",
    "ppc64le": "ppc64el",
    "s390x": "s390x",
    "riscv64": "riscv64",
}
_MMDEBSTRAP_TIMEOUT_S = 3600
# What mmdebstrap may inherit: where programs are, where scratch space is, how to reach
# the mirror. Everything else of the user's environment (tokens, keys, APT_CONFIG) stays.
_MMDEBSTRAP_PASSED = (
    "PATH",
    "HOME",
    "TMPDIR",
    *(
        name
        for proxy in ("http_proxy", "https_proxy", "no_proxy")
        for name in (proxy, proxy.upper())
    ),
)


class ImageStore(Protocol):
    """Where images are loaded (podman's storage, through the API)."""

    def image_exists(self, reference: str) -> bool: ...

    def image_id(self, reference: str) -> str: ...

    def load_archive(self, archive: Path) -> list[str]: ...

    def pull(self, reference: str, *, tls_verify: bool, auth_header: str | None) -> str: ...

    def image_file(self, reference: str, path: str) -> bytes: ...


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
        return package_changes(self.recorded.packages if self.recorded else {}, self.built.packages)


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
            if checked_text(line, LOCALE_RE) is None:
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


def mmdebstrap_env(recipe: ImageRecipe, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment mmdebstrap runs with (pure): the program path, the temporary
    directory and the proxies apt needs, and nothing else of the user's.

    Package scripts run in mmdebstrap's namespaces with the host's network and see the
    environment they inherit: the user's tokens and keys must not be in it.
    """
    env = {name: environ[name] for name in _MMDEBSTRAP_PASSED if environ.get(name)}
    env.setdefault("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    env["SOURCE_DATE_EPOCH"] = str(recipe.source_date_epoch)
    env["LC_ALL"] = "C.UTF-8"
    return env


DPKG_STATUS = "/var/lib/dpkg/status"
IMAGE_PACKAGES = "image-packages"  # under the store: what each image (by digest) holds


def read_packages(rootfs: Path) -> dict[str, str]:
    """Installed package versions, read from the tarball's dpkg status file."""
    with tarfile.open(rootfs) as tar:
        member = next(
            (m for m in tar if m.name.lstrip("./") == DPKG_STATUS.lstrip("/") and m.isfile()),
            None,
        )
        if member is None:
            raise ImageError(f"{rootfs}: no {DPKG_STATUS}; not a Debian root filesystem")
        stream = tar.extractfile(member)
        assert stream is not None
        return parse_dpkg_status(stream.read())


def parse_dpkg_status(data: bytes) -> dict[str, str]:
    """``{name: version}`` of the installed packages of a dpkg status file (``name:arch``
    for a foreign architecture's)."""
    packages = {}
    for stanza in data.decode("utf-8", "replace").split("\n\n"):
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


def check_lock_packages(
    lock: ImageLock, store: ImageStore, *, where: Path, cache: Path | None = None
) -> None:
    """Compare the lock's package list with the dpkg status of the image it names.

    The image digest pins the image, but the package list beside it (what the SBOM
    lists) is plain text in the project: it is read back from the image itself, once
    per image when ``cache`` (a directory of the user's own) keeps what was read.

    Raises:
        ImageError: the lists differ (naming each difference), or the image's status
            file cannot be read.
    """
    held = image_packages(lock, store, cache=cache)
    changes = package_changes(lock.packages, held)
    if changes:
        shown = "\n".join(f"  {line}" for line in changes[:20])
        raise ImageError(
            f"{where}: the package list is not what image sha256:{lock.image_digest} holds "
            f"(lock -> image):\n{shown}\nrestore the lock from version control, or rebuild "
            "the image and write the lock again with --update-lock"
        )


def image_packages(lock: ImageLock, store: ImageStore, *, cache: Path | None) -> dict[str, str]:
    """The package versions the image ``lock`` names holds, from its dpkg status file.

    An image pinned by digest cannot change, so what was read from it once is kept in
    ``cache/<digest>.json`` (reading it costs a container's creation and removal on
    every build). A cache entry that is unreadable or names another image is ignored.

    Raises:
        ImageError: the image's status file cannot be read.
    """
    entry = cache / f"{lock.image_digest}.json" if cache is not None else None
    if entry is not None:
        cached = _cached_packages(entry, lock.image_digest)
        if cached is not None:
            return cached
    try:
        held = parse_dpkg_status(store.image_file(lock.reference, DPKG_STATUS))
    except SandboxError as e:
        raise ImageError(f"cannot read the package list of {lock.reference}: {e}") from e
    if entry is not None:
        document = {"image_digest": lock.image_digest, "packages": held}
        try:
            entry.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_atomically(entry, json.dumps(document, sort_keys=True).encode(), 0o600)
        except OSError as e:  # a cache that cannot be written costs time, nothing else
            log.debug("cannot keep the package list of %s: %s", lock.reference, e)
    return held


def _cached_packages(entry: Path, digest: str) -> dict[str, str] | None:
    try:
        document = json.loads(entry.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or document.get("image_digest") != digest:
        return None
    packages = document.get("packages")
    if not isinstance(packages, dict):
        return None
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in packages.items()):
        return None
    return packages


def package_changes(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    """Human lines naming each package whose version differs between two lists."""
    return [
        f"{name}: {old.get(name, '(absent)')} -> {new.get(name, '(absent)')}"
        for name in sorted(set(old) | set(new))
        if old.get(name) != new.get(name)
    ]


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
        check_lock_packages(recorded, store, where=definition.lock_path)
        return ImageBuildOutcome(
            status=ImageBuildStatus.ALREADY_LOADED, built=recorded, recorded=recorded
        )
    work_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=work_dir, prefix=f"image-{definition.name}-"))
    try:
        rootfs = scratch / "rootfs.tar"
        run_program(
            mmdebstrap_argv(recipe, rootfs),
            timeout=_MMDEBSTRAP_TIMEOUT_S,
            env=mmdebstrap_env(recipe, os.environ),
            cwd=scratch,
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
            and (
                built.image_digest != recorded.image_digest
                or built.packages != recorded.packages  # the same image, an edited list
                or not current
            )
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
    write_atomically(path, lock.to_json().encode())  # never through a link the project planted


def mismatch_message(outcome: ImageBuildOutcome, definition: ImageDefinition) -> str:
    """Why a built image was refused: the digests and each package version that differs."""
    recorded = outcome.recorded
    lines = [
        f"image {definition.source or definition.name} was built as "
        f"sha256:{outcome.built.image_digest}, but {definition.lock_path} says "
        f"sha256:{recorded.image_digest if recorded else '(none)'}; nothing was loaded"
    ]
    changes = outcome.package_changes()
    if recorded is not None and recorded.image_digest == outcome.built.image_digest:
        lines[0] = (
            f"image {definition.source or definition.name} was built as the image "
            f"{definition.lock_path} names, but the lock lists other packages than it holds "
            "(an edited lock); nothing was loaded"
        )
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
        check_lock_packages(
            lock, store, where=definition.lock_path, cache=config.store_dir / IMAGE_PACKAGES
        )
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
