"""The build pipeline end to end, on the fake backend (the real one is in tests/integration)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from sandbox.backend import RunStatus
from sandbox.build import BuildRequest, run_build
from sandbox.config import SandboxConfig
from sandbox.errors import DigestMismatch, RootRefused
from sandbox.fake import FakeBackend, FakeRun, ScriptedTracer
from sandbox.plan import BuildPlan
from sandbox.result import BuildResult, BuildStatus
from sandbox.spec import Spec
from sandbox.trace.model import BuildTrace, NetworkAttempt
from tests.conftest import write_spec
from tests.unit.conftest import locked_images


@pytest.fixture
def config(tmp_path: Path) -> SandboxConfig:
    images = locked_images(tmp_path / "images")
    return SandboxConfig(
        store_dir=tmp_path / "store",
        work_dir=tmp_path / "work",
        images_dir=images,
    )


def build_as(request: BuildRequest, *, euid: int = 1000, **options: Any) -> BuildResult:
    """``run_build`` as the user ``euid`` (injected, never patched): unprivileged unless
    a test says otherwise."""
    return run_build(request, euid=euid, **options)


def spec_in(tmp_path: Path, extra: str = "", outputs: str = '["out.txt"]') -> Spec:
    source = tmp_path / "src"
    path = write_spec(
        source,
        f"""
