"""The gate binds the source, for real: rootless podman builds on real nodes and through
the CLI, real keys, the real gate (issue 12, point 3)."""

from __future__ import annotations

import base64
import json
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rebuilder.cli import app
from rebuilder.formats.provenance import Provenance
from sandbox.config import SandboxConfig
from sandbox.digests import sha256_file
from sandbox.podman_api import PodmanSession
from sandbox.source_tree import tree_digest
from tests.conftest import write_spec
from tests.integration.test_attest import hermetic
from tests.integration.test_rebuild import nodes, run_rebuild

SPEC = """
[build]
image = "{image}"
command = ["sh", "-c", '''{script}''']
outputs = ["out.txt"]
source_date_epoch = 1700000000
"""
RELEASE = b"release 1.0\n"


@pytest.fixture
def config(sandbox_config: SandboxConfig, podman_session: PodmanSession) -> SandboxConfig:
    return replace(sandbox_config, podman_url=podman_session.url)


def policy_for(path: Path, keys: list[Path], extra: str = "") -> Path:
    text = f"[policy]\nthreshold = {len(keys)}\n{extra}" + "".join(
        f'\n[[operators]]\nname = "op{i}"\nkeys = [{{ file = "{key}" }}]\n'
        for i, key in enumerate(keys)
    )
    path.write_text(text)
    return path


def gate(artifact: Path, policy: Path, attestations: Path) -> tuple[int, str]:
    args = ["gate", str(artifact), "--policy", str(policy), "--attestations", str(attestations)]
    done = CliRunner().invoke(app, args)
    return done.exit_code, done.output


def test_k_nodes_reproducing_a_vendored_binary_are_denied_by_a_source_pin(
    tmp_path: Path, config: SandboxConfig, minimal_image: str
) -> None:
    honest = write_spec(
        tmp_path / "honest",
        SPEC.format(image=minimal_image, script="printf 'release 1.0\\n' > out.txt"),
    ).parent
    vendored = write_spec(
        tmp_path / "vendored", SPEC.format(image=minimal_image, script="cp prebuilt out.txt")
    ).parent
    (vendored / "prebuilt").write_bytes(RELEASE)  # a binary nobody can rebuild from source
    with nodes(tmp_path / "nodes", config, 2) as running:
        bad = run_rebuild(vendored, running, 2, tmp_path / "bad")
        good = run_rebuild(honest, running, 2, tmp_path / "good")
        keys = [node.public_key_file for node in running]
    assert bad.agreed and good.agreed, [(n.verdict, n.reason) for n in bad.nodes + good.nodes]
    assert bad.outputs == good.outputs  # the same bytes: the attack is real
    artifact = tmp_path / "out.txt"
    artifact.write_bytes(RELEASE)
    unpinned = policy_for(tmp_path / "unpinned.toml", keys)
    code, output = gate(artifact, unpinned, tmp_path / "bad")
    assert code == 0, output  # control: K operators and the bytes alone admit it
    pinned = policy_for(
        tmp_path / "pinned.toml", keys, f'sources = ["sha256:{tree_digest(honest)}"]\n'
    )
    code, output = gate(artifact, pinned, tmp_path / "bad")
    assert code == 1 and "which the policy does not allow" in output, output
    code, output = gate(artifact, pinned, tmp_path / "good")
    assert code == 0, output  # positive control: built from the pinned source


def git(directory: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(directory), *args],
        check=True,
        capture_output=True,
    )


def test_a_build_from_a_git_checkout_names_its_commit_and_spec(
    tmp_path: Path, sandbox_config: SandboxConfig, podman_session: PodmanSession, minimal_image: str
) -> None:
    source = write_spec(
        tmp_path / "src",
        SPEC.format(image=minimal_image, script="printf 'release 1.0\\n' > out.txt"),
    ).parent
    (source / ".gitignore").write_text("hermetic-out/\n")
    git(source, "init", "-q")
    git(source, "remote", "add", "origin", "https://git.example/acme/release.git")
    git(source, "add", ".")
    git(source, "commit", "-qm", "1.0")
    commit = subprocess.run(
        ["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert (
        hermetic(sandbox_config, podman_session, tmp_path, "keygen", "--out", "ci").returncode == 0
    )
    out = tmp_path / "out"
    built = hermetic(
        sandbox_config,
        podman_session,
        tmp_path,
        "build",
        str(source),
        "--out",
        str(out),
        "--sign",
        "ci",
    )
    assert built.returncode == 0, built.stderr
    envelope = json.loads((out / "provenance.intoto.json").read_text())
    facts = Provenance.from_dict(json.loads(base64.b64decode(envelope["payload"]))["predicate"])
    assert facts.source is not None and facts.source.git_commit == commit
    assert facts.source.uri == f"git+https://git.example/acme/release.git@{commit}"
    assert facts.spec_sha256 == sha256_file(source / "hermetic.toml")[0]
    assert facts.hermeticity is not None and facts.hermeticity.complete
    pinned = policy_for(
        tmp_path / "policy.toml",
        [tmp_path / "ci.pub"],
        f'sources = ["git+https://git.example/acme/release@{commit}"]\n',
    )
    code, output = gate(out / "artifacts" / "out.txt", pinned, out)
    assert code == 0, output
    other = policy_for(
        tmp_path / "other.toml",
        [tmp_path / "ci.pub"],
        f'sources = ["git+https://git.example/acme/release@{"0" * 40}"]\n',
    )
    code, output = gate(out / "artifacts" / "out.txt", other, out)
    assert code == 1 and "does not allow" in output
