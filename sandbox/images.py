"""Build images as data: a recipe and its lock.

The recipe (written by people) says which Debian packages make the image; the lock
(written by ``hermetic image build``) records the package versions and the digests the
recipe produced, and turns the recipe into a reference pinned by digest. Recipes live
under hermetic's ``images/<name>/`` (lock ``lock.json``), beside a project
(``X/recipe.toml``, lock ``X/recipe.lock.json``) or inline in a spec (``[image]``,
lock ``hermetic.lock`` beside the spec).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sandbox.digests import Sha256, parse_sha256
from sandbox.errors import ImageError
from sandbox.recipe import RECIPE_FILENAME
from sandbox.recipe import ImageRecipe as ImageRecipe  # where callers found it before
from sandbox.spec import (
    SPEC_FILENAME,
    ImageReference,
    Spec,
    recipe_image_name,
    recipe_lock_path,
)

LOCK_FILENAME = "lock.json"
REPOSITORY_PREFIX = "localhost/hermetic/"


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
    def load(cls, path: Path, *, fix: str = "") -> ImageLock | None:
        """Read a lock file; None when the image was never locked.

        Args:
            path: the lock file (or an images/ directory holding lock.json).
            fix: the command that rewrites it, for the error.

        Raises:
            ImageError: the lock exists but is unreadable.
        """
        if path.is_dir():
            path = path / LOCK_FILENAME
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
                f"'{fix or 'hermetic image build'} --update-lock'"
            ) from e


@dataclass(frozen=True, kw_only=True)
class ImageDefinition:
    """A recipe, where its lock lives, and the lock if there is one."""

    recipe: ImageRecipe
    lock_path: Path
    lock: ImageLock | None
    catalog: bool = True  # under hermetic's images/ (else the project's own)
    source: str = ""  # how a user names it on the command line

    @property
    def name(self) -> str:
        """The image's name, and so its repository under localhost/hermetic/.

        A project's recipe gets its recipe digest in the name: projects choose their
        names freely, and two different images must never share a tag in podman.
        """
        if self.catalog:
            return self.recipe.name
        return f"{self.recipe.name}-{self.recipe.digest[:12]}"

    @property
    def labels(self) -> dict[str, str]:
        """Image labels. A project's image carries no name, so it is the same image
        wherever the project is checked out."""
        labels = {"dev.hermetic.recipe": f"sha256:{self.recipe.digest}"}
        if self.catalog:
            labels["dev.hermetic.image"] = self.recipe.name
        return labels

    @property
    def build_command(self) -> str:
        return f"hermetic image build {self.source or self.name}"

    @property
    def current_lock(self) -> ImageLock | None:
        """The lock, when it was written for this very recipe."""
        if self.lock is not None and self.lock.recipe_digest == self.recipe.digest:
            return self.lock
        return None

    def locked(self) -> ImageLock:
        """The lock, which must exist and be current.

        Raises:
            ImageError: no lock, or the recipe changed since it was written.
        """
        if self.lock is None:
            raise ImageError(
                f"image {self.source or self.name} has no lock ({self.lock_path}); run "
                f"'{self.build_command}' to build and lock it (or 'hermetic build "
                "--update-lock')"
            )
        if self.current_lock is None:
            raise ImageError(
                f"image {self.source or self.name}: the recipe changed since the lock "
                f"{self.lock_path} was written; run '{self.build_command} --update-lock' "
                "and commit the lock"
            )
        return self.lock

    @classmethod
    def of_recipe(cls, reference: ImageReference, *, source: str) -> ImageDefinition:
        """The definition of a project's recipe (a file beside the spec, or ``[image]``)."""
        assert reference.recipe is not None and reference.lock_path is not None
        fix = f"hermetic image build {source}"
        return cls(
            recipe=reference.recipe,
            lock_path=reference.lock_path,
            lock=ImageLock.load(reference.lock_path, fix=fix),
            catalog=False,
            source=source,
        )


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
        if "/" in name or not (directory / RECIPE_FILENAME).is_file():
            known = ", ".join(self.names()) or "none"
            raise ImageError(
                f"no image named {name!r} under {self.root} (known: {known}); name one of "
                "these, a recipe beside the spec ('./path'), or pin 'repository@sha256:<64 hex>'"
            )
        lock_path = directory / LOCK_FILENAME
        return ImageDefinition(
            recipe=ImageRecipe.load(directory, name=name),
            lock_path=lock_path,
            lock=ImageLock.load(lock_path, fix=f"hermetic image build {name}"),
            source=name,
        )

    def definition(self, reference: ImageReference, *, spec_dir: Path) -> ImageDefinition | None:
        """The recipe behind a spec's image; None for an image pinned by digest."""
        if reference.name is not None:
            return self.get(reference.name)
        if reference.recipe is None:
            return None
        if reference.recipe_path is not None:
            source = _relative(reference.recipe_path, spec_dir)
        else:
            source = _relative(spec_dir, Path.cwd())
        return ImageDefinition.of_recipe(reference, source=source)

    def resolve(self, reference: ImageReference, *, spec_dir: Path | None = None) -> ResolvedImage:
        """Turn a spec's image reference into one pinned by digest (through its lock).

        Raises:
            ImageError: the recipe has no lock, or its lock is stale.
        """
        definition = self.definition(reference, spec_dir=spec_dir or Path.cwd())
        if definition is None:
            assert reference.repository is not None and reference.digest is not None
            return ResolvedImage(
                reference=f"{reference.repository}@sha256:{reference.digest}",
                digest=reference.digest,
                name=None,
            )
        lock = definition.locked()
        return ResolvedImage(
            reference=lock.reference,
            digest=lock.image_digest,
            name=lock.name,
            definition=definition,
        )


