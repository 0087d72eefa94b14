"""Provenance for real: a rootless podman build, signed with a real key, verified."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

from sandbox.config import SandboxConfig
from sandbox.podman_api import PodmanSession
from tests.conftest import HERMETIC, write_spec
from tests.schemas import validate_document, validate_envelope

SPEC = """
[build]
image = "{image}"
command = [
  "bash", "-c",
  "echo hello > hello.txt; for t in 10.0.0.1/80 127.0.0.1/9; do (: >/dev/tcp/$t) 2>&-; done; :",
]
outputs = ["hello.txt"]
source_date_epoch = 1700000000
"""


def hermetic(
    config: SandboxConfig, session: PodmanSession, tmp_path: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "HERMETIC_IMAGES_DIR": str(config.images_dir),
        "HERMETIC_STORE": str(config.store_dir),
        "HERMETIC_WORK_DIR": str(config.work_dir),
        "HERMETIC_PODMAN_URL": session.url,
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "HERMETIC_SIGN": "",
    }
    return subprocess.run(
        [str(HERMETIC), *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600
    )


def test_build_sign_verify_and_a_modified_output_fails(
    tmp_path: Path, sandbox_config: SandboxConfig, podman_session: PodmanSession, minimal_image: str
) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return hermetic(sandbox_config, podman_session, tmp_path, *args)

    assert run("keygen", "--out", str(tmp_path / "release")).returncode == 0
    spec = write_spec(tmp_path / "src", SPEC.format(image=minimal_image))
    out = tmp_path / "out"
    built = run("build", str(spec), "--out", str(out), "--sign", str(tmp_path / "release"))
    assert built.returncode == 0, built.stderr
    attestation = out / "provenance.intoto.json"
    artifact = out / "artifacts" / "hello.txt"
    key = str(tmp_path / "release.pub")
    verified = run("verify", str(attestation), "--key", key, "--artifact", str(artifact))
    assert verified.returncode == 0, verified.stdout + verified.stderr

    statement = json.loads(base64.b64decode(json.loads(attestation.read_text())["payload"]))
    result = json.loads((out / "result.json").read_text())
    # what a real build wrote matches the published schemas
    validate_document(result)
    validate_document(json.loads((out / "trace.json").read_text()))
    assert validate_envelope(attestation) == "provenance.schema.json"
    assert validate_envelope(out / "sbom.intoto.json") == "sbom-spdx-statement.schema.json"
    predicate = statement["predicate"]
    dependencies = {d["name"]: d for d in predicate["buildDefinition"]["resolvedDependencies"]}
    assert dependencies["image"]["digest"]["sha256"] == result["image"].split("@sha256:")[1]
    assert dependencies["source"]["digest"]["sha256"] == result["source_digest"][7:]
    byproducts = {b["name"]: b for b in predicate["runDetails"]["byproducts"]}
    assert byproducts["trace.json"]["digest"]["sha256"] == result["trace"]["sha256"][7:]
    hermeticity = byproducts["hermeticity"]["annotations"]
    assert hermeticity["networkInterfaces"] == ["lo"]
    assert hermeticity["networkAttempts"] == 1
    assert hermeticity["loopbackAttempts"] == 1 and hermeticity["traceGaps"] == []
    assert hermeticity["networkTargets"] == ["connect 10.0.0.1:80"]
    assert set(hermeticity["limits"]) == {"timeout", "log", "pids", "memory", "disk"}
    assert predicate["runDetails"]["metadata"]["invocationId"] == result["build_id"]

    artifact.write_text("hello, tampered\n")
    refused = run("verify", str(attestation), "--key", key, "--artifact", str(artifact))
    assert refused.returncode == 1 and "matches no subject" in refused.stdout
