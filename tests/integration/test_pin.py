"""Lockfiles become pinned inputs, with the real package index and npm registry (only in
'hermetic pin'); the builds run offline and give the same digest twice: wheels from real
sdists with hatchling, flit-core and setuptools, an application's venv, an npm package
with a dependency. Wrong hashes and unpinned requirements are refused before anything is
downloaded; the published wheel is compared with ours (check --against)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from sandbox.config import SandboxConfig
from sandbox.podman_api import PodmanSession
from tests.conftest import HERMETIC, REPO
from tests.integration.conftest import ToolchainLocks

TOMLI_WHEEL = (
    "https://files.pythonhosted.org/packages/97/75/"
    "10a9ebee3fd790d20926a90a2547f0bf78f371b2f13aa822c759680ca7b9/tomli-2.0.1-py3-none-any.whl"
)
TOMLI_WHEEL_SHA256 = "939de3e7a6161af0c887ef91b7d41a53e7c5a1ca976325f429cb46ea9bc30ecc"
CLICK_WHEEL_SHA256 = "ae74fb96c20a0277a1d615f1e4d73c8414f5a98db8b799a7931d1582f3390c28"


class Hermetic:
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


def example(name: str, tmp_path: Path, lock: Path) -> Path:
    project = tmp_path / name
    shutil.copytree(REPO / "docs" / "examples" / name, project)
    shutil.copy(lock, project / "hermetic.lock")
    return project


def build_twice(hermetic: Hermetic, project: Path, tmp_path: Path) -> Path:
    digests = []
    for name in ("one", "two"):
        done = hermetic(project, "build", ".", "--out", str(tmp_path / name), "--json")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr
        digests.append(json.loads(done.stdout)["digest"])
    assert digests[0] == digests[1]
    return tmp_path / "one"


@pytest.fixture
def hermetic(
    tmp_path: Path, sandbox_config: SandboxConfig, podman_session: PodmanSession
) -> Hermetic:
    return Hermetic(sandbox_config, podman_session, tmp_path)


@pytest.mark.slow
def test_wheels_from_sdists_with_three_backends(
    tmp_path: Path, hermetic: Hermetic, toolchain_locks: ToolchainLocks
) -> None:
    project = example("python-sdists", tmp_path, toolchain_locks("python"))
    pinned = hermetic(project, "pin", "pip", "requirements.txt", "--no-binary", ":all:", "--json")
    assert pinned.returncode == 0, pinned.stderr
    files = {f["filename"]: f for f in json.loads(pinned.stdout)["files"]}
    for sdist in ("userpath-1.9.2.tar.gz", "tomli-2.0.1.tar.gz", "six-1.17.0.tar.gz"):
        assert files[sdist]["why"] == "requirement"
    backends = {
        f["name"].lower().replace("_", "-") for f in files.values() if f["why"] != "requirement"
    }
    assert {"hatchling", "flit-core", "setuptools"} <= backends
    out = build_twice(hermetic, project, tmp_path)
    wheels = sorted(p.name for p in (out / "artifacts" / "dist").iterdir())
    assert wheels == [
        "six-1.17.0-py2.py3-none-any.whl",
        "tomli-2.0.1-py3-none-any.whl",
        "userpath-1.9.2-py3-none-any.whl",
    ]
    # the SBOM and the provenance name every pinned dependency by its purl
    sbom = json.loads((out / "sbom.spdx.json").read_text())
    purls = {
        ref["referenceLocator"]
        for package in sbom["packages"]
        if package["SPDXID"].startswith("SPDXRef-Input-")
        for ref in package.get("externalRefs", [])
    }
    assert {"pkg:pypi/userpath@1.9.2", "pkg:pypi/tomli@2.0.1", "pkg:pypi/six@1.17.0"} <= purls
    envelope = json.loads((out / "provenance.intoto.json").read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    dependencies = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
    annotated = {d["annotations"]["purl"] for d in dependencies if "annotations" in d}
    assert annotated == purls

    # compare our tomli wheel with the one published on PyPI: a real comparison, whose
    # difference (if any) diffoscope explains; and a control that a match is reported
    report = tmp_path / "check"
    against = f"{TOMLI_WHEEL}#sha256={TOMLI_WHEEL_SHA256}"
    checked = hermetic(
        project, "check", ".", "--builds", "2", "--vary", "build_path",
        "--report", str(report), "--against", against, "--json",
    )  # fmt: skip
    result = json.loads(checked.stdout)
    (compared,) = result["against"]
    assert compared["output"] == "dist/tomli-2.0.1-py3-none-any.whl"
    assert compared["published_sha256"] == f"sha256:{TOMLI_WHEEL_SHA256}"
    if compared["matches"]:
        assert checked.returncode == 0
    else:
        assert checked.returncode == 1 and Path(compared["diff"]).is_file()
    ours = out / "artifacts" / "dist" / "tomli-2.0.1-py3-none-any.whl"
    mine = f"{ours.as_uri()}#sha256={compared['output_sha256'].removeprefix('sha256:')}"
    control = hermetic(
        project, "check", ".", "--builds", "2", "--vary", "build_path",
        "--report", str(tmp_path / "check2"), "--against", mine, "--json",
    )  # fmt: skip
    assert json.loads(control.stdout)["against"][0]["matches"] is True
    assert control.returncode == 0, control.stderr


@pytest.mark.slow
def test_an_application_venv(
    tmp_path: Path, hermetic: Hermetic, toolchain_locks: ToolchainLocks
) -> None:
    project = example("python-venv", tmp_path, toolchain_locks("python"))
    pinned = hermetic(project, "pin", "pip", "requirements.txt")
    assert pinned.returncode == 0, pinned.stderr
    out = build_twice(hermetic, project, tmp_path)
    with tarfile.open(out / "artifacts" / "greet-venv.tar.gz") as archive:
        archive.extractall(tmp_path / "installed")
        names = archive.getnames()
    assert not [n for n in names if "/click/" in n and n.endswith(".pyc")]  # --no-compile
    venv = tmp_path / "installed" / "venv"
    ran = subprocess.run(
        [venv / "bin" / "python", venv / "bin" / "greet.py", "tests"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert ran.stdout == "hello, tests\n"


def test_wrong_hashes_and_unpinned_requirements_are_refused(
    tmp_path: Path, hermetic: Hermetic
) -> None:
    project = tmp_path / "p"
    project.mkdir()
    spec = project / "hermetic.toml"
    spec.write_text('[build]\ncommand = ["true"]\noutputs = ["x"]\n')
    before = spec.read_text()
    hermetic.env["HERMETIC_STORE"] = str(tmp_path / "store")  # empty: fetches show
    store = tmp_path / "store" / "sha256"
    wrong = "0" * 64
    (project / "requirements.txt").write_text(f"click==8.1.7 --hash=sha256:{wrong}\n")
    # the spec's image (debian-bookworm) has no Python: its Python and platform are asked for
    unknown = hermetic(project, "pin", "pip", "requirements.txt")
    assert unknown.returncode == 2 and "image debian-bookworm" in unknown.stderr
    assert "--python and --platform" in unknown.stderr
    target = ("--python", "3.11", "--platform", "manylinux_2_36_x86_64")
    refused = hermetic(project, "pin", "pip", "requirements.txt", *target)
    assert refused.returncode == 2 and "nothing was downloaded" in refused.stderr
    assert spec.read_text() == before
    assert not (store / CLICK_WHEEL_SHA256).exists(), "nothing was fetched"
    (project / "requirements.txt").write_text("click>=8\n")
    unpinned = hermetic(project, "pin", "pip", "requirements.txt", *target)
    assert unpinned.returncode == 2 and "requirements.txt:1: 'click>=8' is not pinned" in (
        unpinned.stderr
    )
    # control: the right hash pins, and the file is in the store
    (project / "requirements.txt").write_text(f"click==8.1.7 --hash=sha256:{CLICK_WHEEL_SHA256}\n")
    pinned = hermetic(project, "pin", "pip", "requirements.txt", *target)
    assert pinned.returncode == 0, pinned.stderr
    assert (store / CLICK_WHEEL_SHA256).is_file()
    assert f'sha256 = "{CLICK_WHEEL_SHA256}"' in spec.read_text()


@pytest.mark.slow
def test_an_npm_package_with_a_dependency(
    tmp_path: Path, hermetic: Hermetic, toolchain_locks: ToolchainLocks
) -> None:
    project = example("node-deps", tmp_path, toolchain_locks("node"))
    # a lockfile whose integrity the registry does not publish is refused first
    lock = project / "package-lock.json"
    good = lock.read_text()
    data = json.loads(good)
    data["packages"]["node_modules/ms"]["integrity"] = "sha512-" + "A" * 86 + "=="
    lock.write_text(json.dumps(data))
    spec_before = (project / "hermetic.toml").read_text()
    refused = hermetic(project, "pin", "npm", "package-lock.json")
    assert refused.returncode == 2 and "nothing was downloaded" in refused.stderr
    assert (project / "hermetic.toml").read_text() == spec_before
    lock.write_text(good)
    pinned = hermetic(project, "pin", "npm", "package-lock.json")
    assert pinned.returncode == 0, pinned.stderr
    assert "npm/ms-2.1.3.tgz" in pinned.stdout and "pkg:npm/ms@2.1.3" in pinned.stdout
    out = build_twice(hermetic, project, tmp_path)
    with tarfile.open(out / "artifacts" / "hermetic-durations-1.0.0.tgz") as archive:
        stream = archive.extractfile("package/dist/index.js")
        assert stream is not None
        assert b'"2m":120000' in stream.read()  # computed by the dependency, offline
