"""Property-based tests of the parsers the gate owns: policy TOML, DSSE envelopes and the
statements inside them (signed by a trusted key, so every reader is reached), and
Sigstore bundles, and the node's co-signature of an agreement. Whatever the bytes, the
answer is a value or the project's own error (exit 2 in the CLI), never another exception.
Statements of every kind the gate reads are mutated, their times included. Examples once
found are kept as ``@example``s."""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from securesystemslib.signer import CryptoSigner
from typer.testing import CliRunner

from rebuilder.attest.envelope import EnvelopeError, parse_envelope, sign_payload
from rebuilder.attest.keys import generate_keypair, load_signer
from rebuilder.attest.sigstore_bundle import BundleCheck, BundleError, SigstoreTrust, check_bundle
from rebuilder.attest.statement import make_statement, parse_statement, read_statement
from rebuilder.attest.verify import sniff
from rebuilder.cli import app
from rebuilder.formats.fields import CLOCK_SKEW, StatementError, Subject
from rebuilder.formats.provenance import Provenance, SourceRef
from rebuilder.formats.rebuild import Agreement, AgreementNode
from rebuilder.gate.decide import Decision, Evidence, decide, evidence
from rebuilder.gate.policy import Policy, PolicyError, parse_policy
from rebuilder.node.jobs import JobState
from rebuilder.node.node import Node, NodeSettings
from rebuilder.node.requests import pack_source
from sandbox.uris import CHECK_PREDICATE, DISAGREEMENT_PREDICATE
from tests.conftest import write_spec
from tests.unit.conftest import FAKE_SPEC, fake_sandbox
from tests.unit.rebuilder.conftest import BEACON, DSSE_BUNDLE, GITHUB

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
    assert found is not None or why or not_an_attestation(data)


def not_an_attestation(data: bytes) -> bool:
    """JSON that is neither an envelope nor a bundle: the one case without a reason."""
    try:
        return sniff(json.loads(data)) is None
    except (ValueError, RecursionError):
        return False


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
    data = json.dumps(document).encode()
    found, why = evidence("fuzz", data, trusted[0])
    assert found is not None or why or not_an_attestation(data)
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


PROVENANCE_PATHS = [
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
AGREEMENT_PATHS = [
    ("subject", 0, "digest"),
    ("subject", 0, "digest", "sha512"),  # a second algorithm, or one alone
    ("predicate_type",),  # protobuf's alias of predicateType
    ("predicate", "createdOn"),
    ("predicate", "threshold"),
    ("predicate", "request"),
    ("predicate", "source"),
    ("predicate", "source", "digest", "sha256"),
    ("predicate", "spec", "sha256"),
    ("predicate", "nodes"),
    ("predicate", "nodes", 0, "verdict"),
    ("predicate", "nodes", 0, "outputs"),
    ("predicate", "nodes", 0, "outputs", 0, "sha256"),
    ("predicate", "nodes", 0, "attestation"),
    ("predicate", "extra"),
]
CHECK_PATHS = [
    ("subject", 0, "digest"),
    ("predicate", "reproducible"),
    ("predicate", "finishedOn"),
    ("predicate",),
]
DISAGREEMENT_PATHS = [
    ("subject", 0, "digest", "sha256"),
    ("predicate", "createdOn"),
    ("predicate", "source"),
    ("predicate", "source", "digest", "sha256"),
    ("predicate", "spec"),
    ("predicate", "spec", "sha256"),
    ("predicate",),
]
PREDICATE_TYPES = [
    "https://slsa.dev/provenance/v1",
    "https://hermetic.dev/attestations/rebuild-agreement/v2",
    "https://hermetic.dev/attestations/check/v1",
    "https://hermetic.dev/attestations/rebuild-disagreement/v1",
]
SOURCE, SPEC = "5" * 64, "6" * 64


def honest_agreement(outputs: tuple[tuple[str, str], ...], keyid: str, job_id: str) -> bytes:
    node = AgreementNode(
        url="http://node",
        builder_id="https://acme",
        keyid=keyid,
        job_id=job_id,
        outcome="built",
        verdict="agree",
        reason="",
        outputs=outputs,
        attestation_sha256="0" * 64,
    )
    return Agreement(
        outputs=outputs,
        threshold=1,
        request_sha256="0" * 64,
        source=SourceRef(sha256=SOURCE),
        spec_sha256=SPEC,
        nodes=(node,),
        created_on=NOW,
    ).payload()


def honest_statements() -> dict[str, tuple[dict[str, Any], list[tuple[str | int, ...]]]]:
    """An honest statement of every kind the gate reads, and the places to mutate."""
    check = make_statement(
        [Subject("hello", DIGEST)],
        CHECK_PREDICATE,
        {"reproducible": True, "finishedOn": "2026-11-22T11:00:00Z"},
    )
    disagreement = make_statement(
        [Subject("hello", "f" * 64)],
        DISAGREEMENT_PREDICATE,
        {
            "refusedStatement": {"sha256": "0" * 64},
            "jobId": "j",
            "createdOn": "2026-11-22T11:00:00Z",
            "source": {"name": "source", "digest": {"sha256": SOURCE}},
            "spec": {"sha256": SPEC},
        },
    )
    return {
        "provenance": (honest_statement(), PROVENANCE_PATHS),
        "agreement": (
            json.loads(honest_agreement((("hello", DIGEST),), "k", "j")),
            AGREEMENT_PATHS,
        ),
        "check": (json.loads(check), CHECK_PATHS),
        "disagreement": (json.loads(disagreement), DISAGREEMENT_PATHS),
    }


HONEST = honest_statements()
KIND_AND_PATH = [(kind, path) for kind, (_, paths) in HONEST.items() for path in paths]

# RFC 3339 times anywhere in the calendar, with any offset (a zone of -23:59 moves
# 9999-12-31 past the last day Python knows), and times that are nearly RFC 3339
times = st.builds(
    lambda when, minutes: (
        when.isoformat()
        + (
            "Z"
            if minutes == 0
            else f"{'+-'[minutes < 0]}{abs(minutes) // 60:02}:{abs(minutes) % 60:02}"
        )
    ),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
    st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1),
) | st.sampled_from(
    [
        "9999-12-31T23:59:59-23:59",
        "0001-01-01T00:00:00+23:59",
        "2999-01-01T00:00:00",
        "2026-11-22T12:04:59Z",
        "2026-11-22T12:05:01Z",
        "1969-12-31T23:59:59Z",
        "2026-11-22",
        "2026-11-22T12:00:00.123456789Z",
    ]
)
hostile = json_values | times


