"""Real outputs (the CLI on the fake backend, the library's own writers) and the shipped
examples validate against docs/schemas/; documents that break the rules do not."""

from __future__ import annotations

import copy
import json
import re
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from rebuilder.attest.statement import make_statement
from rebuilder.formats.fields import Subject
from rebuilder.formats.provenance import SourceRef
from rebuilder.formats.rebuild import Disagreement, Failure
from sandbox import BACKENDS
from sandbox.config import SandboxConfig
from sandbox.fake import FakeBackend, FakeRun
from sandbox.plan import BuildPlan
from tests.conftest import write_spec
from tests.schemas import (
    errors,
    load,
    schema_by_uri,
    statement,
    toml_as_json,
    validate,
    validate_document,
    validate_envelope,
)
from tests.unit.conftest import Hermetic

REPO = Path(__file__).resolve().parents[2]
SPEC = """
[build]
image = "test-image"
command = ["make"]
outputs = ["out.txt", "hermetic.toml"]
source_date_epoch = 1
"""
HEX = "ab" * 32


def _hostname_in_output(build_dir: Path, plan: BuildPlan) -> FakeRun:
    (build_dir / "out.txt").write_text(plan.environment.hostname)
    return FakeRun(log=b"built\n")


@pytest.fixture
def hostname_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """Builds whose output is the host name: a check varies it, so they differ."""

    @contextmanager
    def connect(config: SandboxConfig) -> Iterator[FakeBackend]:
        yield FakeBackend(script=_hostname_in_output)

    monkeypatch.setitem(BACKENDS, "fake", connect)


@pytest.mark.parametrize("sbom", ["spdx", "cyclonedx"])
def test_a_signed_build_writes_documents_its_schemas_accept(
    tmp_path: Path, hermetic: Hermetic, hostname_backend: None, sbom: str
) -> None:
    assert hermetic("keygen", "--out", str(tmp_path / "key")).exit_code == 0
    spec = write_spec(tmp_path / "src", SPEC)
    out = tmp_path / "out"
    built = hermetic(
        "build", str(spec), "--out", str(out), "--sign", str(tmp_path / "key"),
        "--sbom-format", sbom, "--json",
    )  # fmt: skip
    assert built.exit_code == 0, built.output
    assert validate_document(json.loads(built.stdout)) == "build-result.schema.json"
    assert validate_document(json.loads((out / "result.json").read_text()))
    assert validate_envelope(out / "provenance.intoto.json") == "provenance.schema.json"
    assert validate_envelope(out / "sbom.intoto.json") == f"sbom-{sbom}-statement.schema.json"


def test_a_failed_build_writes_a_result_its_schema_accepts(
    tmp_path: Path, hermetic: Hermetic
) -> None:
    spec = write_spec(tmp_path / "src", SPEC)  # the default fake build makes no out.txt
    failed = hermetic("build", str(spec), "--out", str(tmp_path / "o"), "--json")
    assert failed.exit_code == 1
    document = json.loads(failed.stdout)
    assert document["status"] == "failed" and document["digest"] is None
    validate_document(document)


def test_a_check_writes_documents_its_schemas_accept(
    tmp_path: Path, hermetic: Hermetic, hostname_backend: None
) -> None:
    assert hermetic("keygen").exit_code == 0  # the default key signs the verdict
    spec = write_spec(tmp_path / "src", SPEC)
    report = tmp_path / "report"
    checked = hermetic("check", str(spec), "--report", str(report), "--seed", "2", "--json")
    assert checked.exit_code == 1, checked.output
    document = json.loads(checked.stdout)
    assert document["culprits"] == ["hostname"] and document["differences"]
    assert validate_document(document) == "check-result.schema.json"
    assert validate_envelope(report / "check.intoto.json") == "check-predicate.schema.json"
    for build in document["builds"]:
        validate_document(json.loads((Path(build["out_dir"]) / "result.json").read_text()))


def test_node_token_writes_a_tokens_file_its_schema_accepts(
    tmp_path: Path, hermetic: Hermetic
) -> None:
    tokens = tmp_path / "tokens.json"
    for name in ("ci", "auditor"):
        made = hermetic("node", "token", "--tokens", str(tokens), "--name", name, "--scope", "read")
        assert made.exit_code == 0, made.output
    validate(json.loads(tokens.read_text()), "node-tokens.schema.json")


