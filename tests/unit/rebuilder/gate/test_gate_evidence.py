"""Evidence that cannot be gamed (issue 12): key identity, one signature for one key, time,
source binding, trace completeness, hostile values, signed policies, a library that fails
closed. Each attack has a control showing it is real (it would pass without the defence)
and a control showing the honest case still passes."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from securesystemslib.signer import CryptoSigner, SSlibKey
from typer.testing import CliRunner

from rebuilder.attest.envelope import parse_envelope, sign_payload, write_envelope
from rebuilder.attest.keys import (
    KeyProblem,
    KeyRing,
    generate_keypair,
    key_fingerprint,
    load_public_key,
    load_signer,
    public_key_from_dict,
)
from rebuilder.attest.statement import make_statement
from rebuilder.attest.verify import verified_keys, verify_attestation
from rebuilder.cli import app
from rebuilder.formats.fields import PredicateError, Subject, parse_time
from rebuilder.gate.gate import run_gate, write_vsa
from rebuilder.gate.policy import Operator, Policy, PolicyError, load_policy
from rebuilder.gate.policy_signature import load_signed_policy, sign_policy, signature_path
from rebuilder.node.client import Credentials
from rebuilder.rebuild import NodeReport, distinct_keys
from sandbox.uris import (
    AGREEMENT_PREDICATE,
    CHECK_PREDICATE,
    DISAGREEMENT_PREDICATE,
    SLSA_PROVENANCE,
)
from tests.unit.rebuilder.conftest import PREDICATE
from tests.unit.rebuilder.gate.conftest import (
    NOW,
    SOURCE,
    SPEC,
    World,
    fresh,
    gate_args,
    upper_case_json,
)

OTHER_SOURCE = "7" * 64  # a tree with a vendored binary in it: `cp prebuilt out`


# --- 1. key identity is the key ---------------------------------------------------------


def test_the_same_key_as_pem_and_upper_case_json_is_one_key(world: World) -> None:
    pem = world.keys["acme"][0]
    spelled = upper_case_json(pem, world.root / "acme-upper.json")
    as_pem, as_json = load_public_key(pem), load_public_key(spelled)
    # control: as text the two differ (a comparison of spellings let them through)
    assert repr(sorted(as_pem.keyval.items())) != repr(
        sorted(json.loads(spelled.read_text())["keyval"].items())
    )
    assert as_pem.keyid != as_json.keyid
    assert key_fingerprint(as_pem) == key_fingerprint(as_json)
    policy = world.policy(
        operators=f'\n[[operators]]\nname = "acme"\nkeys = [{{ file = "{pem}" }}]\n'
        f'\n[[operators]]\nname = "globex"\nkeys = [{{ file = "{spelled}" }}]\n'
    )
    with pytest.raises(PolicyError) as caught:
        load_policy(policy)
    assert "operators[0].keys[0]" in str(caught.value)
    assert "operators[1].keys[0]" in str(caught.value)
    # inline, under one operator, twice: the same
    inline = world.policy(
        operators='\n[[operators]]\nname = "acme"\nkeys = [{ pem = """'
        + pem.read_text()
        + '""" }, { sslib = { keytype = "ed25519", scheme = "ed25519", keyval = { public = "'
        + as_pem.keyval["public"].upper()
        + '" } } }]\n'
        + f'\n[[operators]]\nname = "globex"\nkeys = [{{ file = "{world.keys["globex"][0]}" }}]\n'
    )
    with pytest.raises(PolicyError, match=r"keys\[0\] and at operators\[0\].keys\[1\]"):
        load_policy(inline)
    # positive control: two different keys, in either spelling, are two operators
    other = upper_case_json(world.keys["globex"][0], world.root / "globex-upper.json")
    fine = world.policy(
        operators=f'\n[[operators]]\nname = "acme"\nkeys = [{{ file = "{pem}" }}]\n'
        f'\n[[operators]]\nname = "globex"\nkeys = [{{ file = "{other}" }}]\n'
    )
    world.provenance("acme")
    world.provenance("globex")
    assert world.decide(fine) == (True, ())


