"""The CLI in-process (typer's CliRunner) on the fake backend: exit codes and messages."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rebuilder.cli import app
from sandbox import BACKENDS
from sandbox.config import SandboxConfig
from sandbox.errors import SandboxError
from sandbox.fake import FakeBackend, FakeRun
from sandbox.plan import BuildPlan
from tests.conftest import write_spec
from tests.unit.conftest import Hermetic
from tests.unit.spec_cases import BAD_SPECS

GOOD = """
[build]
image = "test-image"
command = ["make"]
outputs = ["hermetic.toml"]
source_date_epoch = 1
"""


def test_build_exit_0_and_json_on_stdout_only(tmp_path: Path, hermetic: Hermetic) -> None:
    spec = write_spec(tmp_path / "src", GOOD)
    out = tmp_path / "out"
    result = hermetic("build", str(spec), "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["status"] == "built"
    for key in ("digest", "outputs", "image", "source_digest", "exit_code", "duration_s", "limits"):
        assert key in document
    assert json.loads((out / "result.json").read_text()) == document


def test_build_text_summary(tmp_path: Path, hermetic: Hermetic) -> None:
    spec = write_spec(tmp_path / "src", GOOD)
    result = hermetic("build", str(spec), "--out", str(tmp_path / "o"))
    assert result.exit_code == 0
    assert result.stdout.startswith("built sha256:")
    assert (
        "hermetic.toml" in result.stdout
        and "limits  timeout 3600s [host-timer+container-deadline]" in result.stdout
    )


def test_default_out_dir_is_fresh_and_named(
    tmp_path: Path, hermetic: Hermetic, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "src"
    spec = write_spec(source, GOOD)
    monkeypatch.chdir(source)
    first = hermetic("build", "--json")
    assert first.exit_code == 0, first.output
    out_dir = Path(json.loads(first.stdout)["out_dir"])
    assert out_dir.parent == source / "hermetic-out" and (out_dir / "result.json").exists()
    # a second build in the same directory: fresh dir, and the first results are not source
    second = hermetic("build", str(spec), "--json")
    assert json.loads(second.stdout)["out_dir"] != str(out_dir)
    assert json.loads(second.stdout)["source_digest"] == json.loads(first.stdout)["source_digest"]


def test_failed_build_exits_1_with_log_tail(tmp_path: Path, hermetic: Hermetic) -> None:
    spec = write_spec(tmp_path / "src", GOOD.replace('"hermetic.toml"', '"missing"'))
    result = hermetic("build", str(spec), "--out", str(tmp_path / "o"))
    assert result.exit_code == 1
    assert "NOT BUILT (failed)" in result.stdout and "'missing' matched nothing" in result.stdout


@pytest.mark.parametrize(
    ("case", "text", "key", "reason"), BAD_SPECS, ids=[c[0] for c in BAD_SPECS]
)
def test_every_bad_spec_exits_2_naming_the_key(
    tmp_path: Path, hermetic: Hermetic, case: str, text: str, key: str, reason: str
) -> None:
    spec = write_spec(tmp_path / "src", text)
    result = hermetic("build", str(spec), "--out", str(tmp_path / "o"))
    assert result.exit_code == 2
    assert f"{spec}: {key}:" in result.stderr
    assert not (tmp_path / "o").exists()


def test_root_is_refused_with_exit_2(tmp_path: Path, hermetic: Hermetic) -> None:
    spec = write_spec(tmp_path / "src", GOOD)
    result = hermetic("build", str(spec), "--out", str(tmp_path / "o"), euid=0)
    assert result.exit_code == 2 and "refusing to run as root" in result.stderr
    allowed = hermetic("build", str(spec), "--out", str(tmp_path / "o"), "--allow-root", euid=0)
    assert allowed.exit_code == 0, allowed.output


def test_unknown_image_name_exits_2(tmp_path: Path, hermetic: Hermetic) -> None:
    spec = write_spec(tmp_path / "src", GOOD.replace("test-image", "no-such-image"))
    result = hermetic("build", str(spec), "--out", str(tmp_path / "o"))
    assert result.exit_code == 2 and "no image named 'no-such-image'" in result.stderr


def test_image_list_without_podman_as_root(hermetic: Hermetic) -> None:
    result = hermetic("image", "list", euid=0)
    assert result.exit_code == 0
    assert "test-image" in result.stdout and "test image" in result.stdout


def _hostname_in_output(build_dir: Path, plan: BuildPlan) -> FakeRun:
    (build_dir / "out.txt").write_text(plan.environment.hostname)
    return FakeRun()


@pytest.fixture
def sensitive_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    @contextmanager
    def connect(config: SandboxConfig) -> Iterator[FakeBackend]:
        yield FakeBackend(script=_hostname_in_output)

    monkeypatch.setitem(BACKENDS, "fake", connect)


CHECKED = GOOD.replace('"hermetic.toml"', '"out.txt"')


def test_check_reproducible_exits_0_with_the_contract_fields(
    tmp_path: Path, hermetic: Hermetic
) -> None:
    spec = write_spec(tmp_path / "src", GOOD)
    report = tmp_path / "report"
    result = hermetic("check", str(spec), "--report", str(report), "--json", "--seed", "4")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    for key in ("reproducible", "builds", "differences", "culprits", "hints", "report"):
        assert key in document
    assert document["reproducible"] is True and document["seed"] == 4
    assert json.loads((report / "check.json").read_text()) == document


def test_check_not_reproducible_exits_1_verdict_first(
    tmp_path: Path, hermetic: Hermetic, sensitive_backend: None
) -> None:
    spec = write_spec(tmp_path / "src", CHECKED)
    report = tmp_path / "report"
    result = hermetic("check", str(spec), "--report", str(report))
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "NOT REPRODUCIBLE: 1 output differs; culprit: hostname"
    assert lines[1] == "why:" and "contains the host name 'variation-" in lines[3]
    assert f"report  {report}/diffoscope.html" in result.stdout


def test_check_exits_2_when_the_control_build_fails(tmp_path: Path, hermetic: Hermetic) -> None:
    spec = write_spec(tmp_path / "src", CHECKED)  # the default fake build makes no out.txt
    result = hermetic("check", str(spec), "--report", str(tmp_path / "r"))
    assert result.exit_code == 2
    assert "the control build failed" in result.stderr and "Log: " in result.stderr


@pytest.mark.parametrize(
    ("case", "text", "key", "reason"), BAD_SPECS, ids=[c[0] for c in BAD_SPECS]
)
def test_check_exits_2_for_a_bad_spec(
    tmp_path: Path, hermetic: Hermetic, case: str, text: str, key: str, reason: str
) -> None:
    spec = write_spec(tmp_path / "src", text)
    result = hermetic("check", str(spec), "--report", str(tmp_path / "r"))
    assert result.exit_code == 2
    assert f"{spec}: {key}:" in result.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--vary", "nosuch"], "unknown variation nosuch"),
        (["--vary", "-umask,time"], "not both"),
        (["--builds", "1"], "Invalid value for '--builds'"),
        (["--jobs", "0"], "Invalid value for '--jobs'"),
    ],
)
def test_check_exits_2_for_bad_options(
    tmp_path: Path, hermetic: Hermetic, options: list[str], message: str
) -> None:
    spec = write_spec(tmp_path / "src", GOOD)
    result = hermetic("check", str(spec), "--report", str(tmp_path / "r"), *options)
    assert result.exit_code == 2 and message in result.stderr
    assert not (tmp_path / "r").exists()


def test_keygen_build_verify_round_trip(tmp_path: Path, hermetic: Hermetic) -> None:
    made = hermetic("keygen")
    assert made.exit_code == 0, made.output
    key = tmp_path / "config" / "hermetic" / "signing-key"
    assert f"public key   {key}.pub" in made.stdout
    spec = write_spec(tmp_path / "src", GOOD)
    out = tmp_path / "out"
    built = hermetic("build", str(spec), "--out", str(out))
    assert built.exit_code == 0, built.output
    attestation = out / "provenance.intoto.json"
    assert f"attest  {attestation} (signed by " in built.stdout
    artifact = out / "artifacts" / "hermetic.toml"
    verify = ["verify", str(attestation), "--key", f"{key}.pub", "--artifact", str(artifact)]
    checked = hermetic(*verify)
    assert checked.exit_code == 0, checked.output
    assert checked.stdout.startswith(f"VERIFIED: {attestation}")
    artifact.write_text("changed after the build\n")
    refused = hermetic(*verify, "--json")
    assert refused.exit_code == 1
    outcome = json.loads(refused.stdout)
    assert outcome["verified"] is False and "matches no subject" in outcome["reasons"][0]


def test_an_unsigned_build_says_so_and_does_not_verify(tmp_path: Path, hermetic: Hermetic) -> None:
    spec = write_spec(tmp_path / "src", GOOD)
    out = tmp_path / "out"
    built = hermetic("build", str(spec), "--out", str(out))
    assert built.exit_code == 0 and "unsigned: no key" in built.stdout
    hermetic("keygen", "--out", str(tmp_path / "k"))
    args = ["verify", str(out / "provenance.intoto.json"), "--key", str(tmp_path / "k.pub")]
    refused = hermetic(*args)
    assert refused.exit_code == 1 and "0 signature(s) in the envelope" in refused.stdout


def test_verify_exits_2_for_a_truncated_file_and_a_bad_key(
    tmp_path: Path, hermetic: Hermetic
) -> None:
    hermetic("keygen", "--out", str(tmp_path / "k"))
    truncated = tmp_path / "t.intoto.json"
    truncated.write_text('{"payloadType": "application/vnd.in-toto+json", "payl')
    done = hermetic(*["verify", str(truncated), "--key", str(tmp_path / "k.pub")])
    assert done.exit_code == 2 and "not JSON" in done.stderr and str(truncated) in done.stderr
    bad_key = tmp_path / "bad.pub"
    bad_key.write_text("nonsense")
    done = CliRunner().invoke(app, ["verify", str(truncated), "--key", str(bad_key)])
    assert done.exit_code == 2 and f"{bad_key}: not a PEM public key" in done.stderr


def test_a_signing_key_that_cannot_be_read_stops_before_the_build(
    tmp_path: Path, hermetic: Hermetic
) -> None:
    spec = write_spec(tmp_path / "src", GOOD)
    missing = tmp_path / "no-such-key"
    done = CliRunner().invoke(app, ["build", str(spec), "--sign", str(missing)])
    assert done.exit_code == 2 and f"{missing}: cannot read the signing key" in done.stderr
    assert not list(tmp_path.glob("hermetic-out*"))


def test_check_signs_a_negative_verdict(
    tmp_path: Path, hermetic: Hermetic, sensitive_backend: None
) -> None:
    hermetic("keygen", "--out", str(tmp_path / "k"))
    spec = write_spec(tmp_path / "src", CHECKED)
    report = tmp_path / "report"
    args = ["check", str(spec), "--report", str(report), "--sign", str(tmp_path / "k")]
    done = hermetic(*args)
    assert done.exit_code == 1, done.output
    attestation = report / "check.intoto.json"
    assert f"attest  {attestation} (signed by " in done.stdout
    verify = ["verify", str(attestation), "--key", str(tmp_path / "k.pub"), "--json"]
    checked = hermetic(*verify)
    assert checked.exit_code == 0, checked.output
    outcome = json.loads(checked.stdout)
    assert outcome["predicate_type"] == "https://hermetic.dev/attestations/check/v1"
    statement = json.loads(base64.b64decode(json.loads(attestation.read_text())["payload"]))
    predicate = statement["predicate"]
    assert predicate["reproducible"] is False and predicate["culprits"] == ["hostname"]
    assert set(predicate["reportDigests"]) == {"html", "text", "json"}


def test_the_provenance_names_the_spec_bytes_that_were_parsed(
    tmp_path: Path, hermetic: Hermetic, monkeypatch: pytest.MonkeyPatch
) -> None:
    """review gate-1: the spec was hashed again after the build; a spec changed meanwhile
    was named in place of the one built."""
    import hashlib

    spec = write_spec(tmp_path / "src", GOOD)
    parsed = spec.read_bytes()

    def changes_the_spec(build_dir: Path, plan: BuildPlan) -> FakeRun:
        spec.write_text(GOOD.replace('command = ["make"]', 'command = ["make", "evil"]'))
        return FakeRun()

    @contextmanager
    def connect(config: SandboxConfig) -> Iterator[FakeBackend]:
        yield FakeBackend(script=changes_the_spec)

    monkeypatch.setitem(BACKENDS, "fake", connect)
    out = tmp_path / "out"
    built = hermetic("build", str(spec), "--out", str(out))
    assert built.exit_code == 0, built.output
    assert spec.read_bytes() != parsed  # control: the spec did change during the build
    envelope = json.loads((out / "provenance.intoto.json").read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    (named,) = [
        d
        for d in statement["predicate"]["buildDefinition"]["resolvedDependencies"]
        if d["name"] == "spec"
    ]
    assert named["digest"]["sha256"] == hashlib.sha256(parsed).hexdigest()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--allow-input", "file:///srv/"], "http:// and https://"),
        (["--allow-input-network", "not-a-network"], "not a network"),
        (["--client-ca", "ca.pem"], "TLS needs both"),
    ],
)
def test_node_serve_refuses_unsafe_options_before_serving(
    tmp_path: Path, hermetic: Hermetic, options: list[str], message: str
) -> None:
    from rebuilder.attest.keys import generate_keypair

    generate_keypair(tmp_path / "key")
    (tmp_path / "tokens.json").write_text('{"tokens": []}')
    done = hermetic(
        "node",
        "serve",
        "--dir",
        str(tmp_path / "node"),
        "--key",
        str(tmp_path / "key"),
        "--tokens",
        str(tmp_path / "tokens.json"),
        "--allow-root",
        *options,
    )
    assert done.exit_code == 2, done.output
    assert message in " ".join(done.output.replace("│", " ").split())  # unwrap the box


def test_mutual_tls_without_client_scopes_is_refused(tmp_path: Path, hermetic: Hermetic) -> None:
    from rebuilder.attest.keys import generate_keypair

    generate_keypair(tmp_path / "key")
    tls = ["--tls-cert", "c.pem", "--tls-key", "k.pem", "--client-ca", "ca.pem"]
    done = hermetic(
        "node", "serve", "--dir", str(tmp_path / "n"), "--key", str(tmp_path / "key"), *tls
    )
    assert done.exit_code == 2 and "--client-scopes" in done.output, done.output


class _FailingReaper(FakeBackend):
    """A backend that cannot list what earlier commands left (its podman broke)."""

    def __init__(self, reaped: list[Path]) -> None:
        super().__init__()
        self.reaped = reaped

    def reap_orphans(self, work_dir: Path) -> list[str]:
        self.reaped.append(work_dir)
        raise SandboxError("podman could not list containers: service gone")


def test_reaping_runs_with_the_build_and_its_failure_is_a_warning(
    tmp_path: Path, hermetic: Hermetic, monkeypatch: pytest.MonkeyPatch
) -> None:
    reaped: list[Path] = []

    @contextmanager
    def connect(config: SandboxConfig) -> Iterator[FakeBackend]:
        yield _FailingReaper(reaped)

    spec = write_spec(tmp_path / "src", GOOD)
    positive = hermetic("build", str(spec), "--out", str(tmp_path / "first"), "--json")
    assert positive.exit_code == 0, positive.output
    assert "warning" not in positive.stderr  # the fake's own reaping finds nothing wrong

    monkeypatch.setitem(BACKENDS, "fake", connect)
    result = hermetic("build", str(spec), "--out", str(tmp_path / "out"), "--json")
    assert reaped == [tmp_path / "work"]  # HERMETIC_WORK_DIR, once
    assert result.exit_code == 0, result.output  # the build is not lost to housekeeping
    assert json.loads(result.stdout)["status"] == "built"
    assert "what earlier commands left was not removed" in result.stderr
    assert "service gone" in result.stderr
