"""Toolchain images with real projects: each example under docs/examples is built twice,
the second time in another build directory, and gives the same digest (the image's
prefix maps, -trimpath and SOURCE_DATE_EPOCH at work); the programs run. The images are
the examples' inline [image] tables, built once per session (``toolchain_locks``)."""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from sandbox.build import BuildRequest, run_build
from sandbox.config import SandboxConfig
from sandbox.environment import NORMALIZED
from sandbox.podman_backend import PodmanBackend
from sandbox.result import BuildResult, BuildStatus
from sandbox.spec import Spec
from tests.conftest import REPO
from tests.integration.conftest import ToolchainLocks

EXAMPLES = REPO / "docs" / "examples"
ELSEWHERE = replace(NORMALIZED, build_dir="/var/build-elsewhere/src")


def build_twice(
    example: str, tmp_path: Path, backend: PodmanBackend, config: SandboxConfig, lock: Path
) -> tuple[BuildResult, BuildResult, Path]:
    """Build a copy of the example at /build, then at another path; both must agree."""
    source = tmp_path / example
    shutil.copytree(EXAMPLES / example, source)
    shutil.copy(lock, source / "hermetic.lock")  # the session's image (the same [image])
    spec = Spec.from_toml(source)
    results = []
    for name, environment in (("one", NORMALIZED), ("two", ELSEWHERE)):
        request = BuildRequest(spec=spec, out_dir=tmp_path / name, environment=environment)
        result = run_build(request, config=config, backend=backend)
        log = result.log.path.read_text("utf-8", "replace")[-3000:]
        assert result.status is BuildStatus.BUILT, log
        results.append(result)
    first, second = results
    assert first.digest == second.digest, (first.outputs, second.outputs)
    return first, second, tmp_path / "one" / "artifacts"


def run(program: Path) -> str:
    return subprocess.run([program], capture_output=True, text=True, timeout=30, check=True).stdout


@pytest.mark.slow
def test_python_wheel(
    tmp_path: Path,
    toolchain_locks: ToolchainLocks,
    backend: PodmanBackend,
    sandbox_config: SandboxConfig,
) -> None:
    first, _, artifacts = build_twice(
        "python-wheel", tmp_path, backend, sandbox_config, toolchain_locks("python")
    )
    wheel = artifacts / "dist" / "greeting-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        times = {info.date_time for info in archive.infolist()}
    assert "greeting/__init__.py" in names
    assert times == {(2023, 11, 14, 22, 13, 20)}, "SOURCE_DATE_EPOCH sets the zip times"
    assert ("PIP_NO_INDEX", "1") in first.env, "the image's environment reaches the build"


@pytest.mark.slow
def test_go_program(
    tmp_path: Path,
    toolchain_locks: ToolchainLocks,
    backend: PodmanBackend,
    sandbox_config: SandboxConfig,
) -> None:
    first, _, artifacts = build_twice(
        "go-hello", tmp_path, backend, sandbox_config, toolchain_locks("go")
    )
    # -trimpath: the module path, not the build directory, names the source file
    assert run(artifacts / "bin" / "hello") == "hello from example.org/hello/main.go\n"
    env = dict(first.env)
    assert env["GOCACHE"] == "/build/.cache/go-build" and "-trimpath" in env["GOFLAGS"]


@pytest.mark.slow
def test_rust_program(
    tmp_path: Path,
    toolchain_locks: ToolchainLocks,
    backend: PodmanBackend,
    sandbox_config: SandboxConfig,
) -> None:
    _, second, artifacts = build_twice(
        "rust-hello", tmp_path, backend, sandbox_config, toolchain_locks("rust")
    )
    assert run(artifacts / "target" / "release" / "hello") == "hello from src/main.rs\n"
    assert dict(second.env)["RUSTFLAGS"] == "--remap-path-prefix=/var/build-elsewhere/src=."


@pytest.mark.slow
@pytest.mark.parametrize("example", ["cmake-hello", "meson-hello"])
def test_c_and_cpp(
    example: str,
    tmp_path: Path,
    toolchain_locks: ToolchainLocks,
    backend: PodmanBackend,
    sandbox_config: SandboxConfig,
) -> None:
    _, _, artifacts = build_twice(example, tmp_path, backend, sandbox_config, toolchain_locks("c"))
    output = run(artifacts / "out" / "hello")
    assert output == "hello, world (from ./greet.c)\n" or output.startswith("hello, world"), output
    assert "/build" not in output


@pytest.mark.slow
def test_node_package(
    tmp_path: Path,
    toolchain_locks: ToolchainLocks,
    backend: PodmanBackend,
    sandbox_config: SandboxConfig,
) -> None:
    _, _, artifacts = build_twice(
        "node-pack", tmp_path, backend, sandbox_config, toolchain_locks("node")
    )
    listing = subprocess.run(
        ["tar", "-tzvf", artifacts / "hermetic-greeting-1.0.0.tgz"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "package/dist/index.js" in listing and "package/package.json" in listing


@pytest.mark.slow
def test_go_with_a_vendored_module(
    tmp_path: Path,
    toolchain_locks: ToolchainLocks,
    backend: PodmanBackend,
    sandbox_config: SandboxConfig,
) -> None:
    _, _, artifacts = build_twice(
        "go-vendored", tmp_path, backend, sandbox_config, toolchain_locks("go")
    )
    # a name-based UUID from the vendored module's code
    assert run(artifacts / "bin" / "uuidgen") == "9fa2eadc-b0fd-5e49-91b0-e0fd2274842f\n"


@pytest.mark.slow
def test_rust_with_a_vendored_crate(
    tmp_path: Path,
    toolchain_locks: ToolchainLocks,
    backend: PodmanBackend,
    sandbox_config: SandboxConfig,
) -> None:
    _, _, artifacts = build_twice(
        "rust-vendored", tmp_path, backend, sandbox_config, toolchain_locks("rust")
    )
    assert run(artifacts / "target" / "release" / "hashed") == "hash 42\n"
