"""Images as data: recipes, locks, resolution, the mmdebstrap command and OCI archives."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from sandbox.digests import Sha256, sha256_file
from sandbox.errors import ImageError
from sandbox.image_build import (
    ImageBuildOutcome,
    ImageBuildStatus,
    mmdebstrap_argv,
    read_packages,
)
from sandbox.images import ImageCatalog, ImageLock, ImageRecipe
from sandbox.oci import describe_image, write_archive
from sandbox.spec import ImageReference
from tests.conftest import REPO

RECIPE = """
description = "test image"
suite = "bookworm"
mirror = "http://deb.debian.org/debian"
variant = "essential"
packages = ["make", "locales"]
locales = ["en_US.UTF-8 UTF-8"]
source_date_epoch = 1700000000
"""


def make_image(root: Path, name: str = "test", recipe: str = RECIPE) -> Path:
    directory = root / name
    directory.mkdir(parents=True)
    (directory / "recipe.toml").write_text(recipe)
    return directory


def lock_for(recipe: ImageRecipe, digest: str = "11" * 32) -> ImageLock:
    return ImageLock(
        name=recipe.name,
        architecture="amd64",
        image_digest=Sha256(digest),
        config_digest=Sha256("22" * 32),
        rootfs_digest=Sha256("33" * 32),
        recipe_digest=recipe.digest,
        packages={"make": "4.3-4.1"},
    )


def test_the_project_images_are_valid_and_locked() -> None:
    catalog = ImageCatalog(REPO / "images")
    assert {"debian-bookworm", "hermetic-minimal"} <= set(catalog.names())
    for name in catalog.names():
        definition = catalog.get(name)
        assert definition.lock is not None, name
        assert definition.lock.recipe_digest == definition.recipe.digest, f"{name}: stale lock"
    bookworm = catalog.get("debian-bookworm")
    assert {"gcc", "make", "libc6-dev", "perl", "locales", "tzdata"} <= set(
        bookworm.recipe.packages
    )
    assert "fr_CH.UTF-8 UTF-8" in bookworm.recipe.locales
    assert bookworm.lock is not None and "gcc-12" in bookworm.lock.packages


def test_recipe_errors_name_the_key(tmp_path: Path) -> None:
    directory = make_image(tmp_path, recipe=RECIPE + 'flavour = "x"\n')
    with pytest.raises(ImageError, match="flavour: unknown key"):
        ImageRecipe.load(directory)
    directory = make_image(tmp_path, "bad-pkg", RECIPE.replace('"make"', '"make; rm -rf /"'))
    with pytest.raises(ImageError, match="packages"):
        ImageRecipe.load(directory)


def test_lock_round_trip(tmp_path: Path) -> None:
    directory = make_image(tmp_path)
    recipe = ImageRecipe.load(directory)
    lock = lock_for(recipe)
    (directory / "lock.json").write_text(lock.to_json())
    assert ImageLock.load(directory) == lock
    assert lock.reference == f"localhost/hermetic/test@sha256:{'11' * 32}"


def test_unreadable_lock(tmp_path: Path) -> None:
    directory = make_image(tmp_path)
    (directory / "lock.json").write_text("{not json")
    with pytest.raises(ImageError, match="unreadable lock"):
        ImageLock.load(directory)


def test_resolution(tmp_path: Path) -> None:
    directory = make_image(tmp_path)
    catalog = ImageCatalog(tmp_path)
    with pytest.raises(ImageError, match="has no lock"):
        catalog.resolve(ImageReference(name="test"))
    recipe = ImageRecipe.load(directory)
    (directory / "lock.json").write_text(lock_for(recipe).to_json())
    resolved = catalog.resolve(ImageReference(name="test"))
    assert resolved.reference == f"localhost/hermetic/test@sha256:{'11' * 32}"
    (directory / "recipe.toml").write_text(RECIPE + "# edited\n")
    with pytest.raises(ImageError, match="changed since the lock"):
        catalog.resolve(ImageReference(name="test"))
    with pytest.raises(ImageError, match="no image named 'nope'"):
        catalog.resolve(ImageReference(name="nope"))
    pinned = catalog.resolve(ImageReference(repository="quay.io/x/y", digest=Sha256("ef" * 32)))
    assert pinned.reference == f"quay.io/x/y@sha256:{'ef' * 32}"


def test_mmdebstrap_command(tmp_path: Path) -> None:
    recipe = ImageRecipe.load(make_image(tmp_path))
    argv = mmdebstrap_argv(recipe, Path("/out/rootfs.tar"))
    assert argv[:4] == ["mmdebstrap", "--mode=unshare", "--variant=essential", "--format=tar"]
    assert "--include=make,locales" in argv
    assert argv[-3:] == ["bookworm", "/out/rootfs.tar", "http://deb.debian.org/debian"]
    hooks = [a for a in argv if a.startswith("--customize-hook=")]
    assert "locale-gen" in hooks[0] and "'en_US.UTF-8 UTF-8'" in hooks[0]
    assert "builder:x:1000:1000" in hooks[1]


def test_locales_need_the_locales_package(tmp_path: Path) -> None:
    directory = make_image(tmp_path, recipe=RECIPE.replace(', "locales"', ""))
    with pytest.raises(ImageError, match="locales: add 'locales' to packages"):
        ImageRecipe.load(directory)


def test_malformed_locale_is_refused(tmp_path: Path) -> None:
    text = RECIPE.replace('"en_US.UTF-8 UTF-8"', '"x\'; rm -rf / #"')
    with pytest.raises(ImageError, match=r"locales: must be a list of locale\.gen lines"):
        ImageRecipe.load(make_image(tmp_path, recipe=text))


def _rootfs(path: Path, status: str) -> None:
    with tarfile.open(path, "w") as tar:
        data = status.encode()
        info = tarfile.TarInfo("./var/lib/dpkg/status")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def test_read_packages(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs.tar"
    _rootfs(
        rootfs,
        (
            "Package: make\nStatus: install ok installed\nArchitecture: amd64\nVersion: 4.3-4.1\n\n"
            "Package: gone\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1\n\n"
            "Package: tzdata\nStatus: install ok installed\nArchitecture: all\nVersion: 2024a\n"
            "Description: time zones\n continued line: with colon\n"
        ),
    )
    assert read_packages(rootfs) == {"make": "4.3-4.1", "tzdata": "2024a"}


def test_oci_archive_is_deterministic(tmp_path: Path) -> None:
    layer = tmp_path / "rootfs.tar"
    _rootfs(layer, "Package: a\n")
    digest, size = sha256_file(layer)
    image = describe_image(
        layer_digest=digest,
        layer_size=size,
        architecture="amd64",
        created=1700000000,
        ref_name="hermetic/test:latest",
        labels={"dev.hermetic.image": "test"},
    )
    config = json.loads(image.config)
    assert config["created"] == "2023-11-14T22:13:20Z"
    assert config["rootfs"]["diff_ids"] == [f"sha256:{digest}"]
    manifest = json.loads(image.manifest)
    assert manifest["config"]["digest"] == f"sha256:{image.config_digest}"
    write_archive(image, layer, tmp_path / "one.tar")
    write_archive(image, layer, tmp_path / "two.tar")
    assert (tmp_path / "one.tar").read_bytes() == (tmp_path / "two.tar").read_bytes()
    with tarfile.open(tmp_path / "one.tar") as tar:
        assert tar.getnames()[:2] == ["oci-layout", "index.json"]
        assert all(m.mtime == 0 for m in tar.getmembers())


def test_package_changes(tmp_path: Path) -> None:
    recipe = ImageRecipe.load(make_image(tmp_path))
    old = lock_for(recipe)
    new = ImageLock(**{**old.__dict__, "packages": {"make": "4.3-5", "gcc": "12"}})
    outcome = ImageBuildOutcome(status=ImageBuildStatus.MISMATCH, built=new, recorded=old)
    assert outcome.package_changes() == ["gcc: (absent) -> 12", "make: 4.3-4.1 -> 4.3-5"]
