"""Integration fixtures: a real podman API session, real images, an unprivileged user.

These tests fail (they do not skip) when podman or the images are unusable: a
sandbox test that silently skips proves nothing. Deselect them with
``-m "not integration"`` on a machine without the set-up.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import pytest

from sandbox.build import BuildRequest, run_build
from sandbox.config import SandboxConfig
from sandbox.digests import Sha256
from sandbox.fetch import fetch_input
from sandbox.image_build import ImageBuildStatus, build_image
from sandbox.images import ImageCatalog
from sandbox.podman_api import PodmanService, PodmanSession
from sandbox.podman_backend import PodmanBackend
from sandbox.result import BuildResult
from sandbox.spec import InputSpec, Spec
from sandbox.store import ContentStore
from sandbox.trace.levels import TraceLevel
from tests.conftest import REPO, write_spec

HELLO_SHA256 = Sha256("31e066137a962676e89f69d1b65382de95a7ef7d914b8cb956f41ea72e0f516b")
HELLO_URL = "https://deb.debian.org/debian/pool/main/h/hello/hello_2.10.orig.tar.gz"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def sandbox_config(tmp_path_factory: pytest.TempPathFactory) -> SandboxConfig:
    if os.geteuid() == 0:
        pytest.fail(
            "integration tests run rootless: run them as the unprivileged build user "
            "(.ci/test does: runuser -u hermetic)"
        )
    base = tmp_path_factory.mktemp("hermetic")
    images = base / "images"
    # A private copy, so a lock refreshed for a moved Debian archive never touches the repo.
    shutil.copytree(REPO / "images", images)
    return SandboxConfig(
        store_dir=Path(os.environ.get("HERMETIC_STORE") or base / "store"),
        work_dir=base / "work",
        images_dir=images,
    )


@pytest.fixture(scope="session")
def podman_session(sandbox_config: SandboxConfig) -> Iterator[PodmanSession]:
    with PodmanService(url=sandbox_config.podman_url) as session:
        # check and rebuild compare outputs with diffoscope in its own locked image
        _ensure_image("diffoscope", session, sandbox_config)
        yield session


def _ensure_image(name: str, session: PodmanSession, config: SandboxConfig) -> None:
    lock = config.images_dir / name / "lock.json"
    # A lock an earlier run refreshed (the repository's no longer matches the Debian
    # archive): its image is loaded, so this run need not build the image twice again.
    refreshed = Path.home() / ".cache" / "hermetic-tests" / "locks" / f"{name}.json"
    definition = ImageCatalog(config.images_dir).get(name)
    repository_lock = definition.lock
    stale = repository_lock is None or not session.image_exists(repository_lock.reference)
    if stale and refreshed.is_file():
        shutil.copyfile(refreshed, lock)
        definition = ImageCatalog(config.images_dir).get(name)
    outcome = build_image(definition, store=session, work_dir=config.work_dir)
    if outcome.status is ImageBuildStatus.MISMATCH:
        warnings.warn(
            f"images/{name}/lock.json no longer matches what the Debian archive gives "
            f"({'; '.join(outcome.package_changes()[:5])}); the tests use a refreshed "
            f"private lock. Run 'hermetic image build {name} --update-lock' and commit it.",
            stacklevel=1,
        )
        build_image(definition, store=session, work_dir=config.work_dir, update_lock=True)
        refreshed.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(lock, refreshed)


@pytest.fixture(scope="session")
def minimal_image(podman_session: PodmanSession, sandbox_config: SandboxConfig) -> str:
    _ensure_image("hermetic-minimal", podman_session, sandbox_config)
    return "hermetic-minimal"


@pytest.fixture(scope="session")
def bookworm_image(podman_session: PodmanSession, sandbox_config: SandboxConfig) -> str:
    _ensure_image("debian-bookworm", podman_session, sandbox_config)
    return "debian-bookworm"


@pytest.fixture
def backend(podman_session: PodmanSession, sandbox_config: SandboxConfig) -> PodmanBackend:
    return PodmanBackend(podman_session, seccomp_base=sandbox_config.seccomp_base)


@pytest.fixture(scope="session")
def hello_tarball(sandbox_config: SandboxConfig) -> Path:
    """GNU hello 2.10: the shared fixture, else Debian's copy of the same tarball."""
    for candidate in (
        os.environ.get("HERMETIC_HELLO_TARBALL"),
        str(REPO.parent / "shared" / "fixtures" / "hello-2.10.tar.gz"),
    ):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    item = InputSpec(url=HELLO_URL, sha256=HELLO_SHA256, dest=PurePosixPath("hello.tar.gz"))
    path, _ = fetch_input(item, ContentStore(sandbox_config.store_dir))
    return path


