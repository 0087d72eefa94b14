"""A credential file in the source tree never reaches a build (review real-1 #7): a
project .npmrc's token was copied into an artifact by 'cat .npmrc > out'. Real builds,
real podman, as the unprivileged user."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from sandbox.config import SandboxConfig
from sandbox.podman_api import PodmanSession
from tests.conftest import HERMETIC, write_spec

SPEC = """
[build]
image = "hermetic-minimal"
command = ["sh", "-c", "cat .npmrc > out"]
outputs = ["out"]
source_date_epoch = 1700000000
"""


def test_a_token_in_the_source_is_refused_before_the_build(
    tmp_path: Path,
    sandbox_config: SandboxConfig,
    podman_session: PodmanSession,
    minimal_image: str,
) -> None:
    env = {
        **os.environ,
        "HERMETIC_IMAGES_DIR": str(sandbox_config.images_dir),
        "HERMETIC_STORE": str(sandbox_config.store_dir),
        "HERMETIC_WORK_DIR": str(sandbox_config.work_dir),
        "HERMETIC_PODMAN_URL": podman_session.url,
        "HERMETIC_SIGN": "",
        "NPM_TOKEN": "npm_FROM_THE_USERS_ENVIRONMENT",
    }
    project = tmp_path / "npmproj"
    write_spec(project, SPEC)
    (project / ".npmrc").write_text("//registry.npmjs.org/:_authToken=npm_LITERALTOKEN123\n")
    out = tmp_path / "out"
    refused = subprocess.run(
        [HERMETIC, "build", ".", "--out", str(out)],
        env=env, cwd=project, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert refused.returncode != 0, refused.stdout
    assert ".npmrc: holds a credential" in refused.stdout + refused.stderr
    leaked = [p for p in tmp_path.rglob("*") if p.is_file() and b"LITERALTOKEN" in p.read_bytes()]
    assert leaked == [project / ".npmrc"], "the token is nowhere but in the project's file"

    # control: a reference to the environment is no credential; the build runs, and the
    # build's environment has no such variable (the user's token stays outside)
    (project / ".npmrc").write_text("//registry.npmjs.org/:_authToken=${NPM_TOKEN}\n")
    built = subprocess.run(
        [HERMETIC, "build", ".", "--out", str(out)],
        env=env, cwd=project, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    artifact = (out / "artifacts" / "out").read_text()
    assert artifact == "//registry.npmjs.org/:_authToken=${NPM_TOKEN}\n"
