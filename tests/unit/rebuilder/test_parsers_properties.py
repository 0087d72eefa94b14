"""Property-based tests of the parsers the gate owns: policy TOML, DSSE envelopes and the
statements inside them (signed by a trusted key, so every reader is reached), and
Sigstore bundles. Whatever the bytes, the answer is a value or the project's own error
(exit 2 in the CLI), never another exception. Examples once found are kept as
``@example``s."""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from securesystemslib.signer import CryptoSigner
from typer.testing import CliRunner

from rebuilder.attest.envelope import EnvelopeError, parse_envelope, sign_payload
from rebuilder.attest.keys import generate_keypair, load_signer
from rebuilder.attest.sigstore_bundle import BundleCheck, BundleError, check_bundle
from rebuilder.attest.statement import StatementError, parse_statement
from rebuilder.cli import app
from rebuilder.gate.decide import Decision, Evidence, decide, evidence
from rebuilder.gate.policy import Policy, PolicyError, parse_policy
from tests.unit.rebuilder.test_sigstore import BEACON, DSSE_BUNDLE, GITHUB

# Deterministic in CI: the same few hundred examples every run, no example database.
CI = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
DIGEST = "a" * 64

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.sampled_from(["sha256", DIGEST, "2026-11-22T11:00:00Z", "hermeticity", "source"])
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=25,
)


@pytest.fixture(scope="module")
def trusted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Policy, CryptoSigner]]:
    root = tmp_path_factory.mktemp("trusted")
    for name in ("acme", "globex"):
        generate_keypair(root / name)
    text = (
        '[policy]\nthreshold = 1\nmax_age = "30d"\n'
        '\n[[operators]]\nname = "acme"\nkeys = [{ file = "acme.pub" }]\n'
        '\n[[operators]]\nname = "globex"\nkeys = [{ file = "globex.pub" }]\n'
        f'sigstore = [{{ issuer = "{GITHUB}", subject = "{BEACON}" }}]\n'
    )
    policy = root / "policy.toml"
    policy.write_text(text)
    signer = load_signer(str(root / "acme"))
    assert isinstance(signer, CryptoSigner)
    yield parse_policy(policy.read_bytes(), policy, now=NOW), signer


def decided(found: Evidence | None, policy: Policy) -> Decision | None:
    if found is None:
        return None
    return decide("hello", DIGEST, policy, [found], now=NOW)


# --- DSSE envelopes ---------------------------------------------------------------------


@CI
@given(data=st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
@example(data=b'{"payload": "e30=", "payloadType": "x", "signatures": [{"sig": 1}]}')
@example(data=b"[" * 5000)
def test_any_bytes_are_an_envelope_or_its_error(
    trusted: tuple[Policy, CryptoSigner], data: bytes
) -> None:
    with contextlib.suppress(EnvelopeError):
        parse_envelope(data, "fuzz")
    found, why = evidence("fuzz", data, trusted[0])
    assert found is not None or why


envelope_fields = st.fixed_dictionaries(
    {},
    optional={
        "payload": json_values
        | json_values.map(lambda v: base64.b64encode(json.dumps(v).encode()).decode()),
        "payloadType": st.sampled_from(["application/vnd.in-toto+json"]) | json_values,
        "signatures": st.lists(
            st.fixed_dictionaries(
                {}, optional={"keyid": json_values, "sig": json_values | st.just("AAAA")}
            )
            | json_values,
            max_size=4,
        )
        | json_values,
    },
)


@CI
@given(document=envelope_fields)
def test_envelope_shaped_documents_never_crash(
    trusted: tuple[Policy, CryptoSigner], document: dict[str, Any]
) -> None:
    found, why = evidence("fuzz", json.dumps(document).encode(), trusted[0])
    assert found is not None or why
    decided(found, trusted[0])


# --- statements inside validly signed envelopes -----------------------------------------


def honest_statement() -> dict[str, Any]:
    return {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "hello", "digest": {"sha256": DIGEST}}],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {
            "buildDefinition": {
                "buildType": "https://hermetic.dev/build-types/podman-sandbox/v1",
                "externalParameters": {"spec": {"build": {"command": ["make"]}}},
                "resolvedDependencies": [
                    {"name": "image", "digest": {"sha256": "1" * 64}},
                    {"name": "source", "digest": {"sha256": "5" * 64}},
                    {"name": "spec", "digest": {"sha256": "6" * 64}},
                ],
            },
            "runDetails": {
                "builder": {"id": "https://acme"},
                "metadata": {"finishedOn": "2026-11-22T11:00:00Z"},
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
        },
    }


