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


PROBE = """
import os, socket
print("uid", os.getuid())
lines = open("/proc/net/dev").read().splitlines()[2:]
print("interfaces", ",".join(sorted(line.split(":")[0].strip() for line in lines)))
probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    probe.connect(("192.0.2.1", 9))
    print("route", "yes")
except OSError:
    print("route", "no")
limits = open("/proc/self/limits").read().splitlines()
print("processes", next(line for line in limits if line.startswith("Max processes")).split()[2])
"""


def probe(argv: list[str]) -> dict[str, str]:
    from sandbox.proc import run as run_program

    done = run_program(argv, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    return dict(line.split(" ", 1) for line in done.stdout.decode().splitlines() if " " in line)


def test_inside_diffoscope_s_container_there_is_no_network_and_no_root(
    tmp_path: Path, sandbox_config: SandboxConfig, podman_session: PodmanSession
) -> None:
    import sys

    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    sandbox = DiffoscopeSandbox.from_config(sandbox_config)
    argv = sandbox.argv(tmp_path / "in", tmp_path / "out", 60, ["python3", "-c", PROBE])
    inside = probe(argv)
    assert inside["interfaces"] == "lo" and inside["route"] == "no", inside
    assert inside["uid"] != "0" and inside["processes"] == str(sandbox.processes), inside
    # negative controls: the probe sees a network where there is one (this host), and
    # root where the container's user is not mapped away
    outside = probe([sys.executable, "-c", PROBE])
    assert outside["route"] == "yes" and outside["interfaces"] != "lo", outside
    as_root = probe([arg for arg in argv if arg != "--userns=keep-id"])
    assert as_root["uid"] == "0", as_root