def test_a_keyless_signature_counts_for_one_key_only(world: World) -> None:
    # Two small-order "keys" that both verify one forged signature: the worst case of a
    # signature without key id tried against every key.
    identity = bytes([1]) + bytes(31)
    weak = [
        SSlibKey.from_crypto(Ed25519PublicKey.from_public_bytes(raw))
        for raw in (identity, identity[:31] + b"\x80")
    ]
    payload = make_statement([Subject("hello", world.digest)], SLSA_PROVENANCE, PREDICATE)
    envelope = parse_envelope(
        json.dumps(
            {
                "payload": base64.b64encode(payload).decode(),
                "payloadType": "application/vnd.in-toto+json",
                "signatures": [
                    {"keyid": "", "sig": base64.b64encode(identity + bytes(32)).decode()}
                ],
            }
        ).encode(),
        "forged",
    )
    ring = KeyRing.of(weak)
    assert len(ring) == 2  # two different encodings: two fingerprints
    # control: each key alone accepts that one signature
    assert all(len(verified_keys(envelope, KeyRing.of([key]))) == 1 for key in weak)
    assert len(verified_keys(envelope, ring)) == 1  # one signature, one key
    # and a policy refuses such keys outright
    with pytest.raises(KeyProblem, match="small-order"):
        public_key_from_dict(weak[0].to_dict(), "weak")


def test_one_key_signing_twice_under_other_ids_counts_once(world: World, tmp_path: Path) -> None:
    signer = world.signers["acme"][0]
    payload = make_statement([Subject("hello", world.digest)], SLSA_PROVENANCE, PREDICATE)
    envelope = sign_payload(payload, [signer])
    first = envelope["signatures"][0]
    envelope["signatures"] = [
        {**first, "keyid": ""},
        {**first, "keyid": "made-up"},
        {**first, "keyid": load_public_key(world.keys["globex"][0]).keyid},  # another's id
    ]
    path = tmp_path / "twice.json"
    write_envelope(path, envelope)
    keys = [load_public_key(world.keys["acme"][0]), load_public_key(world.keys["globex"][0])]
    outcome = verify_attestation(path, keys, threshold=2)
    assert not outcome.ok and outcome.signed_by == (keys[0].keyid,)
    assert verify_attestation(path, keys, threshold=1).ok  # positive control


def test_verify_counts_keys_not_spellings(world: World, tmp_path: Path) -> None:
    pem = world.keys["acme"][0]
    spelled = upper_case_json(pem, tmp_path / "upper.json")
    payload = make_statement([Subject("hello", world.digest)], SLSA_PROVENANCE, PREDICATE)
    path = tmp_path / "a.intoto.json"
    write_envelope(path, sign_payload(payload, [world.signers["acme"][0]]))
    both = [load_public_key(pem), load_public_key(spelled)]
    assert len({k.keyid for k in both}) == 2  # control: two ids, as the old count saw it
    with pytest.raises(KeyProblem, match="expected 1 to 1"):
        verify_attestation(path, both, threshold=2)
    assert verify_attestation(path, both).ok  # default: every distinct key, i.e. one
    runner = CliRunner()
    args = ["verify", str(path), "--key", str(pem), "--key", str(spelled), "--threshold", "2"]
    done = runner.invoke(app, args)
    assert done.exit_code == 2 and "expected 1 to 1" in done.stderr
    assert runner.invoke(app, args[:-2]).exit_code == 0


def test_rebuild_counts_one_key_on_two_nodes_once(world: World, tmp_path: Path) -> None:
    pem = world.keys["acme"][0]
    spelled = upper_case_json(pem, tmp_path / "upper.json")
    same = [
        NodeReport(url="a", name="a", key=load_public_key(pem)),
        NodeReport(url="b", name="b", key=load_public_key(spelled)),
    ]
    assert distinct_keys(same) == 1
    other = NodeReport(url="c", name="c", key=load_public_key(world.keys["globex"][0]))
    assert distinct_keys([*same, other]) == 2


# --- 2. time is checked -----------------------------------------------------------------