[build]
image = "test-image"
command = ["make"]
outputs = {outputs}
source_date_epoch = 1000
{extra}
""",
    )
    (source / "Makefile").write_text("out.txt:\n\techo hi > $@\n")
    return Spec.from_toml(path)


def make_out(build_dir: Path, plan: BuildPlan) -> FakeRun:
    (build_dir / "out.txt").write_text("hi\n")
    return FakeRun(log=b"echo hi > out.txt\n")


def test_successful_build_publishes_everything(config: SandboxConfig, tmp_path: Path) -> None:
    backend = FakeBackend(script=make_out)
    out = tmp_path / "results"
    result = build_as(
        BuildRequest(spec=spec_in(tmp_path), out_dir=out), config=config, backend=backend
    )
    assert result.status is BuildStatus.BUILT and result.exit_code == 0
    assert (out / "artifacts" / "out.txt").read_text() == "hi\n"
    assert (out / "build.log").read_text() == "echo hi > out.txt\n"
    document = json.loads((out / "result.json").read_text())
    assert document == result.to_json()
    assert document["digest"] == f"sha256:{result.digest}"
    assert document["outputs"] == [
        {"path": "out.txt", "sha256": result.outputs[0].sha256, "size": 3, "mode": "0644"}
    ]
    assert document["image"].startswith("localhost/hermetic/test-image@sha256:")
    assert document["source_date_epoch"] == 1000
    assert set(document["limits"]) == {"timeout", "log", "pids", "memory", "disk"}
    assert document["log"]["path"] == str(out / "build.log")
    # the plan the backend received pins the staged source and the image
    (plan,) = backend.plans
    assert plan.image.reference == document["image"]
    assert not list(config.work_dir.iterdir()), "scratch space must be removed"


def test_failing_build_is_a_result_with_exit_code(config: SandboxConfig, tmp_path: Path) -> None:
    backend = FakeBackend(script=lambda d, p: FakeRun(log=b"error\n", exit_code=2))
    result = build_as(
        BuildRequest(spec=spec_in(tmp_path), out_dir=tmp_path / "o"), config=config, backend=backend
    )
    assert result.status is BuildStatus.FAILED and result.exit_code == 2
    assert result.digest is None and result.outputs == ()
    assert "status 2" in result.reason


@pytest.mark.parametrize(
    ("run", "status"),
    [
        (FakeRun(status=RunStatus.TIMEOUT), BuildStatus.TIMEOUT),
        (FakeRun(status=RunStatus.LIMIT_EXCEEDED, exceeded="memory"), BuildStatus.LIMIT_EXCEEDED),
    ],
)
def test_killed_builds(
    config: SandboxConfig, tmp_path: Path, run: FakeRun, status: BuildStatus
) -> None:
    result = build_as(
        BuildRequest(spec=spec_in(tmp_path), out_dir=tmp_path / "o"),
        config=config,
        backend=FakeBackend(script=lambda d, p: run),
    )
    assert result.status is status and result.exit_code is None


def test_missing_output_fails_the_build(config: SandboxConfig, tmp_path: Path) -> None:
    result = build_as(
        BuildRequest(spec=spec_in(tmp_path, outputs='["nothing-here"]'), out_dir=tmp_path / "o"),
        config=config,
        backend=FakeBackend(),
    )
    assert result.status is BuildStatus.FAILED and "matched nothing" in result.reason


def test_input_mismatch_places_nothing_and_runs_nothing(
    config: SandboxConfig, tmp_path: Path
) -> None:
    blob = tmp_path / "dep.tar.gz"
    blob.write_bytes(b"real")
    extra = f'[[inputs]]\nurl = "{blob.as_uri()}"\nsha256 = "{"0" * 64}"\ndest = "dep.tar.gz"\n'
    backend = FakeBackend()
    with pytest.raises(DigestMismatch):
        build_as(
            BuildRequest(spec=spec_in(tmp_path, extra), out_dir=tmp_path / "o"),
            config=config,
            backend=backend,
        )
    assert backend.plans == []
    assert not (tmp_path / "o").exists()


def test_inputs_are_placed_and_recorded(config: SandboxConfig, tmp_path: Path) -> None:
    blob = tmp_path / "dep.tar.gz"
    blob.write_bytes(b"real")
    digest = hashlib.sha256(b"real").hexdigest()
    extra = (
        f'[[inputs]]\nurl = "{blob.as_uri()}"\nsha256 = "{digest}"\ndest = "vendor/dep.tar.gz"\n'
    )
    seen: list[bytes] = []

    def script(build_dir: Path, plan: BuildPlan) -> FakeRun:
        seen.append((build_dir / "vendor" / "dep.tar.gz").read_bytes())
        assert (build_dir / "vendor" / "dep.tar.gz").stat().st_mtime == 1000
        (build_dir / "out.txt").write_text("x")
        return FakeRun()

    spec = spec_in(tmp_path, extra)
    first = build_as(
        BuildRequest(spec=spec, out_dir=tmp_path / "o1"),
        config=config,
        backend=FakeBackend(script=script),
    )
    second = build_as(
        BuildRequest(spec=spec, out_dir=tmp_path / "o2"),
        config=config,
        backend=FakeBackend(script=script),
    )
    assert seen == [b"real", b"real"]
    assert first.inputs[0].fetched and not second.inputs[0].fetched
    assert first.source_digest == second.source_digest


def test_root_is_refused(config: SandboxConfig, tmp_path: Path) -> None:
    with pytest.raises(RootRefused, match="--allow-root"):
        build_as(
            BuildRequest(spec=spec_in(tmp_path), out_dir=tmp_path / "o"),
            config=config,
            backend=FakeBackend(),
            euid=0,
        )
    allowed = SandboxConfig(**{**config.__dict__, "allow_root": True})
    result = build_as(
        BuildRequest(spec=spec_in(tmp_path), out_dir=tmp_path / "o"),
        config=allowed,
        backend=FakeBackend(script=make_out),
        euid=0,
    )
    assert result.status is BuildStatus.BUILT


def test_a_planted_link_in_the_handback_is_not_followed(tmp_path: Path) -> None:
    from sandbox.backend import SandboxBackend
    from sandbox.plan import Workspace

    out = tmp_path / "out"
    out.mkdir()
    secret = tmp_path / "secret"
    secret.write_text("0\n")
    os.symlink(secret, out / "status")
    workspace = Workspace(
        source=tmp_path,
        out=out,
        runner=tmp_path,
        busybox=tmp_path,
        container_log=tmp_path,
        seccomp_profile=tmp_path,
        source_archive=tmp_path,
        faketime=tmp_path,
    )
    assert SandboxBackend.read_handback(workspace) == (None, 0, None)
    (out / "status").unlink()
    (out / "status").write_text("0\n")  # negative control: the runner's own file is read
    (out / "build").mkdir()
    assert SandboxBackend.read_handback(workspace) == (0, 0, out / "build")


def test_an_injected_tracer_gives_the_fake_backend_traces(
    config: SandboxConfig, tmp_path: Path
) -> None:
    def saw(build_dir: Path, plan: BuildPlan) -> BuildTrace:
        assert (build_dir / "out.txt").is_file()  # traced after the build ran
        return BuildTrace(
            level="standard",
            executions=(),
            processes=(),
            exec_failures=0,
            files=(),
            network=(
                NetworkAttempt(
                    pid=7,
                    call="connect",
                    family="inet",
                    type="stream",
                    address="192.0.2.1",
                    port=443,
                    outcome="unreachable",
                ),
            ),
            nondeterminism=(),
            interfaces=("lo",),
        )

    traced = FakeBackend(script=make_out, tracer=ScriptedTracer(saw))
    result = run_build(
        BuildRequest(spec=spec_in(tmp_path), out_dir=tmp_path / "t"), config=config, backend=traced
    )
    assert result.trace["network_attempts"] == 1
    assert json.loads((tmp_path / "t" / "trace.json").read_text())["network"][0]["port"] == 443
    # negative control: without a tracer the fake backend's build has no trace
    untraced = run_build(
        BuildRequest(spec=spec_in(tmp_path / "u"), out_dir=tmp_path / "u" / "o"),
        config=config,
        backend=FakeBackend(script=make_out),
    )
    assert "network_attempts" not in untraced.trace
    assert not (tmp_path / "u" / "o" / "trace.json").exists()