def replaced(document: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    here: Any = changed
    for step in path[:-1]:
        here = here[step]
    here[path[-1]] = value
    return changed


def mutated(document: dict[str, Any], changes: list[tuple[tuple[str | int, ...], Any]]) -> Any:
    for path, value in changes:
        try:
            document = replaced(document, path, value)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change removed the place
    return document


@CI
@given(
    kind=st.sampled_from(sorted(HONEST)),
    changes=st.lists(st.tuples(st.sampled_from(KIND_AND_PATH), hostile), min_size=1, max_size=3),
    predicate_type=st.none() | st.sampled_from(PREDICATE_TYPES),
)
@example(
    kind="provenance",
    changes=[
        (
            ("provenance", ("predicate", "runDetails", "byproducts", 0, "annotations")),
            {"networkAttempts": math.nan},
        )
    ],
    predicate_type=None,
)
@example(
    kind="provenance",
    changes=[
        (
            ("provenance", PROVENANCE_PATHS[14]),
            -1,
        )
    ],
    predicate_type=None,
)
@example(
    kind="provenance",
    changes=[
        (
            ("provenance", ("predicate", "runDetails", "metadata", "finishedOn")),
            "2999-01-01T00:00:00",
        )
    ],
    predicate_type=None,
)
@example(  # t_time2.py: each kind's own time, past the end of the calendar in UTC
    kind="agreement",
    changes=[(("agreement", ("predicate", "createdOn")), "9999-12-31T23:59:59-23:59")],
    predicate_type=None,
)
@example(
    kind="check",
    changes=[(("check", ("predicate", "finishedOn")), "0001-01-01T00:00:00+23:59")],
    predicate_type=None,
)
@example(
    kind="disagreement",
    changes=[(("disagreement", ("predicate", "createdOn")), "9999-12-31T23:59:59-23:59")],
    predicate_type=None,
)
def test_trusted_statements_with_hostile_fields_never_crash(
    trusted: tuple[Policy, CryptoSigner],
    kind: str,
    changes: list[tuple[tuple[str, tuple[str | int, ...]], Any]],
    predicate_type: str | None,
) -> None:
    document, _ = HONEST[kind]
    if predicate_type is not None:
        document = replaced(document, ("predicateType",), predicate_type)
    # a path of another kind's statement lands where it lands, or nowhere
    document = mutated(document, [(path, value) for (_, path), value in changes])
    payload = json.dumps(document).encode()  # NaN and Infinity included, as an attacker may
    with contextlib.suppress(StatementError):
        parse_statement(payload)
    policy, signer = trusted
    found, why = evidence("fuzz", json.dumps(sign_payload(payload, [signer])).encode(), policy)
    assert found is not None or why
    if found is not None and found.time is not None:
        assert found.time.utcoffset() == timedelta(0)  # every time the gate keeps is UTC
    decision = decided(found, policy)
    if decision is not None and decision.admitted:
        # whatever was changed, what is admitted still says all that admission needs
        assert found is not None and found.build is not None and found.build.hermeticity


# --- the node's co-signature ------------------------------------------------------------


@pytest.fixture(scope="module")
def node_job(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, str]]:
    """A real node (fake sandbox backend) that built one job."""
    root = tmp_path_factory.mktemp("node")
    config = fake_sandbox(root)
    generate_keypair(root / "key")
    settings = NodeSettings(directory=root / "node", builder_id="https://t/node", lease_s=5)
    node = Node(settings, load_signer(str(root / "key")), config=config)
    spec = write_spec(root / "src", FAKE_SPEC)
    job = node.submit(pack_source(spec.parent, root / "p"), "tester")
    node.start()
    try:
        while node.job(job.id).state is not JobState.FINISHED:
            time.sleep(0.05)
    finally:
        node.stop()
    yield node, job.id
    node.close()