@pytest.mark.parametrize(
    "ahead", [timedelta(hours=1), timedelta(days=365 * 900)], ids=["1 hour", "900 years"]
)
@pytest.mark.parametrize("max_age", [True, False], ids=["max_age", "no max_age"])
def test_a_statement_from_the_future_does_not_count(
    world: World, ahead: timedelta, max_age: bool
) -> None:
    world.provenance("acme")
    world.provenance("globex", finished=NOW + ahead)
    policy = world.policy()
    if not max_age:
        policy.write_text(policy.read_text().replace('max_age = "7d"\n', ""))
    decisions, _ = run_gate(
        [world.artifact],
        load_policy(policy),
        [str(world.store)],
        credentials=Credentials(),
        now=NOW,
    )
    (decision,) = decisions
    assert not decision.admitted and "(acme); 2 needed" in decision.reasons[0]
    assert any("in the future beyond the 5-minute clock skew" in n for n in decision.notes)


def test_a_time_within_the_clock_skew_counts(world: World) -> None:
    world.provenance("acme")
    world.provenance("globex", finished=NOW + timedelta(minutes=4))
    assert world.decide(world.policy()) == (True, ())


def test_max_age_counts_from_the_newest_signed_time(world: World) -> None:
    world.provenance("acme", finished=NOW - timedelta(days=30))  # old
    world.provenance("globex")
    admitted, reasons = world.decide(world.policy())
    assert not admitted and "(globex); 2 needed" in reasons[0]
    world.provenance("acme", finished=NOW - timedelta(days=1))  # acme vouched again since
    assert world.decide(world.policy()) == (True, ())


def test_an_agreement_dated_by_the_client_in_the_future_does_not_count(world: World) -> None:
    world.provenance("acme")
    world.agreement("acme", "globex", created=datetime(2999, 1, 1, tzinfo=UTC))
    admitted, reasons = world.decide(world.policy())
    assert not admitted and "(acme); 2 needed" in reasons[0]
    world.agreement("acme", "globex", created=NOW - timedelta(minutes=1))
    assert world.decide(world.policy()) == (True, ())


@pytest.mark.parametrize(
    "created", [None, NOW + timedelta(days=365)], ids=["no time", "from the future"]
)
def test_a_trusted_disagreement_denies_whatever_its_time(
    world: World, created: datetime | None
) -> None:
    world.provenance("acme")
    world.provenance("globex")
    predicate: dict[str, Any] = {"refusedStatement": {"sha256": "0" * 64}, "jobId": "j"}
    if created is not None:
        predicate["createdOn"] = created.strftime("%Y-%m-%dT%H:%M:%SZ")
    payload = make_statement([Subject("hello", "f" * 64)], DISAGREEMENT_PREDICATE, predicate)
    assert world.decide(world.policy()) == (True, ())  # control: without it, admitted
    world.save(sign_payload(payload, [world.signers["initech"][0]]))
    admitted, reasons = world.decide(world.policy())
    assert not admitted and "initech built a different hello" in reasons[0]


def test_a_disagreement_about_another_source_or_spec_does_not_deny(world: World) -> None:
    """Anyone who may submit to a trusted node can have it build other bytes under the
    artifact's name: only a disagreement about the same source and spec says the release
    is not reproducible (review gate-1, suspicion 3)."""
    world.provenance("acme")
    world.provenance("globex")
    other = {"name": "source", "digest": {"sha256": OTHER_SOURCE}}
    world.provenance("initech", digest="f" * 64, source=other)
    world.provenance("initech", digest="e" * 64, spec="8" * 64)
    admitted, reasons = world.decide(world.policy())
    assert admitted, reasons
    world.provenance("initech", digest="d" * 64)  # the same source and spec: it denies
    admitted, reasons = world.decide(world.policy())
    assert not admitted and reasons == ("trusted operator(s) initech built a different hello",)


