"""Build images as data: each ``images/<name>/`` holds a recipe and a lock.

The recipe (``recipe.toml``, written by people) says which Debian packages make the
image; the lock (``lock.json``, written by ``hermetic image build``) records the
package versions and the digests the recipe produced. Specs name an image, and the
lock turns the name into a reference pinned by digest.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sandbox.digests import Sha256, parse_sha256, sha256_bytes
from sandbox.errors import ImageError
from sandbox.spec import ImageReference

RECIPE_FILENAME = "recipe.toml"
LOCK_FILENAME = "lock.json"
REPOSITORY_PREFIX = "localhost/hermetic/"
_PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_VARIANTS = ("essential", "minbase", "required", "important", "standard", "apt")


@dataclass(frozen=True, kw_only=True)
class ImageRecipe:
    """How to make an image from Debian packages."""

    name: str
    description: str
    suite: str
    mirror: str
    variant: str
    packages: tuple[str, ...]
    locales: tuple[str, ...]
    source_date_epoch: int
    strip_docs: bool
    digest: Sha256  # of the recipe file, so a lock notices an edited recipe

    @classmethod
    def load(cls, directory: Path) -> ImageRecipe:
        """Read ``directory/recipe.toml``.

        Raises:
            ImageError: naming the file, key and reason.
        """
        path = directory / RECIPE_FILENAME
        try:
            raw = path.read_bytes()
            data = tomllib.loads(raw.decode("utf-8"))
        except FileNotFoundError:
            raise ImageError(f"{path}: no such file; every image needs a recipe") from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise ImageError(f"{path}: {e}") from e

        def fail(key: str, reason: str) -> ImageError:
            return ImageError(f"{path}: {key}: {reason}")

        allowed = {
            "description",
            "suite",
            "mirror",
            "variant",
            "packages",
            "locales",
            "source_date_epoch",
            "strip_docs",
        }
        for key in data:
            if key not in allowed:
                raise fail(key, f"unknown key; allowed: {', '.join(sorted(allowed))}")
        for key in ("suite", "mirror", "source_date_epoch"):
            if key not in data:
                raise fail(key, "missing")
        epoch = data["source_date_epoch"]
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise fail("source_date_epoch", "must be a non-negative integer")
        variant = data.get("variant", "essential")
        if variant not in _VARIANTS:
            raise fail("variant", f"must be one of {', '.join(_VARIANTS)}")
        packages = data.get("packages", [])
        if not isinstance(packages, list) or not all(
            isinstance(p, str) and _PACKAGE_RE.match(p) for p in packages
        ):
            raise fail("packages", "must be a list of Debian package names")
        locales = data.get("locales", [])
        if not isinstance(locales, list) or not all(isinstance(x, str) for x in locales):
            raise fail("locales", "must be a list of locale.gen lines, e.g. 'en_US.UTF-8 UTF-8'")
        for key in ("description", "suite", "mirror"):
            if not isinstance(data.get(key, ""), str):
                raise fail(key, "must be a string")
        for key in ("suite", "mirror"):
            if not data[key].strip():
                raise fail(key, "must not be empty")
        return cls(
            name=directory.name,
            description=data.get("description", ""),
            suite=data["suite"],
            mirror=data["mirror"],
            variant=variant,
            packages=tuple(packages),
            locales=tuple(locales),
            source_date_epoch=epoch,
            strip_docs=bool(data.get("strip_docs", True)),
            digest=sha256_bytes(raw),
        )


@dataclass(frozen=True, kw_only=True)
class ImageLock:
    """What a recipe produced last time it was accepted."""

    name: str
    architecture: str
    image_digest: Sha256  # the manifest digest: what references pin
    config_digest: Sha256  # podman's image id
    rootfs_digest: Sha256  # the single layer
    recipe_digest: Sha256
    packages: dict[str, str] = field(default_factory=dict)

    @property
    def repository(self) -> str:
        return REPOSITORY_PREFIX + self.name

    @property
    def reference(self) -> str:
        """``repository@sha256:<manifest digest>``, how podman is asked for the image."""
        return f"{self.repository}@sha256:{self.image_digest}"

    def to_json(self) -> str:
        data = asdict(self)
        data["packages"] = dict(sorted(self.packages.items()))
        for key in ("image_digest", "config_digest", "rootfs_digest", "recipe_digest"):
            data[key] = f"sha256:{data[key]}"
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def load(cls, directory: Path) -> ImageLock | None:
        """Read ``directory/lock.json``; None when the image was never locked.

        Raises:
            ImageError: the lock exists but is unreadable.
        """
        path = directory / LOCK_FILENAME
        if not path.exists():
            return None
        try:
            data: dict[str, Any] = json.loads(path.read_text("utf-8"))
            return cls(
                name=str(data["name"]),
                architecture=str(data["architecture"]),
                image_digest=parse_sha256(data["image_digest"]),
                config_digest=parse_sha256(data["config_digest"]),
                rootfs_digest=parse_sha256(data["rootfs_digest"]),
                recipe_digest=parse_sha256(data["recipe_digest"]),
                packages={str(k): str(v) for k, v in data.get("packages", {}).items()},
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise ImageError(
                f"{path}: unreadable lock ({e}); restore it from version control or run "
                f"'hermetic image build {directory.name} --update-lock'"
            ) from e


@dataclass(frozen=True, kw_only=True)
class ImageDefinition:
    """One directory under ``images/``."""

    directory: Path
    recipe: ImageRecipe
    lock: ImageLock | None

    @property
    def name(self) -> str:
        return self.directory.name


class ImageCatalog:
    """The image definitions under one ``images/`` directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / RECIPE_FILENAME).is_file())

    def get(self, name: str) -> ImageDefinition:
        """Load one definition.

        Raises:
            ImageError: no such image, or its files are invalid.
        """
        directory = self.root / name
        if not (directory / RECIPE_FILENAME).is_file():
            known = ", ".join(self.names()) or "none"
            raise ImageError(
                f"no image named {name!r} under {self.root} (known: {known}); "
                "name one of these or pin 'repository@sha256:<64 hex>'"
            )
        return ImageDefinition(
            directory=directory, recipe=ImageRecipe.load(directory), lock=ImageLock.load(directory)
        )

    def resolve(self, reference: ImageReference) -> ResolvedImage:
        """Turn a spec's image reference into one pinned by digest.

        Raises:
            ImageError: the named image has no lock, or its lock is stale.
        """
        if reference.name is None:
            assert reference.repository is not None and reference.digest is not None
            return ResolvedImage(
                reference=f"{reference.repository}@sha256:{reference.digest}",
                digest=reference.digest,
                name=None,
            )
        definition = self.get(reference.name)
        lock = definition.lock
        if lock is None:
            raise ImageError(
                f"image {reference.name!r} has no lock ({definition.directory / LOCK_FILENAME}); "
                f"run 'hermetic image build {reference.name}' to build and lock it"
            )
        if lock.recipe_digest != definition.recipe.digest:
            raise ImageError(
                f"image {reference.name!r}: {RECIPE_FILENAME} changed since the lock was written; "
                f"run 'hermetic image build {reference.name} --update-lock' and commit the lock"
            )
        return ResolvedImage(reference=lock.reference, digest=lock.image_digest, name=lock.name)


@dataclass(frozen=True, kw_only=True)
class ResolvedImage:
    """An image pinned by digest, as a build uses it."""

    reference: str  # repository@sha256:<digest>
    digest: Sha256
    name: str | None  # the images/ name it came from, if any