def node_agreement(node: Node, job_id: str) -> dict[str, Any]:
    own = node.own_outputs(job_id)
    assert own
    stored = node.attestation(job_id)
    assert stored is not None
    facts = Provenance.from_dict(
        parse_statement(parse_envelope(stored, "job").payload)["predicate"]
    )
    assert facts.source is not None and facts.spec_sha256 is not None
    document: dict[str, Any] = json.loads(
        honest_agreement(own, node.signer.public_key.keyid, job_id)
    )
    document["predicate"]["source"]["digest"]["sha256"] = facts.source.sha256
    document["predicate"]["spec"]["sha256"] = facts.spec_sha256
    return document


@CI
@given(
    changes=st.lists(st.tuples(st.sampled_from(AGREEMENT_PATHS), hostile), max_size=3),
    spelling=st.sampled_from(["canonical", "spaced"]),
)
@example(changes=[], spelling="canonical")  # the honest agreement is co-signed
@example(changes=[(("predicate", "createdOn"), "9999-12-31T23:59:59-23:59")], spelling="canonical")
@example(
    changes=[(("subject", 0, "digest", "sha512"), "0" * 128)],
    spelling="canonical",
)
def test_a_node_co_signs_exactly_the_agreement_it_would_write(
    node_job: tuple[Node, str], changes: list[tuple[tuple[str | int, ...], Any]], spelling: str
) -> None:
    node, job_id = node_job
    honest = node_agreement(node, job_id)
    document = mutated(
        replaced(honest, ("predicate", "createdOn"), "2026-11-22T12:00:00Z"), changes
    )
    payload = (
        json.dumps(document, sort_keys=True, separators=(",", ":"))
        if spelling == "canonical"
        else json.dumps(document, indent=1)
    ).encode()
    try:
        signed, answer = node.cosign(job_id, payload, now=NOW)
    except StatementError:
        return  # not a statement, or not an agreement: an error for the client (HTTP 400)
    if not changes and spelling == "canonical":
        assert signed, answer  # positive control
    if signed:
        # only the very bytes the node itself would write about its own job
        agreement = Agreement.from_statement(read_statement(payload))
        assert agreement.payload() == payload
        assert agreement.outputs == node.own_outputs(job_id)
        assert abs(agreement.created_on - NOW) <= CLOCK_SKEW
    else:
        refusal = parse_statement(base64.b64decode(answer["payload"]))
        assert refusal["predicate"]["createdOn"] == "2026-11-22T12:00:00Z"  # the node's clock


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
    | st.datetimes(
        timezones=st.none()
        | st.just(UTC)
        | st.builds(
            timezone,
            st.timedeltas(
                min_value=-timedelta(hours=23, minutes=59),
                max_value=timedelta(hours=23, minutes=59),
            ).map(lambda d: timedelta(minutes=d // timedelta(minutes=1))),
        )
    )
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
@example(  # an expiry whose zone carries it past the end of the calendar in UTC
    values={
        "threshold": 1,
        "expires": datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(-timedelta(minutes=1439))),
    },
    operators=[],
    with_key=True,
)
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
    if policy.expires is not None:  # a time every reader can convert and print
        assert policy.expires.utcoffset() == timedelta(0) and policy.expires > NOW


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


OFFLINE_STAGING = SigstoreTrust(offline=True, staging=True)  # shipped roots: no network


@CI
@given(
    changes=st.lists(
        st.tuples(st.sampled_from(BUNDLE_PATHS), json_values | st.just("AAAA")), max_size=2
    ),
)
def test_any_mutated_bundle_is_a_check_or_a_bundle_error(
    trusted: tuple[Policy, CryptoSigner], changes: list[Any]
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
        checked = check_bundle(data, policy.keys, trust=OFFLINE_STAGING)
    except BundleError:
        pass
    else:
        assert isinstance(checked, BundleCheck)
    found, why = evidence("bundle", data, policy, trust=OFFLINE_STAGING)
    assert found is not None or why or not_an_attestation(data)  # its mediaType changed
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
