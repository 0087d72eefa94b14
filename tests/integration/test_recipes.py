"""A project's own image recipes, for real: an inline [image] and a recipe directory beside
the spec, their locks beside them, the image built twice to the same digest, a lock never
written silently, and a lock mismatch failing with the package versions that differ."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path

import pytest

from sandbox.config import SandboxConfig
from sandbox.podman_api import PodmanSession
from tests.conftest import HERMETIC, write_spec
from tests.http_servers import Server, serving

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

    # review real-1 #4: the package list beside the digest (what the SBOM lists) is read
    # back from the image: an edited list with the right digest is refused, by 'build'
    # (the image is loaded), 'image build' (likewise) and a rebuild of the image
    real_make, real_libc = locked["packages"]["make"], locked["packages"]["libc6"]
    edited = dict(locked, packages={**locked["packages"], "libc6": "9.99-fake"})
    del edited["packages"]["make"]
    lock.write_text(json.dumps(edited))
    for args in (("build", ".", "--out", str(tmp_path / "edited")), ("image", "build", ".")):
        refused = hermetic(project, *args)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert f"libc6: 9.99-fake -> {real_libc}" in refused.stderr
        assert f"make: (absent) -> {real_make}" in refused.stderr
    rebuilt = hermetic(project, "image", "build", ".", "--rebuild")
    assert rebuilt.returncode == 1, rebuilt.stdout + rebuilt.stderr
    said = rebuilt.stdout + rebuilt.stderr  # the new image is compared with the edited lock
    assert "does NOT match its lock" in said and f"make: (absent) -> {real_make}" in said
    assert not (tmp_path / "edited").exists()
    lock.write_text(json.dumps(locked))  # control: the true list builds
    again = hermetic(project, "build", ".", "--out", str(tmp_path / "again"))
    assert again.returncode == 0, again.stderr
    sbom = json.loads((tmp_path / "again" / "sbom.spdx.json").read_text())
    listed = {p["name"]: p.get("versionInfo") for p in sbom["packages"]}
    assert listed["make"] == real_make and listed["libc6"] == real_libc

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


def test_an_injected_apt_source_never_reaches_mmdebstrap(
    tmp_path: Path, sandbox_config: SandboxConfig, podman_session: PodmanSession
) -> None:
    """review real-1 #1: security_mirror = "...\\ndeb [trusted=yes] http://127.0.0.1:8765/ ./"
    made apt fetch an unsigned repository whose postinst ran outside the chroot. Now the
    spec is refused before mmdebstrap runs: the repository is never asked for anything."""
    repository = Server(routes={"/Release": (200, {}, b"Origin: evil\n")})
    with serving(repository):
        with urllib.request.urlopen(f"{repository.url}/Release", timeout=10) as response:
            assert response.status == 200  # control: the probe sees a request
        repository.seen.clear()
        injected = (
            "http://deb.debian.org/debian-security bookworm-security main\\n"
            f"deb [trusted=yes] {repository.url}/ ./\\n#"
        )
        project = tmp_path / "inject"
        write_spec(
            project,
            SPEC + f'\n[image]\narchives = ["security"]\npackages = ["make"]\n'
            f'security_mirror = "{injected}"\n',
        )
        env = {
            **os.environ,
            "HERMETIC_IMAGES_DIR": str(sandbox_config.images_dir),
            "HERMETIC_STORE": str(sandbox_config.store_dir),
            "HERMETIC_WORK_DIR": str(sandbox_config.work_dir),
            "HERMETIC_PODMAN_URL": podman_session.url,
            "HERMETIC_SIGN": "",
        }
        for args in (
            ("build", ".", "--update-lock", "--out", str(tmp_path / "out")),
            ("image", "build", "."),
            ("check", ".", "--report", str(tmp_path / "check")),
        ):
            done = subprocess.run(
                [HERMETIC, *args], env=env, cwd=project, capture_output=True, text=True,
                timeout=300,
            )  # fmt: skip
            assert done.returncode == 2, done.stdout + done.stderr
            assert "image.security_mirror" in done.stderr
        assert repository.seen == []
        assert not (project / "hermetic.lock").exists()