@pytest.mark.parametrize(
    ("source", "spec", "denies"),
    [(OTHER_SOURCE, SPEC, False), (SOURCE, "8" * 64, False), (SOURCE, SPEC, True)],
    ids=["another source", "another spec", "the same source and spec"],
)
def test_a_node_s_signed_refusal_denies_only_about_the_same_source(
    world: World, source: str, spec: str, denies: bool
) -> None:
    world.provenance("acme")
    world.provenance("globex")
    predicate = {
        "refusedStatement": {"sha256": "0" * 64},
        "jobId": "j",
        "createdOn": "2026-11-22T11:00:00Z",
        "source": {"name": "source", "digest": {"sha256": source}},
        "spec": {"sha256": spec},
    }
    payload = make_statement([Subject("hello", "f" * 64)], DISAGREEMENT_PREDICATE, predicate)
    world.save(sign_payload(payload, [world.signers["initech"][0]]))
    admitted, reasons = world.decide(world.policy())
    assert admitted is not denies, reasons


BEYOND_THE_CALENDAR = ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59"]


def dated_statement(world: World, kind: str, stamp: str) -> bytes:
    """initech's statement of each kind about hello, dated ``stamp``."""
    if kind == "provenance":
        honest = world.provenance("initech")
        document = json.loads(base64.b64decode(json.loads(honest.read_text())["payload"]))
        honest.unlink()
        document["predicate"]["runDetails"]["metadata"]["finishedOn"] = stamp
        return json.dumps(document).encode()
    kinds: dict[str, tuple[str, dict[str, Any]]] = {
        "agreement": (
            AGREEMENT_PREDICATE,
            {
                "threshold": 1,
                "agreeing": 1,
                "request": {"sha256": "0" * 64},
                "source": {"name": "source", "digest": {"sha256": SOURCE}},
                "spec": {"sha256": SPEC},
                "nodes": [],
                "createdOn": stamp,
            },
        ),
        "check": (CHECK_PREDICATE, {"reproducible": True, "finishedOn": stamp}),
        "disagreement": (
            DISAGREEMENT_PREDICATE,
            {"refusedStatement": {"sha256": "0" * 64}, "jobId": "j", "createdOn": stamp},
        ),
    }
    predicate_type, predicate = kinds[kind]
    return make_statement([Subject("hello", world.digest)], predicate_type, predicate)


@pytest.mark.parametrize("stamp", BEYOND_THE_CALENDAR)
@pytest.mark.parametrize("kind", ["provenance", "agreement", "check", "disagreement"])
def test_a_time_beyond_the_calendar_is_one_invalid_attestation(
    world: World, kind: str, stamp: str
) -> None:
    """t_time2.py: converting such a time to UTC overflowed and crashed the whole gate."""
    other = world.root / "other-tool"
    other.write_bytes(b"another release\n")
    other_digest = hashlib.sha256(other.read_bytes()).hexdigest()
    for name in ("acme", "globex"):
        world.provenance(name)
        world.provenance(name, digest=other_digest, name="other-tool")
    world.save(sign_payload(dated_statement(world, kind, stamp), [world.signers["initech"][0]]))
    decisions, _ = run_gate(
        [world.artifact, other],
        load_policy(world.policy()),
        [str(world.store)],
        credentials=Credentials(),
        now=NOW,
    )
    hello, tool = decisions
    assert tool.admitted, tool.reasons  # the other artifact is still decided
    assert not hello.admitted  # a trusted key signed a broken statement about it
    field = "finishedOn" if kind in ("provenance", "check") else "createdOn"
    assert any("is invalid" in r and field in r for r in hello.reasons), hello.reasons


def test_the_gate_cli_answers_a_time_beyond_the_calendar_in_json(world: World) -> None:
    """t_time_cli.py: a traceback and exit 1 with no JSON, for every artifact."""
    fresh(world)
    world.save(
        sign_payload(
            dated_statement(world, "agreement", BEYOND_THE_CALENDAR[0]),
            [world.signers["initech"][0]],
        )
    )
    done = CliRunner().invoke(app, [*gate_args(world, world.policy()), "--json"])
    assert done.exit_code == 1, done.output
    (decision,) = json.loads(done.stdout)["decisions"]
    assert decision["decision"] == "deny" and "not a time between" in decision["reasons"][0]


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("2026-11-22T12:00:00Z", True),
        ("2026-11-22T13:00:00+01:00", True),
        ("1970-01-01T00:00:00Z", True),
        ("8999-12-31T23:59:59Z", True),
        ("1969-12-31T23:59:59Z", False),
        ("9000-01-01T00:00:00Z", False),
        ("9999-12-31T23:59:59-23:59", False),
        ("0001-01-01T00:00:00+23:59", False),
    ],
)
def test_statement_times_are_between_1970_and_9000(text: str, valid: bool) -> None:
    if valid:
        assert parse_time(text, "t").utcoffset() == timedelta(0)  # converted to UTC
    else:
        with pytest.raises(PredicateError, match="not a time between"):
            parse_time(text, "t")