def test_node_statements_validate() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    failure = Failure(
        request_sha256=HEX, outcome="build-failed", reason="no", builder_id="b", job_id="j"
    ).payload()
    validate(json.loads(failure), schema_by_uri()[json.loads(failure)["predicateType"]])
    disagreement = Disagreement(
        own=(("out", HEX),),
        proposed_sha256=HEX,
        builder_id="b",
        job_id="j",
        created_on=now,
        reason="other outputs",
        source=SourceRef(sha256=HEX),
        spec_sha256=HEX,
    ).payload()
    document = json.loads(disagreement)
    validate(document, schema_by_uri()[document["predicateType"]])


def _toml_blocks(page: Path) -> list[str]:
    return re.findall(r"^```toml\n(.*?)^```", page.read_text(), re.MULTILINE | re.DOTALL)


def _complete(text: str) -> bool:
    """An example without placeholders (…, <64 hex>) and without elided lines."""
    return "…" not in text and "<" not in text


def test_the_shipped_specs_images_and_examples_validate() -> None:
    specs = sorted((REPO / "docs" / "examples").glob("*/hermetic.toml"))
    assert len(specs) >= 10
    for path in specs:
        validate(toml_as_json(tomllib.loads(path.read_text())), "spec.schema.json")
    locks = [
        *(REPO / "images").glob("*/lock.json"),
        *(REPO / "docs").glob("examples/*/hermetic.lock"),
    ]
    for path in locks:
        validate(json.loads(path.read_text()), "image-lock.schema.json")
    for path in (REPO / "images").glob("*/recipe.toml"):
        validate(tomllib.loads(path.read_text()), "image-recipe.schema.json")
    checked = 0
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for block in filter(_complete, _toml_blocks(page)):
            document = toml_as_json(tomllib.loads(block))
            kind = {"build": "spec", "policy": "policy", "client": "client-scopes"}
            (schema,) = [f"{kind[k]}.schema.json" for k in kind if k in document] or [
                "image-recipe.schema.json"
            ]
            if set(load(schema).get("required", [])) <= set(document):  # not a fragment
                validate(document, schema)
                checked += 1
    assert checked >= 3  # the README's spec and policy, node.md's client scopes


def test_the_schemas_refuse_what_hermetic_would_not_write(tmp_path: Path) -> None:
    """Negative controls: each rule a reader relies on is in the schema, and date-time
    formats are checked (a validator without a format checker would pass these)."""
    result = {
        "_schema": "https://hermetic.dev/schemas/build-result/v1",
        "status": "built",
        "digest": "sha256:" + HEX,
    }
    assert errors(result, "build-result.schema.json")  # incomplete
    payload = make_statement(
        [Subject("a", HEX)],
        "https://hermetic.dev/attestations/rebuild-failure/v1",
        {"outcome": "x", "reason": "y", "builder": {"id": "b"}, "jobId": "j"},
    )
    good = json.loads(payload)
    validate(good, "rebuild-failure.schema.json")  # positive control
    mutations: list[tuple[tuple[str | int, ...], Any]] = [
        (("subject", 0, "digest", "sha256"), "ABC"),  # not 64 lower-case hex
        (("predicate", "jobId"), 7),  # not a string
        (("predicate", "extra"), "a field the writer never writes"),
        (("predicateType",), "https://hermetic.dev/attestations/check/v1"),  # wrong type
    ]
    for path, value in mutations:
        document = copy.deepcopy(good)
        target = document
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value
        assert errors(document, "rebuild-failure.schema.json"), path
    assert errors({"_schema": "https://hermetic.dev/schemas/error/v1"}, "error.schema.json")
    assert errors({"spdxVersion": "SPDX-2.3"}, "sbom-spdx-statement.schema.json")  # not a statement
    spec: dict[str, Any] = {
        "build": {"image": "debian:bookworm", "command": ["make"], "outputs": ["x"]}
    }
    assert errors(spec, "spec.schema.json")  # a tag without a digest
    spec["build"]["image"] = "debian@sha256:" + HEX
    validate(spec, "spec.schema.json")
    policy: dict[str, Any] = {
        "policy": {"threshold": 1, "expires": "2027-13-45T00:00:00Z"},
        "operators": [{"name": "a", "keys": [{"file": "a.pub"}]}],
    }
    assert errors(policy, "policy.schema.json")  # no such date: the format is checked
    policy["policy"]["expires"] = "2027-06-30T00:00:00Z"
    validate(policy, "policy.schema.json")


def test_the_statement_helper_reads_what_the_envelope_holds(tmp_path: Path) -> None:
    envelope = tmp_path / "e.intoto.json"
    envelope.write_text(json.dumps({"payload": "e30=", "payloadType": "x", "signatures": []}))
    with pytest.raises(AssertionError, match="payloadType"):
        statement(envelope)