PATHS = [
    ("subject",),
    ("subject", 0),
    ("subject", 0, "digest"),
    ("subject", 0, "name"),
    ("predicateType",),
    ("predicate",),
    ("predicate", "buildDefinition", "resolvedDependencies"),
    ("predicate", "buildDefinition", "resolvedDependencies", 1),
    ("predicate", "buildDefinition", "resolvedDependencies", 1, "digest"),
    ("predicate", "buildDefinition", "resolvedDependencies", 2, "digest", "sha256"),
    ("predicate", "buildDefinition", "externalParameters", "spec", "build", "command"),
    ("predicate", "runDetails", "metadata", "finishedOn"),
    ("predicate", "runDetails", "byproducts"),
    ("predicate", "runDetails", "byproducts", 0, "annotations"),
    ("predicate", "runDetails", "byproducts", 0, "annotations", "networkAttempts"),
    ("predicate", "runDetails", "byproducts", 0, "annotations", "loopbackAttempts"),
    ("predicate", "runDetails", "byproducts", 0, "annotations", "traceComplete"),
    ("predicate", "runDetails", "byproducts", 0, "annotations", "traceGaps"),
]
PREDICATE_TYPES = [
    "https://slsa.dev/provenance/v1",
    "https://hermetic.dev/attestations/rebuild-agreement/v2",
    "https://hermetic.dev/attestations/check/v1",
    "https://hermetic.dev/attestations/rebuild-disagreement/v1",
]


