"""Shared by the rebuilder unit tests: a locked test image and a fake-backend config."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.config import SandboxConfig
from sandbox.images import ImageRecipe
from tests.unit.sandbox.test_images import RECIPE, lock_for, make_image

# The fake backend copies the source back: its one output is the spec itself.
FAKE_SPEC = """
[build]
image = "test-image"
command = ["make"]
outputs = ["hermetic.toml"]
source_date_epoch = 1
"""


@pytest.fixture
def fake_config(tmp_path: Path) -> SandboxConfig:
    """Builds of ``test-image`` on the fake backend, under tmp_path."""
    images = tmp_path / "images"
    directory = make_image(images, "test-image", RECIPE)
    (directory / "lock.json").write_text(lock_for(ImageRecipe.load(directory)).to_json())
    return SandboxConfig(
        store_dir=tmp_path / "s",
        work_dir=tmp_path / "w",
        images_dir=images,
        backend="fake",
        allow_root=True,
    )