def _relative(path: Path, base: Path) -> str:
    """``./relative`` when ``path`` is under ``base``, else the absolute path."""
    try:
        relative = path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return str(path)
    return "." if relative == "." else f"./{relative}"


@dataclass(frozen=True, kw_only=True)
class ResolvedImage:
    """An image pinned by digest, as a build uses it."""

    reference: str  # repository@sha256:<digest>
    digest: Sha256
    name: str | None  # the image's name, when it comes from a recipe
    definition: ImageDefinition | None = field(default=None, compare=False)

    @property
    def repository(self) -> str:
        return self.reference.partition("@")[0]

    @classmethod
    def of_lock(cls, lock: ImageLock, definition: ImageDefinition) -> ResolvedImage:
        return cls(
            reference=lock.reference,
            digest=lock.image_digest,
            name=lock.name,
            definition=definition,
        )


def definition_for(target: str, catalog: ImageCatalog) -> ImageDefinition:
    """What ``hermetic image build TARGET`` builds: a name under images/, a recipe
    directory or file, or a spec (its ``[image]`` or its recipe path).

    Raises:
        ImageError, SpecError: nothing buildable there, or the files are invalid.
    """
    path = Path(target)
    if "/" not in target and not target.endswith(".toml") and target != ".":
        return catalog.get(target)
    if path.is_dir() and (path / RECIPE_FILENAME).is_file():
        path = path / RECIPE_FILENAME
    elif path.is_dir():
        path = path / SPEC_FILENAME
    if not path.is_file():
        raise ImageError(
            f"{target}: no recipe.toml or hermetic.toml there; give an image name under "
            "images/, a recipe directory or file, or a spec with an [image] table"
        )
    if path.name == SPEC_FILENAME:
        spec = Spec.from_toml(path)
        definition = catalog.definition(spec.image, spec_dir=spec.path.resolve().parent)
        if definition is None:
            raise ImageError(
                f"{path}: build.image is pinned by digest ({spec.image}); there is no "
                "recipe to build (it is pulled on first use)"
            )
        return definition
    reference = ImageReference(
        recipe=ImageRecipe.load(path, name=recipe_image_name(path)),
        recipe_path=path.resolve(),
        lock_path=recipe_lock_path(path.resolve()),
    )
    return ImageDefinition.of_recipe(reference, source=_relative(path, Path.cwd()))
