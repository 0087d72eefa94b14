"""Cost of attestations: sign + verify of one build's provenance, and verification of
1,000 envelopes (ed25519), as a release gate would check them.

The statement is provenance-sized: a GNU hello-like predicate (spec, environment, limits,
byproducts), validated by the in-toto models as ``hermetic build`` does.

Usage: python -m bench.attest_cost [--envelopes 1000]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import tempfile
import time
from pathlib import Path

from rebuilder.attest.envelope import sign_payload, write_envelope
from rebuilder.attest.keys import generate_keypair, load_public_key, load_signer
from rebuilder.attest.statement import make_statement
from rebuilder.attest.verify import verify_attestation
from rebuilder.formats.fields import Subject
from sandbox.uris import SLSA_PROVENANCE


def predicate(index: int) -> dict[str, object]:
    return {
        "buildDefinition": {
            "buildType": "https://hermetic.dev/build-types/podman-sandbox/v1",
            "externalParameters": {
                "spec": {
                    "build": {
                        "image": "debian-bookworm",
                        "command": ["sh", "-c", "./configure && make"],
                        "outputs": ["hello-2.10/hello"],
                    },
                    "inputs": [{"url": f"https://example.org/{index}.tar.gz", "sha256": "0" * 64}],
                }
            },
            "internalParameters": {
                "environment": {f"VAR{i}": "x" * 20 for i in range(10)},
                "buildDir": "/build",
            },
            "resolvedDependencies": [
                {
                    "name": "image",
                    "uri": "localhost/hermetic/debian-bookworm",
                    "digest": {"sha256": "1" * 64},
                },
                {"name": "source", "digest": {"sha256": "2" * 64}},
            ],
        },
        "runDetails": {
            "builder": {"id": "https://hermetic.dev/builders/bench"},
            "metadata": {"invocationId": str(index), "startedOn": "2026-11-22T00:00:00Z"},
            "byproducts": [
                {"name": name, "digest": {"sha256": "3" * 64}}
                for name in ("result.json", "build.log", "trace.json")
            ]
            + [{"name": "hermeticity", "annotations": {"limits": {"x": "y" * 600}}}],
        },
    }


def statement(index: int) -> bytes:
    digest = hashlib.sha256(str(index).encode()).hexdigest()
    return make_statement([Subject("hello-2.10/hello", digest)], SLSA_PROVENANCE, predicate(index))


def main() -> None:
    parser = argparse.ArgumentParser(description="attestation sign and verify cost")
    parser.add_argument("--envelopes", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hermetic-bench-") as scratch:
        root = Path(scratch)
        generate_keypair(root / "key")
        signer = load_signer(str(root / "key"))
        key = load_public_key(root / "key.pub")
        sign_ms, verify_ms = [], []
        paths = []
        for index in range(args.envelopes):
            path = root / f"{index}.intoto.json"
            started = time.perf_counter()
            write_envelope(path, sign_payload(statement(index), [signer]))
            sign_ms.append((time.perf_counter() - started) * 1000)
            paths.append(path)
        for path in paths:
            started = time.perf_counter()
            outcome = verify_attestation(path, [key])
            verify_ms.append((time.perf_counter() - started) * 1000)
            assert outcome.ok, outcome.reasons
        size = paths[0].stat().st_size
    total = sum(verify_ms)
    signing, verifying = statistics.median(sign_ms), statistics.median(verify_ms)
    print(f"envelope size {size} bytes (provenance-sized), ed25519")
    print(f"sign (statement + DSSE + atomic write): median {signing:.3f} ms")
    print(f"verify one (read + signature + statement): median {verifying:.3f} ms")
    print(
        f"verify {len(paths)} envelopes: {total:.0f} ms total, {total / len(paths):.3f} ms each "
        f"(target <= 2 ms each)"
    )
    print(f"sign + verify per build: {signing + verifying:.3f} ms")


if __name__ == "__main__":
    main()