# --- 3. the policy binds the source -----------------------------------------------------


def pinned(world: World, extra: str = "") -> Path:
    return world.policy(extra=f'sources = ["sha256:{SOURCE}"]\n{extra}')


def test_k_operators_building_a_vendored_binary_are_denied(world: World) -> None:
    # `cp prebuilt out`: every operator reproduces the same bytes, from another source
    world.provenance("acme", source={"name": "source", "digest": {"sha256": OTHER_SOURCE}})
    world.provenance("globex", source={"name": "source", "digest": {"sha256": OTHER_SOURCE}})
    unpinned = world.policy()
    assert world.decide(unpinned) == (True, ())  # control: bytes alone would pass
    admitted, reasons = world.decide(pinned(world))
    assert not admitted
    assert all("which the policy does not allow" in r for r in reasons)


def test_the_pinned_source_is_admitted(world: World) -> None:
    world.provenance("acme")
    world.provenance("globex")
    assert world.decide(pinned(world)) == (True, ())


def test_the_same_bytes_from_different_sources_are_denied(world: World) -> None:
    world.provenance("acme")
    world.provenance("globex", source={"name": "source", "digest": {"sha256": OTHER_SOURCE}})
    admitted, reasons = world.decide(world.policy())
    assert not admitted
    assert reasons == (
        f"the operators built the same bytes from different sources: "
        f"sha256:{SOURCE[:16]}… (acme); sha256:{OTHER_SOURCE[:16]}… (globex)",
    )


def test_an_unknown_source_or_spec_is_denied(world: World) -> None:
    world.provenance("acme")
    world.provenance("globex", spec=None)  # an older provenance: no spec recorded
    admitted, reasons = world.decide(world.policy())
    assert not admitted and "names no spec digest" in reasons[0]


def test_specs_and_commands_are_pinned(world: World) -> None:
    world.provenance("acme")
    world.provenance("globex", command=["sh", "-c", "cp prebuilt out"], spec="8" * 64)
    admitted, reasons = world.decide(world.policy(extra=f'specs = ["sha256:{SPEC}"]\n'))
    assert not admitted and any("spec sha256:8888" in r for r in reasons)
    admitted, reasons = world.decide(world.policy(extra='commands = [["make"]]\n'))
    assert not admitted and any("cp prebuilt out" in r for r in reasons)


def test_a_git_commit_pin_binds_through_a_trusted_provenance(world: World) -> None:
    commit = "c" * 40
    checkout = {
        "name": "source",
        "uri": f"git+https://git.example/acme/hello@{commit}",
        "digest": {"sha256": SOURCE, "gitCommit": commit},
    }
    policy = world.policy(extra=f'sources = ["git+https://git.example/acme/hello.git@{commit}"]\n')
    world.agreement("acme", "globex")  # nodes name the tree digest only
    world.provenance("acme")
    admitted, reasons = world.decide(policy)
    assert not admitted and "does not allow" in reasons[0]  # nothing ties the tree to the commit
    world.provenance("globex", source=checkout)  # globex built from the checkout, and says so
    assert world.decide(policy) == (True, ())
    other = world.policy(extra=f'sources = ["git+https://git.example/acme/hello@{"d" * 40}"]\n')
    assert not world.decide(other)[0]


# --- 4. trace completeness and loopback (the gate side) ----------------------------------


def hermeticity(**changes: Any) -> dict[str, Any]:
    base = {"networkAttempts": 0, "loopbackAttempts": 0, "traceComplete": True, "traceGaps": []}
    return {k: v for k, v in {**base, **changes}.items() if v is not None}