def hello_spec(tarball: Path) -> str:
    return f"""
[build]
image = "debian-bookworm"
command = ["sh", "-c", "tar -xzf hello-2.10.tar.gz && cd hello-2.10 && ./configure && make"]
outputs = ["hello-2.10/hello"]
source_date_epoch = 1416009600

[[inputs]]
url = "{tarball.as_uri()}"
sha256 = "{HELLO_SHA256}"
dest = "hello-2.10.tar.gz"

[limits]
timeout = "20m"
disk = "1GiB"
"""


class Builder(Protocol):
    def __call__(
        self,
        spec_text: str,
        *,
        name: str = "b",
        files: dict[str, str] | None = None,
        trace: TraceLevel = TraceLevel.STANDARD,
    ) -> BuildResult: ...


@pytest.fixture
def build(tmp_path: Path, backend: PodmanBackend, sandbox_config: SandboxConfig) -> Builder:
    """``build(spec_text, name=..., files=..., trace=...)``: a real build in tmp_path/src-NAME,
    its results in tmp_path/out-NAME."""

    def run(
        spec_text: str,
        *,
        name: str = "b",
        files: dict[str, str] | None = None,
        trace: TraceLevel = TraceLevel.STANDARD,
    ) -> BuildResult:
        spec = Spec.from_toml(write_spec(tmp_path / f"src-{name}", spec_text))
        for relative, text in (files or {}).items():
            (spec.source_dir / relative).write_text(text)
        request = BuildRequest(spec=spec, out_dir=tmp_path / f"out-{name}", trace=trace)
        return run_build(request, config=sandbox_config, backend=backend)

    return run


def hermetic_env(config: SandboxConfig, **extra: str) -> dict[str, str]:
    """The environment of a ``hermetic`` command run as a user runs it (the default podman
    service), with the session's images, store and scratch space."""
    return {
        **os.environ,
        "HERMETIC_IMAGES_DIR": str(config.images_dir),
        "HERMETIC_STORE": str(config.store_dir),
        "HERMETIC_WORK_DIR": str(config.work_dir),
        **extra,
    }


def trace_of(result: BuildResult) -> dict[str, Any]:
    """The trace.json a build published."""
    data: dict[str, Any] = json.loads((Path(result.out_dir) / "trace.json").read_text())
    return data


def log_of(result: BuildResult) -> str:
    return result.log.path.read_text("utf-8", "replace")


# The toolchain images are the inline [image] tables that 'hermetic init' writes; the
# examples under docs/examples carry the same tables and their locks. Each is built once
# per session (a minute or so on a fresh machine) and shared by every test that needs it:
# the example builds and the init tests.
TOOLCHAIN_EXAMPLES = {
    "python": "python-wheel",
    "go": "go-hello",
    "rust": "rust-hello",
    "c": "cmake-hello",
    "node": "node-pack",
}


class ToolchainLocks:
    """``locks(toolchain)``: the lock of a toolchain image that is loaded now."""

    def __init__(self, base: Path, session: PodmanSession, config: SandboxConfig) -> None:
        self.base, self.session, self.config = base, session, config
        self.locks: dict[str, Path] = {}

    def __call__(self, toolchain: str) -> Path:
        if toolchain in self.locks:
            return self.locks[toolchain]
        example = REPO / "docs" / "examples" / TOOLCHAIN_EXAMPLES[toolchain]
        directory = self.base / toolchain
        directory.mkdir()
        for name in ("hermetic.toml", "hermetic.lock"):
            if (example / name).is_file():
                shutil.copy(example / name, directory / name)
        spec = Spec.from_toml(directory)
        definition = ImageCatalog(self.config.images_dir).definition(spec.image, spec_dir=directory)
        assert definition is not None
        store, work = self.session, self.config.work_dir
        outcome = build_image(definition, store=store, work_dir=work)
        if outcome.status is ImageBuildStatus.MISMATCH:
            warnings.warn(
                f"{example}/hermetic.lock no longer matches what the Debian archive gives "
                f"({'; '.join(outcome.package_changes()[:5])}); the tests use a refreshed "
                f"private lock. Run 'hermetic image build {example} --update-lock'.",
                stacklevel=1,
            )
            build_image(definition, store=store, work_dir=work, update_lock=True)
        self.locks[toolchain] = directory / "hermetic.lock"
        return self.locks[toolchain]


@pytest.fixture(scope="session")
def toolchain_locks(
    tmp_path_factory: pytest.TempPathFactory,
    podman_session: PodmanSession,
    sandbox_config: SandboxConfig,
) -> ToolchainLocks:
    return ToolchainLocks(tmp_path_factory.mktemp("toolchains"), podman_session, sandbox_config)
