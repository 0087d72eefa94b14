"""What the gate tests share: operators with keys on disk, an artifact, attestations
about it (the ``World``), and the clock they are judged by."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from securesystemslib.signer import CryptoSigner

from rebuilder.attest.envelope import sign_payload, write_envelope
from rebuilder.attest.keys import generate_keypair, load_public_key, load_signer
from rebuilder.attest.statement import make_statement
from rebuilder.formats.fields import Subject
from rebuilder.formats.provenance import SourceRef
from rebuilder.formats.rebuild import Agreement
from rebuilder.gate.gate import run_gate
from rebuilder.gate.policy import load_policy
from rebuilder.node.client import Credentials
from sandbox.uris import SLSA_PROVENANCE

IMAGE = "1" * 64
SOURCE = "5" * 64  # the source tree digest every honest build here names
SPEC = "6" * 64  # the sha256 of its hermetic.toml
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


class World:
    """Operators with keys on disk, an artifact, and a directory of attestations."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.keys: dict[str, list[Path]] = {}
        self.signers: dict[str, list[CryptoSigner]] = {}
        self.artifact = root / "hello"
        self.artifact.write_bytes(b"the release\n")
        self.digest = hashlib.sha256(self.artifact.read_bytes()).hexdigest()
        self.store = root / "attestations"
        self.store.mkdir()
        self.count = 0

    def operator(self, name: str, keys: int = 1) -> None:
        for index in range(keys):
            path = self.root / "keys" / f"{name}-{index}"
            generate_keypair(path)
            self.keys.setdefault(name, []).append(Path(f"{path}.pub"))
            signer = load_signer(str(path))
            assert isinstance(signer, CryptoSigner)
            self.signers.setdefault(name, []).append(signer)

    def policy(self, threshold: int = 2, extra: str = "", operators: str | None = None) -> Path:
        text = f'[policy]\nthreshold = {threshold}\nmax_age = "7d"\nimages = ["sha256:{IMAGE}"]\n'
        text += extra
        if operators is None:
            for name, files in self.keys.items():
                keys = ", ".join(f'{{ file = "{f}" }}' for f in files)
                text += f'\n[[operators]]\nname = "{name}"\nkeys = [{keys}]\n'
        else:
            text += operators
        path = self.root / "policy.toml"
        path.write_text(text)
        return path

    def provenance(
        self,
        by: str,
        *,
        digest: str | None = None,
        name: str = "hello",
        image: str = IMAGE,
        network: Any = 0,
        finished: datetime | None = None,
        key_index: int = 0,
        signer: CryptoSigner | None = None,
        source: dict[str, Any] | None = None,
        spec: str | None = SPEC,
        command: list[str] | None = None,
        hermeticity: dict[str, Any] | None = None,
    ) -> Path:
        dependencies: list[dict[str, Any]] = [
            {"name": "image", "digest": {"sha256": image}},
            source or {"name": "source", "digest": {"sha256": SOURCE}},
        ]
        if spec is not None:
            dependencies.append({"name": "spec", "digest": {"sha256": spec}})
        annotations = (
            hermeticity
            if hermeticity is not None
            else {
                "networkAttempts": network,
                "loopbackAttempts": 0,
                "traceComplete": True,
                "traceGaps": [],
            }
        )
        predicate = {
            "buildDefinition": {
                "buildType": "https://hermetic.dev/build-types/podman-sandbox/v1",
                "externalParameters": {"spec": {"build": {"command": command or ["make"]}}},
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": {"id": f"https://{by}"},
                "metadata": {
                    "finishedOn": (finished or NOW - timedelta(hours=1)).strftime(
                        "%Y-%m-%dT%H:%M:%SZ"
                    )
                },
                "byproducts": [{"name": "hermeticity", "annotations": annotations}],
            },
        }
        payload = make_statement([Subject(name, digest or self.digest)], SLSA_PROVENANCE, predicate)
        return self.save(sign_payload(payload, [signer or self.signers[by][key_index]]))

    def agreement(
        self,
        *by: str,
        created: datetime | None = None,
        source: str = SOURCE,
        spec: str = SPEC,
        digest: str | None = None,
    ) -> Path:
        """A combined agreement co-signed by the first key of each operator named."""
        payload = Agreement(
            outputs=(("hello", digest or self.digest),),
            threshold=len(by),
            request_sha256="0" * 64,
            source=SourceRef(sha256=source),
            spec_sha256=spec,
            nodes=(),
            created_on=created or NOW - timedelta(hours=1),
        ).payload()
        return self.save(sign_payload(payload, [self.signers[name][0] for name in by]))

    def save(self, envelope: dict[str, Any]) -> Path:
        self.count += 1
        path = self.store / f"{self.count:03d}.intoto.json"
        write_envelope(path, envelope)
        return path

    def decide(self, policy: Path) -> tuple[bool, tuple[str, ...]]:
        decisions, _ = run_gate(
            [self.artifact],
            load_policy(policy),
            [str(self.store)],
            credentials=Credentials(),
            now=NOW,
        )
        (decision,) = decisions
        return decision.admitted, decision.reasons


@pytest.fixture
def world(tmp_path: Path) -> World:
    made = World(tmp_path)
    for name in ("acme", "globex", "initech"):
        made.operator(name)
    return made


def upper_case_json(public_pem: Path, path: Path, keyid: str = "another-id") -> Path:
    """The same ed25519 key as securesystemslib JSON, spelled in upper case."""
    raw = load_public_key(public_pem).keyval["public"]
    path.write_text(
        json.dumps(
            {
                "keyid": keyid,
                "keytype": "ED25519",
                "scheme": "ed25519",
                "keyval": {"public": raw.upper()},
            }
        )
    )
    return path


def gate_args(world: World, policy: Path, *extra: str) -> list[str]:
    return [
        "gate",
        str(world.artifact),
        "--policy",
        str(policy),
        "--attestations",
        str(world.store),
        *extra,
    ]


def fresh(world: World) -> None:
    recent = datetime.now(tz=UTC) - timedelta(hours=1)
    world.provenance("acme", finished=recent)
    world.provenance("globex", finished=recent)
