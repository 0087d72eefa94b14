"""Gate decision latency: one artifact with 5 attestations (5 operators, threshold 3),
and 1,000 artifacts with 5 attestations each, read from a directory, ed25519; every rule
on (image, source, spec and command pins, network, loopback, trace completeness, age).

Usage: python -m bench.gate_cost [--artifacts 1000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from rebuilder.attest.envelope import sign_payload, write_envelope
from rebuilder.attest.keys import generate_keypair, load_signer
from rebuilder.attest.statement import make_statement
from rebuilder.formats.fields import Subject
from rebuilder.gate.gate import run_gate
from rebuilder.gate.policy import load_policy
from rebuilder.node.client import Credentials
from sandbox.digests import sha256_bytes
from sandbox.uris import SLSA_PROVENANCE

OPERATORS = 5
IMAGE = "1" * 64
SOURCE = "5" * 64
SPEC = "6" * 64


def provenance(name: str, digest: str, builder: str) -> bytes:
    predicate = {
        "buildDefinition": {
            "buildType": "https://hermetic.dev/build-types/podman-sandbox/v1",
            "externalParameters": {"spec": {"build": {"command": ["make"]}}},
            "resolvedDependencies": [
                {"name": "image", "digest": {"sha256": IMAGE}},
                {"name": "source", "digest": {"sha256": SOURCE}},
                {"name": "spec", "digest": {"sha256": SPEC}},
            ],
        },
        "runDetails": {
            "builder": {"id": builder},
            "metadata": {"finishedOn": datetime.now(tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")},
            "byproducts": [
                {
                    "name": "hermeticity",
                    "annotations": {
                        "networkAttempts": 0,
                        "loopbackAttempts": 0,
                        "traceComplete": True,
                        "traceGaps": [],
                    },
                }
            ],
        },
    }
    return make_statement([Subject(name, digest)], SLSA_PROVENANCE, predicate)


def setup(root: Path, artifacts: int) -> tuple[Path, list[Path], Path]:
    signers = []
    policy = (
        f'[policy]\nthreshold = 3\nmax_age = "30d"\nimages = ["sha256:{IMAGE}"]\n'
        f'sources = ["sha256:{SOURCE}"]\nspecs = ["sha256:{SPEC}"]\ncommands = [["make"]]\n'
    )
    for index in range(OPERATORS):
        generate_keypair(root / f"op{index}")
        signers.append(load_signer(str(root / f"op{index}")))
        policy += f'\n[[operators]]\nname = "op{index}"\nkeys = [{{ file = "op{index}.pub" }}]\n'
    (root / "policy.toml").write_text(policy)
    store = root / "attestations"
    store.mkdir()
    files = []
    for number in range(artifacts):
        artifact = root / "artifacts" / f"tool-{number}"
        artifact.parent.mkdir(exist_ok=True)
        artifact.write_bytes(f"release {number}\n".encode())
        digest = sha256_bytes(artifact.read_bytes())
        for index, signer in enumerate(signers):
            payload = provenance(artifact.name, digest, f"https://op{index}")
            write_envelope(store / f"{number}-{index}.intoto.json", sign_payload(payload, [signer]))
        files.append(artifact)
    return root / "policy.toml", files, store


def timed(policy: Path, artifacts: list[Path], store: Path) -> float:
    started = time.perf_counter()
    decisions, _ = run_gate(artifacts, load_policy(policy), [str(store)], credentials=Credentials())
    elapsed = time.perf_counter() - started
    assert all(d.admitted for d in decisions), [d.reasons for d in decisions if not d.admitted]
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description="gate decision latency")
    parser.add_argument("--artifacts", type=int, default=1000)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="hermetic-bench-") as one,
        tempfile.TemporaryDirectory(prefix="hermetic-bench-") as many,
    ):
        single = timed(*setup(Path(one), 1))
        total = timed(*setup(Path(many), args.artifacts))
    print(f"1 artifact, {OPERATORS} attestations: {single * 1000:.1f} ms (policy load included)")
    print(
        f"{args.artifacts} artifacts, {OPERATORS * args.artifacts} attestations: {total:.2f} s, "
        f"{total / args.artifacts * 1000:.2f} ms per artifact (target <= 10 ms)"
    )


if __name__ == "__main__":
    main()