@pytest.mark.parametrize(
    ("annotations", "reason"),
    [
        (hermeticity(traceComplete=False), "traceComplete is not true"),
        (hermeticity(traceGaps=["event cap reached"]), "gaps: event cap reached"),
        (hermeticity(traceComplete=None), "traceComplete is not true"),
    ],
    ids=["traceComplete false", "gaps", "not recorded"],
)
def test_an_incomplete_trace_denies_unless_allowed(
    world: World, annotations: dict[str, Any], reason: str
) -> None:
    world.provenance("acme")
    world.provenance("globex", hermeticity=annotations)
    admitted, reasons = world.decide(world.policy())
    assert not admitted and reason in reasons[0] and "allow_incomplete_trace" in reasons[0]
    assert world.decide(world.policy(extra="allow_incomplete_trace = true\n")) == (True, ())


def test_loopback_is_allowed_only_by_the_policy_and_never_the_outside(world: World) -> None:
    world.provenance("acme")
    world.provenance("globex", hermeticity=hermeticity(loopbackAttempts=3))
    admitted, reasons = world.decide(world.policy())
    assert not admitted and "3 loopback attempt(s)" in reasons[0]
    assert world.decide(world.policy(extra="allow_loopback = true\n")) == (True, ())
    world.provenance("initech", hermeticity=hermeticity(networkAttempts=1, loopbackAttempts=3))
    admitted, reasons = world.decide(world.policy(extra="allow_loopback = true\n"))
    assert not admitted and "1 network attempt(s) outside" in reasons[0]


def test_an_older_provenance_without_loopback_counts_when_nothing_was_attempted(
    world: World,
) -> None:
    world.provenance("acme", hermeticity=hermeticity(loopbackAttempts=None, traceGaps=None))
    world.provenance("globex", hermeticity=hermeticity(loopbackAttempts=None, traceGaps=None))
    assert world.decide(world.policy()) == (True, ())
    world.provenance(
        "initech", hermeticity=hermeticity(loopbackAttempts=None, networkAttempts=2)
    )  # then, loopback or not, 2 attempts deny
    assert not world.decide(world.policy(extra="allow_loopback = true\n"))[0]


# --- 5. hostile values make one attestation invalid --------------------------------------


def raw_provenance(world: World, by: str, hermeticity_json: str, name: str = "hello") -> None:
    """A provenance whose hermeticity annotations are the given JSON text, signed."""
    honest = world.provenance(by, name=name)
    document = json.loads(honest.read_text())
    honest.unlink()
    statement = base64.b64decode(document["payload"]).decode()
    old = '"loopbackAttempts":0,"networkAttempts":0,"traceComplete":true,"traceGaps":[]'
    assert old in statement
    payload = statement.replace(old, hermeticity_json).encode()
    world.save(sign_payload(payload, [world.signers[by][0]]))


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "-1", "1e999", '"0"', "0.5"])
def test_a_hostile_count_is_one_invalid_attestation(
    tmp_path: Path, world: World, value: str
) -> None:
    # control: Python's own JSON reads NaN and Infinity, and int() of them raises
    if value in ("NaN", "Infinity", "-Infinity", "1e999"):
        with pytest.raises((ValueError, OverflowError)):
            int(json.loads(value))
    other = world.root / "other-tool"
    other.write_bytes(b"another release\n")
    other_digest = hashlib.sha256(other.read_bytes()).hexdigest()
    world.provenance("acme", digest=other_digest, name="other-tool")
    world.provenance("globex", digest=other_digest, name="other-tool")
    world.provenance("acme")
    raw_provenance(world, "globex", f'"networkAttempts":{value},"traceComplete":true')
    decisions, _ = run_gate(
        [world.artifact, other],
        load_policy(world.policy()),
        [str(world.store)],
        credentials=Credentials(),
        now=NOW,
    )
    hello, tool = decisions
    assert not hello.admitted
    assert any("invalid" in r for r in hello.reasons + hello.notes), hello
    assert tool.admitted, tool.reasons  # the other artifact is still decided