def replaced(document: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    here: Any = changed
    for step in path[:-1]:
        here = here[step]
    here[path[-1]] = value
    return changed


@CI
@given(
    changes=st.lists(st.tuples(st.sampled_from(PATHS), json_values), min_size=1, max_size=3),
    predicate_type=st.sampled_from(PREDICATE_TYPES),
)
@example(
    changes=[
        (("predicate", "runDetails", "byproducts", 0, "annotations", "networkAttempts"), math.nan)
    ],
    predicate_type=PREDICATE_TYPES[0],
)
@example(
    changes=[(("predicate", "runDetails", "byproducts", 0, "annotations", "networkAttempts"), -1)],
    predicate_type=PREDICATE_TYPES[0],
)
@example(
    changes=[(("predicate", "runDetails", "metadata", "finishedOn"), "2999-01-01T00:00:00")],
    predicate_type=PREDICATE_TYPES[0],
)
def test_trusted_statements_with_hostile_fields_never_crash(
    trusted: tuple[Policy, CryptoSigner],
    changes: list[tuple[tuple[str | int, ...], Any]],
    predicate_type: str,
) -> None:
    document = replaced(honest_statement(), ("predicateType",), predicate_type)
    for path, value in changes:
        try:
            document = replaced(document, path, value)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change removed the place
    payload = json.dumps(document).encode()  # NaN and Infinity included, as an attacker may
    with contextlib.suppress(StatementError):
        parse_statement(payload)
    policy, signer = trusted
    found, why = evidence("fuzz", json.dumps(sign_payload(payload, [signer])).encode(), policy)
    assert found is not None or why
    decision = decided(found, policy)
    if decision is not None and decision.admitted:
        # whatever was changed, what is admitted still says all that admission needs
        assert found is not None and found.build is not None and found.build.hermeticity


# --- the policy ------------------------------------------------------------------------


def toml_value(value: Any) -> str:
    """A tiny TOML writer for generated values (invalid output is fine: it is an error)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return (
            "nan"
            if math.isnan(value)
            else ("inf" if value > 0 else "-inf")
            if math.isinf(value)
            else repr(value)
        )
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    return '""'


toml_values = st.recursive(
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats()
    | st.text(max_size=30)
    | st.datetimes(timezones=st.none() | st.just(UTC))
    | st.sampled_from(["30d", "0d", "sha256:" + DIGEST, "git+https://h/r@" + "c" * 40]),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
SETTINGS = [
    "threshold",
    "max_age",
    "version",
    "expires",
    "allow_network_attempts",
    "allow_loopback",
    "allow_incomplete_trace",
    "deny_on_disagreement",
    "require_check",
    "images",
    "sources",
    "specs",
    "commands",
    "unknown",
]


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("pem")
    generate_keypair(root / "k")
    return (root / "k.pub").read_text()


@CI
@given(
    values=st.dictionaries(st.sampled_from(SETTINGS), toml_values, max_size=6),
    operators=st.lists(
        st.dictionaries(
            st.sampled_from(["name", "keys", "sigstore", "nodes", "optional", "x"]),
            toml_values,
            max_size=4,
        ),
        max_size=3,
    ),
    with_key=st.booleans(),
)
@example(values={"threshold": 1, "expires": datetime(2026, 1, 1)}, operators=[], with_key=True)
@example(values={"threshold": 1, "max_age": "9" * 40 + "d"}, operators=[], with_key=True)
def test_any_policy_document_is_a_policy_or_a_policy_error(
    tmp_path_factory: pytest.TempPathFactory,
    pem: str,
    values: dict[str, Any],
    operators: list[dict[str, Any]],
    with_key: bool,
) -> None:
    text = "[policy]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in values.items())
    if with_key:
        text += f'\n[[operators]]\nname = "acme"\nkeys = [{{ pem = """{pem}""" }}]\n'
    for entry in operators:
        text += "\n[[operators]]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in entry.items())
    path = Path("/nonexistent/policy.toml")
    try:
        policy = parse_policy(text.encode(), path, now=NOW)
    except PolicyError:
        return
    assert policy.threshold >= 1 and policy.operators


@CI
@given(text=st.text(max_size=400) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
@example(
    text="[policy]\nthreshold = 1\n[[operators]]\nname = 'a'\n"
    "sigstore = [{issuer = 1, subject = 2}]\n"
)
@example(text="a = " + "[" * 2000)
def test_any_text_is_a_policy_or_a_policy_error(text: str) -> None:
    with contextlib.suppress(PolicyError):
        parse_policy(text.encode("utf-8", "surrogatepass"), Path("/nonexistent/p.toml"), now=NOW)


# --- Sigstore bundles ------------------------------------------------------------------

BUNDLE = json.loads(DSSE_BUNDLE.read_text())


def bundle_paths(document: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    found = [prefix] if prefix else []
    if isinstance(document, dict):
        for key, value in document.items():
            found += bundle_paths(value, (*prefix, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            found += bundle_paths(value, (*prefix, index))
    return found


BUNDLE_PATHS = bundle_paths(BUNDLE)


@pytest.fixture
def offline_staging(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERMETIC_SIGSTORE_OFFLINE", "1")
    monkeypatch.setenv("HERMETIC_SIGSTORE_INSTANCE", "staging")


@CI
@given(
    changes=st.lists(
        st.tuples(st.sampled_from(BUNDLE_PATHS), json_values | st.just("AAAA")), max_size=2
    ),
)
def test_any_mutated_bundle_is_a_check_or_a_bundle_error(
    offline_staging: None, trusted: tuple[Policy, CryptoSigner], changes: list[Any]
) -> None:
    document: Any = BUNDLE
    for path, value in changes:
        try:
            document = replaced(document, path, value)
        except (KeyError, IndexError, TypeError):
            continue
    data = json.dumps(document).encode()
    policy = trusted[0]
    try:
        checked = check_bundle(data, policy.keys)
    except BundleError:
        pass
    else:
        assert isinstance(checked, BundleCheck)
    found, why = evidence("bundle", data, policy)
    assert found is not None or why
    decided(found, policy)


# --- the CLI: exit 2 with our message, never a traceback ---------------------------------


@settings(CI, max_examples=60)
@given(content=json_values.map(lambda v: json.dumps(v).encode()) | st.binary(max_size=100))
def test_the_gate_cli_answers_any_attestation_without_a_traceback(
    tmp_path_factory: pytest.TempPathFactory, trusted: tuple[Policy, CryptoSigner], content: bytes
) -> None:
    root = tmp_path_factory.mktemp("cli")
    (root / "store").mkdir()
    (root / "store" / "a.json").write_bytes(content)
    artifact = root / "hello"
    artifact.write_bytes(b"x")
    policy = trusted[0].path
    done = CliRunner().invoke(
        app, ["gate", str(artifact), "--policy", str(policy), "--attestations", str(root / "store")]
    )
    assert done.exit_code in (1, 2), done.output
    assert isinstance(done.exception, SystemExit), done.exception
