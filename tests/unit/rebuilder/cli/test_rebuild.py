"""``hermetic rebuild`` through the CLI against nodes on loopback (fake sandbox backend)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rebuilder.cli import app
from sandbox.config import SandboxConfig
from tests.conftest import write_spec
from tests.nodes import TOKEN, RunningNode
from tests.schemas import validate_document, validate_envelope
from tests.unit.conftest import FAKE_SPEC

SPEC = FAKE_SPEC


@pytest.fixture
def config(fake_config: SandboxConfig) -> SandboxConfig:
    return fake_config


@pytest.fixture
def two_nodes(tmp_path: Path, config: SandboxConfig) -> Iterator[list[RunningNode]]:
    running = [RunningNode(tmp_path / f"n{i}", f"n{i}", config) for i in range(2)]
    yield running
    for node in running:
        node.stop()


def invoke(tmp_path: Path, config: SandboxConfig, *args: str) -> tuple[int, str, str]:
    env = {"HERMETIC_NODE_TOKEN": TOKEN, "HERMETIC_IMAGES_DIR": str(config.images_dir)}
    result = CliRunner().invoke(app, ["rebuild", *args], env=env)
    return result.exit_code, result.stdout, result.stderr


def test_two_pinned_nodes_agree_exit_0(
    tmp_path: Path, config: SandboxConfig, two_nodes: list[RunningNode]
) -> None:
    spec = write_spec(tmp_path / "src", SPEC)
    nodes = [arg for node in two_nodes for arg in ("--node", node.pinned)]
    out = tmp_path / "out"
    code, stdout, stderr = invoke(
        tmp_path, config, str(spec), *nodes, "--threshold", "2", "--out", str(out)
    )
    assert code == 0, stdout + stderr
    assert stdout.startswith("AGREED: 2 of 2 nodes reproduced 1 output(s) bit for bit; 2 co-signed")
    assert f"attest  {out / 'rebuild.intoto.json'}" in stdout
    assert "01-127.0.0.1_" in stderr  # progress per node
    document = json.loads((out / "rebuild.json").read_text())
    assert document["agreed"] and document["signatures"] == 2
    validate_document(document)
    validate_envelope(out / "rebuild.intoto.json")
    for node_report in document["nodes"]:
        validate_envelope(Path(node_report["attestationFile"]))
    args = ["verify", str(out / "rebuild.intoto.json"), "--threshold", "2"]
    for node in two_nodes:
        args += ["--key", str(node.public_key_file)]
    assert CliRunner().invoke(app, args).exit_code == 0


def test_a_wrong_pinned_key_is_not_trusted_exit_1(
    tmp_path: Path, config: SandboxConfig, two_nodes: list[RunningNode]
) -> None:
    spec = write_spec(tmp_path / "src", SPEC)
    swapped = f"{two_nodes[0].url}={two_nodes[1].public_key_file}"
    code, stdout, _ = invoke(
        tmp_path,
        config,
        str(spec),
        "--node",
        swapped,
        "--node",
        two_nodes[1].pinned,
        "--threshold",
        "2",
        "--out",
        str(tmp_path / "out"),
    )
    assert code == 1
    assert stdout.startswith("NOT AGREED: 1 of 2 nodes agree; 2 needed")
    assert "invalid" in stdout and "not the pinned" in stdout


def test_usage_errors_exit_2(tmp_path: Path, config: SandboxConfig) -> None:
    spec = write_spec(tmp_path / "src", SPEC)
    code, _, stderr = invoke(tmp_path, config, str(spec), "--threshold", "1")
    assert code == 2 and "--node URL" in stderr
    code, _, stderr = invoke(
        tmp_path, config, str(spec), "--node", "http://127.0.0.1:9", "--threshold", "2"
    )
    assert code == 2 and "more than the 1 nodes" in stderr


def test_the_gate_reads_attestations_from_the_nodes(
    tmp_path: Path, config: SandboxConfig, two_nodes: list[RunningNode]
) -> None:
    spec = write_spec(tmp_path / "src", SPEC)
    nodes = [arg for node in two_nodes for arg in ("--node", node.pinned)]
    code, _, _ = invoke(tmp_path, config, str(spec), *nodes, "--out", str(tmp_path / "out"))
    assert code == 0
    policy = tmp_path / "policy.toml"
    policy.write_text(
        # the fake backend traces nothing: no trace evidence to require
        "[policy]\nthreshold = 2\nallow_network_attempts = true\nallow_incomplete_trace = true\n"
        + "".join(
            f'\n[[operators]]\nname = "op{i}"\nnodes = ["{node.url}"]\n'
            f'keys = [{{ file = "{node.public_key_file}" }}]\n'
            for i, node in enumerate(two_nodes)
        )
    )
    # the fake build hands the spec back as its output: that is the artifact
    artifact = tmp_path / "out" / "hermetic.toml"
    artifact.write_bytes(spec.read_bytes())
    args = ["gate", str(artifact), "--policy", str(policy), "--token", TOKEN]
    done = CliRunner().invoke(app, args)  # the policy's nodes are asked
    assert done.exit_code == 0, done.output
    assert done.stdout.startswith(f"ADMIT {artifact}") and "(op0, op1)" in done.stdout
    two_nodes[1].stop()  # a required node that cannot be reached: fail closed
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 1 and "failing closed" in done.stdout
