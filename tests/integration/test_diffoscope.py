"""diffoscope compares untrusted files only inside its own locked container."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from rebuilder.diffreport import DiffoscopeSandbox, diff_outputs
from sandbox.config import SandboxConfig
from sandbox.podman_api import PodmanSession


def test_diffoscope_runs_in_its_container_not_on_the_host(
    tmp_path: Path,
    sandbox_config: SandboxConfig,
    podman_session: PodmanSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for side, text in (("control", "one\n"), ("other", "two\n")):
        (tmp_path / side).mkdir()
        (tmp_path / side / "f.txt").write_text(text)
    # the host's programs without diffoscope: a host diffoscope cannot be what runs
    tools = tmp_path / "bin"
    tools.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        for program in Path(directory).glob("*") if Path(directory).is_dir() else []:
            if program.name != "diffoscope" and not (tools / program.name).exists():
                os.symlink(program, tools / program.name)
    assert shutil.which("podman", path=str(tools)) is not None
    monkeypatch.setenv("PATH", str(tools))
    assert shutil.which("diffoscope") is None
    report = diff_outputs(
        control=tmp_path / "control",
        other=tmp_path / "other",
        paths=["f.txt"],
        report_dir=tmp_path / "report",
        config=sandbox_config,
    )
    assert report.error == "" and report.text is not None
    text = report.text.read_text()
    assert "-one" in text and "+two" in text
    argv = DiffoscopeSandbox.from_config(sandbox_config).argv(
        tmp_path / "in", tmp_path / "out", 60, ["diffoscope"]
    )
    for flag in ("--network=none", "--read-only", "--cap-drop=all", "--pull=never"):
        assert flag in argv
    assert f"--volume={tmp_path / 'in'}:/in:ro" in argv
    # negative control: without its image there is no report, and no fallback to the host
    missing = SandboxConfig(
        store_dir=tmp_path / "s", work_dir=tmp_path / "w", images_dir=tmp_path / "no-images"
    )
    none = diff_outputs(
        control=tmp_path / "control",
        other=tmp_path / "other",
        paths=["f.txt"],
        report_dir=tmp_path / "report2",
        config=missing,
    )
    assert none.text is None and "diffoscope" in none.error
