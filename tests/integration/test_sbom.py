"""The SBOM of a real build, checked by the formats' own tools: spdx-tools parses and
validates sbom.spdx.json, cyclonedx-python-lib validates sbom.cdx.json against the
CycloneDX 1.5 schema; the signed SBOM statement verifies, and fails once tampered with."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path, PurePosixPath

from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from sandbox.config import SandboxConfig
from sandbox.fetch import fetch_input
from sandbox.podman_api import PodmanSession
from sandbox.spec import InputSpec
from sandbox.store import ContentStore
from tests.conftest import HERMETIC, write_spec
from tests.integration.conftest import HELLO_SHA256, HELLO_URL

SPEC = f"""
[build]
image = "hermetic-minimal"
command = ["sh", "-c", '''
tar -xzf hello.tar.gz hello-2.10/README hello-2.10/THANKS && mv hello-2.10 out''']
outputs = ["out"]
source_date_epoch = 1700000000

[[inputs]]
url = "{HELLO_URL}"
sha256 = "{HELLO_SHA256}"
dest = "hello.tar.gz"
"""


def hermetic(
    config: SandboxConfig, session: PodmanSession, cwd: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "HERMETIC_IMAGES_DIR": str(config.images_dir),
        "HERMETIC_STORE": str(config.store_dir),
        "HERMETIC_WORK_DIR": str(config.work_dir),
        "HERMETIC_PODMAN_URL": session.url,
        "XDG_CONFIG_HOME": str(cwd / "config"),
        "HERMETIC_SIGN": "",
    }
    return subprocess.run(
        [HERMETIC, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600
    )


def spdx_errors(path: Path) -> list[str]:
    return [m.validation_message for m in validate_full_spdx_document(parse_file(str(path)))]


def test_spdx_and_cyclonedx_sboms(
    tmp_path: Path,
    sandbox_config: SandboxConfig,
    podman_session: PodmanSession,
    minimal_image: str,
    hello_tarball: Path,
) -> None:
    # the tarball is in the store already: the build takes it from there, not the network
    local = InputSpec(url=hello_tarball.as_uri(), sha256=HELLO_SHA256, dest=PurePosixPath("x"))
    fetch_input(local, ContentStore(sandbox_config.store_dir))
    spec = write_spec(tmp_path / "src", SPEC)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return hermetic(sandbox_config, podman_session, tmp_path, *args)

    assert run("keygen", "--out", str(tmp_path / "key")).returncode == 0
    out = tmp_path / "out"
    built = run("build", str(spec), "--out", str(out), "--sign", str(tmp_path / "key"))
    assert built.returncode == 0, built.stderr
    assert f"sbom    {out / 'sbom.spdx.json'}" in built.stdout

    # the SPDX project's own parser and validator accept it ...
    sbom_path = out / "sbom.spdx.json"
    assert spdx_errors(sbom_path) == []
    sbom = json.loads(sbom_path.read_text())
    result = json.loads((out / "result.json").read_text())
    by_id = {p["SPDXID"]: p for p in sbom["packages"]}
    purl_of = {
        p["name"]: p["externalRefs"][0]["referenceLocator"]
        for p in sbom["packages"]
        if p.get("externalRefs")
    }
    lock = json.loads((sandbox_config.images_dir / minimal_image / "lock.json").read_text())
    assert len([p for p in by_id if p.startswith("SPDXRef-Deb-")]) == len(lock["packages"])
    dash = lock["packages"]["dash"]
    assert purl_of["dash"] == f"pkg:deb/debian/dash@{dash}?distro=debian-bookworm"
    assert purl_of["hello.tar.gz"] == "pkg:deb/debian/hello@2.10?arch=source"
    assert by_id["SPDXRef-Input-1"]["downloadLocation"] == HELLO_URL
    assert by_id["SPDXRef-Source"]["checksums"][0]["checksumValue"] == (
        result["source_digest"].removeprefix("sha256:")
    )
    assert by_id["SPDXRef-Image"]["versionInfo"] == result["image"].partition("@")[2]
    outputs = {o["path"]: o["sha256"] for o in result["outputs"]}
    files = {f["fileName"][2:]: f for f in sbom["files"]}
    assert set(files) == set(outputs) == {"out/README", "out/THANKS"}
    for path, file in files.items():
        assert {"algorithm": "SHA256", "checksumValue": outputs[path]} in file["checksums"]
    kinds = {(r["spdxElementId"], r["relationshipType"]) for r in sbom["relationships"]}
    assert ("SPDXRef-Image", "BUILD_DEPENDENCY_OF") in kinds
    assert ("SPDXRef-Input-1", "BUILD_DEPENDENCY_OF") in kinds
    assert ("SPDXRef-Output-1", "GENERATED_FROM") in kinds
    assert ("SPDXRef-Image", "CONTAINS") in kinds
    # ... and the validator can fail: a file without its SHA1 is refused (control)
    broken = dict(sbom, files=[dict(sbom["files"][0], checksums=sbom["files"][0]["checksums"][1:])])
    (tmp_path / "broken.spdx.json").write_text(json.dumps(broken))
    assert any("SHA1" in e for e in spdx_errors(tmp_path / "broken.spdx.json"))

    # signed like the provenance: verify accepts it, and refuses it once changed
    attestation = out / "sbom.intoto.json"
    key = str(tmp_path / "key.pub")
    artifact = str(out / "artifacts" / "out" / "README")
    verified = run("verify", str(attestation), "--key", key, "--artifact", artifact, "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)["predicate_type"] == "https://spdx.dev/Document"
    envelope = json.loads(attestation.read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement["predicate"] == sbom
    statement["predicate"]["packages"][0]["versionInfo"] = "sha256:" + "0" * 64
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    (tmp_path / "tampered.intoto.json").write_text(json.dumps(envelope))
    tampered = run("verify", str(tmp_path / "tampered.intoto.json"), "--key", key)
    assert tampered.returncode == 1

    # CycloneDX 1.5, validated against the schema by cyclonedx-python-lib
    cdx_out = tmp_path / "cdx"
    built = run("build", str(spec), "--out", str(cdx_out), "--sbom-format", "cyclonedx")
    assert built.returncode == 0, built.stderr
    text = (cdx_out / "sbom.cdx.json").read_text()
    validator = JsonStrictValidator(SchemaVersion.V1_5)
    assert validator.validate_str(text) is None
    bom = json.loads(text)
    image = next(c for c in bom["components"] if c["type"] == "container")
    assert {c["name"] for c in image["components"]} >= {"dash", "coreutils"}
    hello = next(c for c in bom["components"] if c["name"] == "hello.tar.gz")
    assert hello["purl"] == "pkg:deb/debian/hello@2.10?arch=source"
    assert not (cdx_out / "sbom.intoto.json").exists(), "no key, no signed SBOM"
    # control: the schema validator refuses a BOM with a malformed hash
    bom["components"][1]["hashes"][0]["content"] = "not hex"
    assert validator.validate_str(json.dumps(bom)) is not None