def test_deep_nesting_and_huge_strings_are_reasons(world: World) -> None:
    world.provenance("acme")
    world.provenance("globex")
    deep = b'{"payloadType": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    (world.store / "deep.json").write_bytes(deep)
    assert world.decide(world.policy()) == (True, ())  # control: nested junk is only a note
    huge = make_statement([Subject("x" * 2_000_000, world.digest)], SLSA_PROVENANCE, PREDICATE)
    world.save(sign_payload(huge, [world.signers["initech"][0]]))
    decisions, _ = run_gate(
        [world.artifact],
        load_policy(world.policy()),
        [str(world.store)],
        credentials=Credentials(),
        now=NOW,
    )
    (decision,) = decisions
    assert not decision.admitted  # a trusted key signed something broken about it
    assert "a trusted attestation of it is invalid" in decision.reasons[0]
    assert all(len(r) < 1000 for r in decision.reasons + decision.notes)
    assert any("nested deeper than 64 levels" in n for n in decision.notes)


# --- 6. signed, expiring policies -------------------------------------------------------


@pytest.fixture
def owners(tmp_path: Path) -> list[Path]:
    made = []
    for name in ("owner-a", "owner-b"):
        generate_keypair(tmp_path / "owners" / name)
        made.append(tmp_path / "owners" / name)
    return made


def test_a_signed_policy_is_used_and_named_in_the_vsa(
    world: World, owners: list[Path], tmp_path: Path
) -> None:
    fresh(world)
    policy = world.policy(extra="version = 7\nexpires = 2999-01-01T00:00:00Z\n")
    for owner in owners:  # the owners sign in turn
        assert (
            CliRunner().invoke(app, ["sign-policy", str(policy), "--key", str(owner)]).exit_code
            == 0
        )
    keys = [arg for owner in owners for arg in ("--policy-key", f"{owner}.pub")]
    vsa = ["--vsa-key", str(owners[0]), "--vsa-dir", str(tmp_path / "vsa")]
    done = CliRunner().invoke(app, gate_args(world, policy, *keys, *vsa))
    assert done.exit_code == 0, done.output
    (written,) = (tmp_path / "vsa").glob("*.vsa.intoto.json")
    statement = json.loads(base64.b64decode(json.loads(written.read_text())["payload"]))
    described = statement["predicate"]["policy"]
    assert described["digest"]["sha256"] == hashlib.sha256(policy.read_bytes()).hexdigest()
    assert described["annotations"]["version"] == 7
    assert len(described["annotations"]["signedBy"]) == 2


def test_a_tampered_policy_is_refused(world: World, owners: list[Path]) -> None:
    fresh(world)
    policy = world.policy(extra="expires = 2999-01-01T00:00:00Z\n")  # signed: must expire
    CliRunner().invoke(app, ["sign-policy", str(policy), "--key", str(owners[0])])
    keys = ["--policy-key", f"{owners[0]}.pub"]
    assert CliRunner().invoke(app, gate_args(world, policy, *keys)).exit_code == 0  # control
    policy.write_text(policy.read_text().replace("threshold = 2", "threshold = 1"))
    done = CliRunner().invoke(app, gate_args(world, policy, *keys))
    assert done.exit_code == 2 and "changed after its owners signed it" in done.stderr


def test_an_unsigned_or_under_signed_policy_is_refused(world: World, owners: list[Path]) -> None:
    fresh(world)
    policy = world.policy(extra="expires = 2999-01-01T00:00:00Z\n")  # signed: must expire
    keys = [arg for owner in owners for arg in ("--policy-key", f"{owner}.pub")]
    done = CliRunner().invoke(app, gate_args(world, policy, *keys))
    assert done.exit_code == 2 and "unsigned" in done.stderr
    CliRunner().invoke(app, ["sign-policy", str(policy), "--key", str(owners[0])])
    done = CliRunner().invoke(app, gate_args(world, policy, *keys))
    assert (
        done.exit_code == 2 and "signed by 1 of the 2 policy owner key(s); 2 needed" in done.stderr
    )
    threshold = gate_args(world, policy, *keys, "--policy-threshold", "1")
    assert CliRunner().invoke(app, threshold).exit_code == 0
    # a signature by someone else's key does not count
    intruder = world.root / "intruder"
    generate_keypair(intruder)
    signature_path(policy).unlink()
    CliRunner().invoke(app, ["sign-policy", str(policy), "--key", str(intruder)])
    assert CliRunner().invoke(app, threshold).exit_code == 2


