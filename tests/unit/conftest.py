"""Fixtures the unit tests share: a locked test image, a fake-backend sandbox config, and
the CLI run in-process on the fake backend as an unprivileged user (the user id is
injected, never patched). The builders behind them serve module-scoped fixtures too."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from rebuilder.cli import app
from rebuilder.cli.common import CliState
from sandbox.config import SandboxConfig
from sandbox.digests import Sha256
from sandbox.images import ImageLock, ImageRecipe

RECIPE = """
description = "test image"
suite = "bookworm"
mirror = "http://deb.debian.org/debian"
variant = "essential"
packages = ["make", "locales"]
locales = ["en_US.UTF-8 UTF-8"]
source_date_epoch = 1700000000
"""

# The fake backend copies the source back: its one output is the spec itself.
FAKE_SPEC = """
[build]
image = "test-image"
command = ["make"]
outputs = ["hermetic.toml"]
source_date_epoch = 1
"""


def make_image(root: Path, name: str = "test", recipe: str = RECIPE) -> Path:
    """``root/name`` holding ``recipe`` (no lock)."""
    directory = root / name
    directory.mkdir(parents=True)
    (directory / "recipe.toml").write_text(recipe)
    return directory


def image_lock(recipe: ImageRecipe, digest: str = "11" * 32) -> ImageLock:
    """A lock for ``recipe`` as if its image had been built (digests are made up)."""
    return ImageLock(
        name=recipe.name,
        architecture="amd64",
        image_digest=Sha256(digest),
        config_digest=Sha256("22" * 32),
        rootfs_digest=Sha256("33" * 32),
        recipe_digest=recipe.digest,
        packages={"make": "4.3-4.1"},
    )


def locked_images(images: Path) -> Path:
    """``images`` holding ``test-image``, locked as if built."""
    directory = make_image(images, "test-image")
    (directory / "lock.json").write_text(image_lock(ImageRecipe.load(directory)).to_json())
    return images


def fake_sandbox(root: Path) -> SandboxConfig:
    """Builds of ``test-image`` on the fake backend, under ``root``."""
    return SandboxConfig(
        store_dir=root / "s",
        work_dir=root / "w",
        images_dir=locked_images(root / "images"),
        backend="fake",
        allow_root=True,
    )


@pytest.fixture
def test_images(tmp_path: Path) -> Path:
    """An images/ directory holding ``test-image``, locked."""
    return locked_images(tmp_path / "images")


@pytest.fixture
def fake_config(tmp_path: Path) -> SandboxConfig:
    """Builds of ``test-image`` on the fake backend, under tmp_path."""
    return fake_sandbox(tmp_path)


@dataclass
class Hermetic:
    """``hermetic`` in this process, on the fake backend, with its own store, scratch and
    configuration directory."""

    env: dict[str, str]

    def __call__(self, *args: str, euid: int = 1000) -> Result:
        return CliRunner().invoke(app, list(args), env=self.env, obj=CliState(euid=euid))


@pytest.fixture
def hermetic(tmp_path: Path, test_images: Path) -> Hermetic:
    return Hermetic(
        env={
            "HERMETIC_BACKEND": "fake",
            "HERMETIC_IMAGES_DIR": str(test_images),
            "HERMETIC_STORE": str(tmp_path / "store"),
            "HERMETIC_WORK_DIR": str(tmp_path / "work"),
            "XDG_CONFIG_HOME": str(tmp_path / "config"),  # no key but the test's own
            "HERMETIC_SIGN": "",
        }
    )
