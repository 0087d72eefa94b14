"""A project's own image recipes, for real: an inline [image] and a recipe directory beside
the spec, their locks beside them, the image built twice to the same digest, a lock never
written silently, and a lock mismatch failing with the package versions that differ."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from sandbox.config import SandboxConfig
from sandbox.podman_api import PodmanSession
from tests.conftest import HERMETIC, write_spec

RECIPE = """
packages = ["make"]
archives = ["updates", "security"]

[env]
MAKEFLAGS = "--no-print-directory"
"""
SPEC = """
[build]
command = ["sh", "-c", "make --version | head -1 > version.txt; echo $MAKEFLAGS >> version.txt"]
outputs = ["version.txt"]
source_date_epoch = 1700000000
"""


@pytest.mark.slow
def test_inline_and_directory_recipes(
    tmp_path: Path, sandbox_config: SandboxConfig, podman_session: PodmanSession
) -> None:
    env = {
        **os.environ,
        "HERMETIC_IMAGES_DIR": str(sandbox_config.images_dir),
        "HERMETIC_STORE": str(sandbox_config.store_dir),
        "HERMETIC_WORK_DIR": str(sandbox_config.work_dir),
        "HERMETIC_PODMAN_URL": podman_session.url,
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "HERMETIC_SIGN": "",
    }

    def hermetic(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [HERMETIC, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=900
        )

    project = tmp_path / "inline"
    write_spec(project, SPEC + "\n[image]" + RECIPE.replace("[env]", "[image.env]"))
    lock = project / "hermetic.lock"

    # no lock: the build is refused, and nothing is written
    refused = hermetic(project, "build", ".", "--out", str(tmp_path / "refused"))
    assert refused.returncode == 2 and "has no lock" in refused.stderr, refused.stderr
    assert "hermetic image build ." in refused.stderr and not lock.exists()

    # --update-lock: the image is built, locked beside the spec, and used
    first = hermetic(project, "build", ".", "--out", str(tmp_path / "one"), "--update-lock")
    assert first.returncode == 0, first.stderr
    locked = json.loads(lock.read_text())
    assert "make" in locked["packages"]
    result = json.loads((tmp_path / "one" / "result.json").read_text())
    assert result["image"].endswith(locked["image_digest"])
    assert result["environment"]["MAKEFLAGS"] == "--no-print-directory"  # the image's env
    version = (tmp_path / "one" / "artifacts" / "version.txt").read_text()
    assert version.startswith("GNU Make ") and "--no-print-directory" in version

    # the same recipe built again gives the same image, bit for bit
    again = hermetic(project, "image", "build", ".", "--rebuild", "--json")
    assert again.returncode == 0, again.stderr
    outcome = json.loads(again.stdout)
    assert outcome["status"] == "matches_lock"
    assert outcome["lock"]["image_digest"] == locked["image_digest"]
    assert outcome["lock"]["rootfs_digest"] == locked["rootfs_digest"]

    # a lock that does not match what the recipe gives: the build fails and says which
    # package versions differ; nothing is loaded under the false digest
    tampered = dict(locked, image_digest="sha256:" + "0" * 64)
    tampered["packages"] = dict(locked["packages"], make="1.0-fake")
    lock.write_text(json.dumps(tampered))
    mismatch = hermetic(project, "build", ".", "--out", str(tmp_path / "two"))
    assert mismatch.returncode == 2, mismatch.stderr
    assert f"make: 1.0-fake -> {locked['packages']['make']}" in mismatch.stderr
    assert "--update-lock" in mismatch.stderr
    assert json.loads(lock.read_text()) == tampered, "the lock is left as it was"

    # a recipe directory beside the spec: 'hermetic image build ./ci/image' locks it there
    project = tmp_path / "dir"
    (project / "ci" / "image").mkdir(parents=True)
    (project / "ci" / "image" / "recipe.toml").write_text(RECIPE)
    write_spec(project, SPEC.replace("[build]", '[build]\nimage = "./ci/image"'))
    image = hermetic(project, "image", "build", "./ci/image")
    assert image.returncode == 0, image.stderr
    assert "lock written" in image.stdout
    assert (project / "ci" / "image" / "recipe.lock.json").is_file()
    built = hermetic(project, "build", ".", "--out", str(tmp_path / "three"))
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "three" / "artifacts" / "version.txt").read_text() == version
