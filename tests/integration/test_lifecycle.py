"""The container is always removed: on success, on Ctrl-C and on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from sandbox.config import SandboxConfig
from tests.integration.test_limits import HEAD, containers_left


def remove_leftover_containers() -> None:
    for name in containers_left().split():
        subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True, timeout=60)


SLEEPER = f'{HEAD}command = ["sh", "-c", "echo sleeping; sleep infinity"]\n'


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_build_leaves_no_container(
    tmp_path: Path, minimal_image: str, sandbox_config: SandboxConfig, signum: int
) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "hermetic.toml").write_text(SLEEPER)
    env = dict(
        os.environ,
        HERMETIC_IMAGES_DIR=str(sandbox_config.images_dir),
        HERMETIC_STORE=str(sandbox_config.store_dir),
        HERMETIC_WORK_DIR=str(sandbox_config.work_dir),
    )
    # A suite started in the background (`cmd &` in a script) inherits an ignored SIGINT,
    # and so would hermetic: give the child the default disposition, as a terminal does.
    previous = signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        process = subprocess.Popen(
            ["hermetic", "build", str(tmp_path / "src"), "--out", str(tmp_path / "out")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        deadline = time.monotonic() + 120
        while containers_left() == "":
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the build container never appeared"
            time.sleep(0.2)
        time.sleep(1)  # let the build start
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
            remove_leftover_containers()  # so one failure does not fail the tests after it
    assert process.returncode == 2
    assert "interrupted" in stderr
    assert containers_left() == ""
    assert not (tmp_path / "out").exists(), "no partial results are published"
    assert [p for p in (tmp_path).iterdir() if p.name.startswith(".out.partial")] == []
