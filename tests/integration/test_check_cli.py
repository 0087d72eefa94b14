"""``hermetic check`` as a user runs it: the installed command, real podman, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from sandbox.config import SandboxConfig
from sandbox.podman_api import PodmanSession
from tests.conftest import HERMETIC, write_spec
from tests.schemas import validate_document, validate_envelope

SPEC = """
[build]
image = "{image}"
command = ["sh", "-c", '''{script}''']
outputs = ["out.txt"]
"""


def hermetic_check(
    tmp_path: Path,
    config: SandboxConfig,
    session: PodmanSession,
    image: str,
    script: str,
    *options: str,
) -> subprocess.CompletedProcess[str]:
    spec = write_spec(tmp_path / "src", SPEC.format(image=image, script=script))
    env = {
        **os.environ,
        "HERMETIC_IMAGES_DIR": str(config.images_dir),
        "HERMETIC_STORE": str(config.store_dir),
        "HERMETIC_WORK_DIR": str(config.work_dir),
        "HERMETIC_PODMAN_URL": session.url,
    }
    return subprocess.run(
        [str(HERMETIC), "check", str(spec), "--report", str(tmp_path / "report"), *options],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_reproducible_exits_0(
    tmp_path: Path, sandbox_config: SandboxConfig, podman_session: PodmanSession, minimal_image: str
) -> None:
    done = hermetic_check(
        tmp_path, sandbox_config, podman_session, minimal_image, "echo same > out.txt", "--json"
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["reproducible"] is True and len(result["builds"]) == 2
    assert (tmp_path / "report" / "check.json").is_file()
    validate_document(result)
    validate_envelope(tmp_path / "report" / "check.intoto.json")


def test_not_reproducible_exits_1_with_verdict_culprit_and_hint(
    tmp_path: Path, sandbox_config: SandboxConfig, podman_session: PodmanSession, minimal_image: str
) -> None:
    done = hermetic_check(
        tmp_path,
        sandbox_config,
        podman_session,
        minimal_image,
        "uname -n > out.txt",
        "--vary=hostname,home",
    )
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "NOT REPRODUCIBLE: 1 output differs; culprit: hostname"
    assert lines[1] == "why:" and "uname -n" in done.stdout
    assert f"results {tmp_path / 'report'}" in lines
    validate_document(json.loads((tmp_path / "report" / "check.json").read_text()))
    validate_envelope(tmp_path / "report" / "check.intoto.json")


def test_a_failing_build_exits_2_not_1(
    tmp_path: Path, sandbox_config: SandboxConfig, podman_session: PodmanSession, minimal_image: str
) -> None:
    done = hermetic_check(tmp_path, sandbox_config, podman_session, minimal_image, "exit 3")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "the control build failed" in done.stderr and "build.log" in done.stderr
    assert done.stdout == ""


def test_a_bad_spec_exits_2_before_any_build(
    tmp_path: Path, sandbox_config: SandboxConfig, podman_session: PodmanSession
) -> None:
    done = hermetic_check(
        tmp_path, sandbox_config, podman_session, "debian-bookworm:latest", "true"
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "hermetic.toml" in done.stderr and "build.image" in done.stderr
    assert not (tmp_path / "report").exists()
