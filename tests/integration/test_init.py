"""hermetic init on one real upstream project per build system, then build, as a new user
would: the sources come from Debian's source archive, PyPI and npm, fetched by sha256 in
set-up; the builds have no network."""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest

from sandbox.config import SandboxConfig
from sandbox.digests import Sha256
from sandbox.fetch import fetch_input
from sandbox.podman_api import PodmanSession
from sandbox.spec import InputSpec
from sandbox.store import ContentStore
from tests.conftest import HERMETIC
from tests.integration.conftest import HELLO_SHA256, ToolchainLocks

DEBIAN = "https://deb.debian.org/debian/pool/main"


@dataclass(frozen=True)
class Upstream:
    system: str
    url: str
    sha256: str
    directory: str  # the top directory in the tarball
    expect: tuple[str, ...]  # files the build must produce (under artifacts/)


PROJECTS = {
    "autotools": Upstream(
        "autotools", f"{DEBIAN}/h/hello/hello_2.10.orig.tar.gz", HELLO_SHA256, "hello-2.10",
        ("dist/usr/bin/hello",),
    ),
    "cmake": Upstream(
        "cmake", f"{DEBIAN}/c/cjson/cjson_1.7.15.orig.tar.gz",
        "5308fd4bd90cef7aa060558514de6a1a4a0819974a26e6ed13973c5f624c24b2", "cJSON-1.7.15",
        ("dist/usr/include/cjson/cJSON.h",),
    ),
    "meson": Upstream(
        "meson", f"{DEBIAN}/libn/libnss-unknown/libnss-unknown_0.0.2.orig.tar.gz",
        "dc3b7fd764e1e91569f2a5e25eb43d2067e70100560d77495979e2d6ba2bf5cf",
        "libnss-unknown-v0.0.2", (),
    ),
    "make": Upstream(
        "make", f"{DEBIAN}/t/tree/tree_2.1.0.orig.tar.gz",
        "0160c535bff2b0dc6a830b9944e981e3427380f63e748da96ced7071faebabf6", "tree-2.1.0",
        ("tree",),
    ),
    "python": Upstream(
        "python",
        "https://files.pythonhosted.org/packages/c4/e6/"
        "c1ac50fe3eebb38a155155711e6e864e254ce4b6e17fe2429b4c4d5b9e80/flit_core-3.9.0.tar.gz",
        "72ad266176c4a3fcfab5f2930d76896059851240570ce9a98733b658cb786eba", "flit_core-3.9.0",
        ("dist/flit_core-3.9.0-py3-none-any.whl",),
    ),
    "npm": Upstream(
        "npm", "https://registry.npmjs.org/ms/-/ms-2.1.3.tgz",
        "f6616e15e530ed552f9daa2d3ce71963947c6bc7c98c9b64fd3e673fd02622c6", "package",
        ("ms-2.1.3.tgz",),
    ),
    "go": Upstream(
        "go",
        f"{DEBIAN}/g/golang-github-google-uuid/golang-github-google-uuid_1.3.0.orig.tar.gz",
        "7f7f37c47980e0afcc178a9ffc390bec29ed2371919b4c07658eb01791a7f921", "uuid-1.3.0",
        ("bin/uuid.a",),
    ),
    "cargo": Upstream(
        "cargo", f"{DEBIAN}/r/rust-precomputed-hash/rust-precomputed-hash_0.1.1.orig.tar.gz",
        "925383efa346730478fb4838dbe9137d2a47675ad789c546d150a6e1dd4ab31c",
        "precomputed-hash-0.1.1", ("target/release/libprecomputed_hash.rlib",),
    ),
}  # fmt: skip
TOOLCHAIN = {"python": "python", "npm": "node", "go": "go", "cargo": "rust"}  # else "c"


class Hermetic:
    """The hermetic command, as a user runs it, in the test's configuration."""

    def __init__(self, config: SandboxConfig, session: PodmanSession, home: Path) -> None:
        self.env = {
            **os.environ,
            "HERMETIC_IMAGES_DIR": str(config.images_dir),
            "HERMETIC_STORE": str(config.store_dir),
            "HERMETIC_WORK_DIR": str(config.work_dir),
            "HERMETIC_PODMAN_URL": session.url,
            "XDG_CONFIG_HOME": str(home / "config"),
            "HERMETIC_SIGN": "",
        }

    def __call__(self, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [HERMETIC, *args], env=self.env, cwd=cwd, capture_output=True, text=True, timeout=1200
        )


def unpack(project: Upstream, config: SandboxConfig, into: Path) -> Path:
    item = InputSpec(url=project.url, sha256=Sha256(project.sha256), dest=PurePosixPath("x"))
    tarball, _ = fetch_input(item, ContentStore(config.store_dir))
    subprocess.run(["tar", "-xf", tarball, "-C", into], check=True, timeout=60)
    return into / project.directory


@pytest.mark.slow
@pytest.mark.parametrize("system", list(PROJECTS))
def test_init_then_build(
    system: str,
    tmp_path: Path,
    sandbox_config: SandboxConfig,
    podman_session: PodmanSession,
    toolchain_locks: ToolchainLocks,
) -> None:
    project = PROJECTS[system]
    source = unpack(project, sandbox_config, tmp_path)
    hermetic = Hermetic(sandbox_config, podman_session, tmp_path)
    init = hermetic(source, "init")
    assert init.returncode == 0, init.stderr
    assert f"guessed {system} " in init.stdout, init.stdout
    # without a lock, build refuses: a lock is never written silently
    refused = hermetic(source, "build", ".", "--out", str(tmp_path / "refused"))
    assert refused.returncode == 2 and "has no lock" in refused.stderr, refused.stderr
    assert "hermetic image build" in refused.stderr
    # init writes the toolchain's [image] table, so the session's image of that table
    # (built from the example with the same table) is this project's image too: the
    # lock is copied instead of building the same image again ('hermetic image build .'
    # itself is tested in test_recipes.py)
    lock = toolchain_locks(TOOLCHAIN.get(system, "c"))
    mine = tomllib.loads((source / "hermetic.toml").read_text())["image"]
    assert mine == tomllib.loads((lock.parent / "hermetic.toml").read_text())["image"]
    shutil.copy(lock, source / "hermetic.lock")
    built = hermetic(source, "build", ".", "--out", str(tmp_path / "out"))
    assert built.returncode == 0, built.stdout + built.stderr
    artifacts = tmp_path / "out" / "artifacts"
    for expected in project.expect:
        assert (artifacts / expected).is_file(), sorted(p.name for p in artifacts.rglob("*"))
    if system == "autotools":
        ran = subprocess.run([artifacts / "dist/usr/bin/hello"], capture_output=True, text=True)
        assert ran.stdout == "Hello, world!\n"
    if system == "make":
        ran = subprocess.run([artifacts / "tree", "--version"], capture_output=True, text=True)
        assert ran.stdout.startswith("tree v2.1.0")
    if system == "meson":
        assert any(p.name == "libnss_unknown.so.2" for p in artifacts.rglob("*"))
    if system == "cmake":
        assert any(p.name.startswith("libcjson.so") for p in artifacts.rglob("*"))
