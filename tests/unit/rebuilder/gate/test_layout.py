"""The policy exported as an in-toto layout: in-toto's own verification accepts what the
gate admits and rejects what it denies, on the same keys and the same rebuilt artifact."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from in_toto.models.link import Link
from in_toto.models.metadata import Metablock
from in_toto.verifylib import in_toto_verify
from securesystemslib.signer import CryptoSigner

from rebuilder.gate.layout import REBUILD_STEP, write_layout
from rebuilder.gate.policy import load_policy
from tests.unit.rebuilder.gate.conftest import World


@contextmanager
def inside(directory: Path) -> Iterator[None]:
    previous = Path.cwd()
    os.chdir(directory)
    try:
        yield
    finally:
        os.chdir(previous)


def link(world: World, operator: str, digest: str, links: Path) -> None:
    signer = world.signers[operator][0]
    metablock = Metablock(
        signed=Link(name=REBUILD_STEP, products={"hello": {"sha256": digest}}, materials={})
    )
    metablock.create_signature(signer)
    metablock.dump(str(links / f"{REBUILD_STEP}.{signer.public_key.keyid[:8]}.link"))


def in_toto_accepts(owner: CryptoSigner, layout: Path, links: Path, release: Path) -> bool:
    """in-toto's verification, run in the directory holding the release artifacts."""
    metablock = Metablock.load(str(layout))
    key = owner.public_key
    with inside(release):
        try:
            in_toto_verify(
                metablock,
                {key.keyid: {"keyid": key.keyid, **key.to_dict()}},
                link_dir_path=str(links),
                persist_inspection_links=False,
            )
        except Exception:  # noqa: BLE001 - in-toto raises one kind per failed rule
            return False
    return True


@pytest.mark.parametrize(
    ("case", "vouching", "artifact_changed", "admitted"),
    [
        ("k agree", ["acme", "globex"], False, True),
        ("fewer than k", ["acme"], False, False),
        ("artifact modified after the rebuild", ["acme", "globex"], True, False),
    ],
)
def test_in_toto_and_the_gate_decide_alike(
    tmp_path: Path, case: str, vouching: list[str], artifact_changed: bool, admitted: bool
) -> None:
    world = World(tmp_path)
    for name in ("acme", "globex", "initech"):
        world.operator(name)
    policy_path = world.policy(extra="allow_network_attempts = true\n")
    policy = load_policy(policy_path)
    owner = CryptoSigner.generate_ed25519()  # the release owner signs the layout
    layout = write_layout(policy, owner, tmp_path / "root.layout")
    links = tmp_path / "links"
    links.mkdir()
    for operator in vouching:
        world.provenance(operator)
        link(world, operator, world.digest, links)
    if artifact_changed:
        world.artifact.write_bytes(b"the release, patched afterwards\n")
    release = tmp_path / "release"
    release.mkdir()
    (release / "hello").write_bytes(world.artifact.read_bytes())

    gate_admits, reasons = world.decide(policy_path)
    assert gate_admits is admitted, reasons
    assert in_toto_accepts(owner, layout, links, release) is admitted


def test_hermetic_layout_writes_a_layout_in_toto_loads(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from rebuilder.attest.keys import generate_keypair
    from rebuilder.cli import app

    world = World(tmp_path)
    for name in ("acme", "globex"):
        world.operator(name)
    generate_keypair(tmp_path / "owner")
    out = tmp_path / "root.layout"
    args = ["layout", "--policy", str(world.policy()), "--key", str(tmp_path / "owner")]
    done = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert done.exit_code == 0, done.output
    layout = Metablock.load(str(out)).signed
    (step,) = layout.steps
    assert step.name == REBUILD_STEP and step.threshold == 2 and len(step.pubkeys) == 2