def test_an_expired_policy_is_refused(world: World, owners: list[Path]) -> None:
    fresh(world)
    policy = world.policy(extra="expires = 2026-11-22T12:00:00Z\n")
    load_policy(policy, now=NOW - timedelta(seconds=1))  # control: valid until then
    with pytest.raises(PolicyError, match="expired"):
        load_policy(policy, now=NOW)
    with pytest.raises(PolicyError, match="expired"):
        sign_policy(policy, [load_signer(str(owners[0]))], now=NOW)
    signed = load_signed_policy
    sign_policy(policy, [load_signer(str(owners[0]))], now=NOW - timedelta(days=1))
    with pytest.raises(PolicyError, match="expired"):
        signed(policy, [load_public_key(Path(f"{owners[0]}.pub"))], now=NOW)
    done = CliRunner().invoke(app, gate_args(world, policy))  # the real clock is later
    assert done.exit_code == 2 and "expired" in done.stderr
    with pytest.raises(PolicyError, match="a date alone names no instant"):
        load_policy(world.policy(extra="expires = 2999-01-01\n"))


# --- 7. the library fails closed --------------------------------------------------------


def test_the_library_refuses_a_policy_that_admits_by_accident(world: World) -> None:
    acme = load_public_key(world.keys["acme"][0])
    globex = load_public_key(world.keys["globex"][0])
    spelled = load_public_key(upper_case_json(world.keys["acme"][0], world.root / "u.json"))
    ops = (Operator(name="acme", keys=(acme,)), Operator(name="globex", keys=(globex,)))
    Policy(path=Path("p"), threshold=2, operators=ops)  # positive control
    with pytest.raises(PolicyError, match=">= 1"):
        Policy(path=Path("p"), threshold=0, operators=ops)
    with pytest.raises(PolicyError, match="no trusted operators"):
        Policy(path=Path("p"), threshold=1, operators=())
    with pytest.raises(PolicyError, match="more than the 2"):
        Policy(path=Path("p"), threshold=3, operators=ops)
    with pytest.raises(PolicyError, match="the same public key is listed twice"):
        Policy(
            path=Path("p"),
            threshold=1,
            operators=(*ops, Operator(name="initech", keys=(spelled,))),
        )
    with pytest.raises(PolicyError, match="has no keys"):
        Operator(name="empty", keys=())


def test_the_library_refuses_to_verify_against_nothing(world: World, tmp_path: Path) -> None:
    payload = make_statement([Subject("hello", world.digest)], SLSA_PROVENANCE, PREDICATE)
    path = tmp_path / "a.json"
    write_envelope(path, sign_payload(payload, [world.signers["acme"][0]]))
    key = load_public_key(world.keys["acme"][0])
    assert verify_attestation(path, [key], threshold=1).ok  # positive control
    with pytest.raises(KeyProblem, match="no verification keys"):
        verify_attestation(path, [])
    with pytest.raises(KeyProblem, match="threshold 0"):
        verify_attestation(path, [key], threshold=0)
    with pytest.raises(KeyProblem, match="no verification keys"):
        KeyRing.of([])


def test_a_vsa_is_never_written_for_a_denial(world: World, tmp_path: Path) -> None:
    world.provenance("acme")
    policy = load_policy(world.policy())
    decisions, read = run_gate(
        [world.artifact], policy, [str(world.store)], credentials=Credentials(), now=NOW
    )
    assert not decisions[0].admitted
    with pytest.raises(Exception, match="only for an admitted artifact"):
        write_vsa(
            decisions[0],
            policy,
            read,
            signer=CryptoSigner.generate_ed25519(),
            verifier_id="t",
            directory=tmp_path / "vsa",
            now=NOW,
        )
