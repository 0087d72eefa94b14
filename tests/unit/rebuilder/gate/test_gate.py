"""The release gate: policy validation and every way an artifact must be denied."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner
from typer.testing import CliRunner

from rebuilder.attest.envelope import sign_payload
from rebuilder.attest.keys import load_signer
from rebuilder.attest.statement import make_statement
from rebuilder.cli import app
from rebuilder.formats.fields import Subject
from rebuilder.gate.gate import run_gate
from rebuilder.gate.policy import PolicyError, load_policy
from rebuilder.node.client import Credentials
from sandbox.uris import CHECK_PREDICATE, SPDX_PREDICATE
from tests.schemas import validate_envelope
from tests.unit.rebuilder.gate.conftest import IMAGE, NOW, World


def test_two_independent_operators_admit(world: World) -> None:
    world.provenance("acme")
    world.provenance("globex")
    assert world.decide(world.policy()) == (True, ())


def test_fewer_than_k_agreeing_deny(world: World) -> None:
    world.provenance("acme")
    admitted, reasons = world.decide(world.policy())
    assert not admitted and "1 trusted operator(s) vouch" in reasons[0]


def test_one_operator_with_several_keys_counts_once(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.operator("acme", keys=2)
    world.operator("globex")
    world.provenance("acme", key_index=0)
    world.provenance("acme", key_index=1)
    admitted, reasons = world.decide(world.policy())
    assert not admitted and "(acme); 2 needed" in reasons[0]


def test_k_agreeing_but_one_for_a_different_digest_denies(world: World) -> None:
    world.provenance("acme")
    world.provenance("globex", digest="f" * 64)
    admitted, reasons = world.decide(world.policy(extra="deny_on_disagreement = false\n"))
    assert not admitted and "1 trusted operator(s)" in reasons[0]


def test_a_disagreeing_trusted_rebuilder_denies_even_when_k_agree(world: World) -> None:
    world.provenance("acme")
    world.provenance("globex")
    world.provenance("initech", digest="f" * 64)
    admitted, reasons = world.decide(world.policy())
    assert not admitted and reasons == ("trusted operator(s) initech built a different hello",)
    assert world.decide(world.policy(extra="deny_on_disagreement = false\n"))[0]


def test_expired_attestations_do_not_count_now_equal_to_expiry_is_expired(
    world: World,
) -> None:
    world.provenance("acme", finished=NOW - timedelta(days=7))  # exactly 7d: expired
    world.provenance("globex", finished=NOW - timedelta(days=7) + timedelta(seconds=1))
    admitted, reasons = world.decide(world.policy())
    assert not admitted and "(globex); 2 needed" in reasons[0]


def test_a_valid_envelope_for_a_different_artifact_does_not_count(world: World) -> None:
    world.provenance("acme")
    world.provenance("globex", digest="e" * 64, name="other-tool")
    admitted, reasons = world.decide(world.policy())
    assert not admitted and "(acme); 2 needed" in reasons[0]


def test_a_statement_signed_by_an_untrusted_key_does_not_count(world: World) -> None:
    world.provenance("acme")
    world.provenance("acme", signer=CryptoSigner.generate_ed25519())
    admitted, reasons = world.decide(world.policy())
    assert not admitted and "(acme); 2 needed" in reasons[0]


def test_an_image_not_allowed_denies(world: World) -> None:
    world.provenance("acme")
    world.provenance("globex", image="2" * 64)
    admitted, reasons = world.decide(world.policy())
    assert not admitted and f"image sha256:{'2' * 64} is not allowed" in reasons[0]


def test_network_attempts_deny_when_the_policy_forbids_them(world: World) -> None:
    world.provenance("acme")
    world.provenance("globex", network=2)
    admitted, reasons = world.decide(world.policy())
    assert not admitted and "2 network attempt(s)" in reasons[0]
    assert world.decide(world.policy(extra="allow_network_attempts = true\n"))[0]


def test_a_co_signed_agreement_counts_every_signing_operator(world: World) -> None:
    world.agreement("acme", "globex")
    world.provenance("acme")  # the image rule needs a provenance
    assert world.decide(world.policy()) == (True, ())


def test_an_agreement_alone_says_nothing_of_network_attempts(world: World) -> None:
    world.agreement("acme", "globex")
    policy = world.policy().read_text().replace(f'images = ["sha256:{IMAGE}"]\n', "")
    (world.root / "policy.toml").write_text(policy)
    admitted, reasons = world.decide(world.root / "policy.toml")
    assert not admitted and "records the build's trace" in reasons[0]


def test_a_required_check_verdict(world: World) -> None:
    world.provenance("acme")
    world.provenance("globex")
    policy = world.policy(extra="require_check = true\n")
    admitted, reasons = world.decide(policy)
    assert not admitted and "`hermetic check`" in reasons[0]
    check = make_statement(
        [Subject("hello", world.digest)],
        CHECK_PREDICATE,
        {"reproducible": True, "finishedOn": "2026-11-22T11:00:00Z"},
    )
    world.save(sign_payload(check, [world.signers["acme"][0]]))
    assert world.decide(policy) == (True, ())


def test_a_required_sbom(world: World) -> None:
    world.provenance("acme")
    world.provenance("globex")
    policy = world.policy(extra="require_sbom = true\n")
    admitted, reasons = world.decide(policy)
    assert not admitted and "SBOM" in reasons[0]
    document = {"spdxVersion": "SPDX-2.3", "creationInfo": {"created": "2026-11-22T11:00:00Z"}}
    # an SBOM about another artifact, an unsigned one, or an expired one does not count
    other = make_statement([Subject("hello", "0" * 64)], SPDX_PREDICATE, document)
    world.save(sign_payload(other, [world.signers["acme"][0]]))
    mine = make_statement([Subject("hello", world.digest)], SPDX_PREDICATE, document)
    world.save(sign_payload(mine, []))
    old = {"spdxVersion": "SPDX-2.3", "creationInfo": {"created": "2025-01-01T00:00:00Z"}}
    expired = make_statement([Subject("hello", world.digest)], SPDX_PREDICATE, old)
    world.save(sign_payload(expired, [world.signers["acme"][0]]))
    assert not world.decide(policy)[0]
    world.save(sign_payload(mine, [world.signers["acme"][0]]))
    assert world.decide(policy) == (True, ())
    with pytest.raises(PolicyError, match="require_sbom"):
        load_policy(world.policy(extra='require_sbom = "yes"\n'))


def test_an_unreachable_node_fails_closed_unless_optional(world: World) -> None:
    world.provenance("acme")
    world.provenance("globex")
    policy = load_policy(world.policy())
    decisions, _ = run_gate(
        [world.artifact],
        policy,
        [str(world.store), "http://127.0.0.1:9"],
        credentials=Credentials(),
        now=NOW,
    )
    assert not decisions[0].admitted and "failing closed" in decisions[0].reasons[0]
    optional = world.policy(
        operators="".join(
            f'\n[[operators]]\nname = "{n}"\nkeys = [{{ file = "{f[0]}" }}]\n'
            + ('optional = true\nnodes = ["http://127.0.0.1:9"]\n' if n == "initech" else "")
            for n, f in world.keys.items()
        )
    )
    decisions, _ = run_gate(
        [world.artifact],
        load_policy(optional),
        [str(world.store), "http://127.0.0.1:9"],
        credentials=Credentials(),
        now=NOW,
    )
    assert decisions[0].admitted, decisions[0].reasons


def test_the_cli_exit_codes_json_and_vsa(world: World, tmp_path: Path) -> None:
    fresh = datetime.now(tz=UTC) - timedelta(hours=1)
    world.provenance("acme", finished=fresh)
    world.provenance("globex", finished=fresh)
    policy = world.policy()
    runner = CliRunner()
    sources = ["--policy", str(policy), "--attestations", str(world.store)]
    vsa = ["--vsa-key", str(world.root / "keys" / "acme-0"), "--vsa-dir", str(tmp_path / "vsa")]
    admitted = runner.invoke(app, ["gate", str(world.artifact), *sources, *vsa])
    assert admitted.exit_code == 0, admitted.output
    assert admitted.stdout.startswith(f"ADMIT {world.artifact}")
    summary = tmp_path / "vsa" / f"hello.{world.digest[:12]}.vsa.intoto.json"
    assert validate_envelope(summary) == "vsa.schema.json"
    verified = runner.invoke(
        app, ["verify", str(summary), "--key", str(world.keys["acme"][0]), "--json"]
    )
    assert verified.exit_code == 0, verified.output
    assert (
        json.loads(verified.stdout)["predicate_type"] == "https://slsa.dev/verification_summary/v1"
    )
    other = tmp_path / "other"
    other.write_bytes(b"not vouched for")
    denied = runner.invoke(app, ["gate", str(world.artifact), str(other), *sources, "--json"])
    assert denied.exit_code == 1  # one denied: the whole gate says no
    decisions = json.loads(denied.stdout)["decisions"]
    assert [d["decision"] for d in decisions] == ["admit", "deny"]
    bad = runner.invoke(app, ["gate", str(tmp_path / "missing"), *sources])
    assert bad.exit_code == 2 and "no such artifact" in bad.stderr


@pytest.mark.parametrize(
    ("case", "operators", "extra", "message"),
    [
        ("threshold 0", None, "", "expected a number of operators >= 1"),
        ("threshold above operators", None, "", "more than the 3 trusted operators"),
        ("no operators", "", "", "no trusted operators"),
        (
            "unknown key file",
            '\n[[operators]]\nname = "x"\nkeys = [{ file = "nope.pub" }]\n',
            "",
            "cannot read the key",
        ),
        ("operator without keys", '\n[[operators]]\nname = "x"\n', "", "has no keys"),
        ("unknown setting", None, "sloppy = true\n", "unknown key"),
        ("bad age", None, "", "expected a duration"),
        ("empty images", None, "", "non-empty list"),
        ("a string for a flag", None, 'allow_network_attempts = "false"\n', "true or false"),
    ],
)
def test_bad_policies_are_errors_never_a_pass(
    world: World, case: str, operators: str | None, extra: str, message: str
) -> None:
    threshold = {"threshold 0": 0, "threshold above operators": 4}.get(case, 2)
    path = world.policy(threshold=threshold, extra=extra, operators=operators)
    if case == "bad age":
        path.write_text(path.read_text().replace('max_age = "7d"', 'max_age = "soon"'))
    if case == "empty images":
        path.write_text(path.read_text().replace(f'images = ["sha256:{IMAGE}"]', "images = []"))
    with pytest.raises(PolicyError, match=message):
        load_policy(path)


def test_duplicate_key_ids_and_one_key_under_two_ids_are_errors(world: World) -> None:
    acme = world.keys["acme"][0]
    twice = world.policy(
        operators=f'\n[[operators]]\nname = "a"\nkeys = [{{ file = "{acme}" }}]\n'
        f'\n[[operators]]\nname = "b"\nkeys = [{{ file = "{acme}" }}]\n',
        threshold=1,
    )
    with pytest.raises(
        PolicyError, match=r"operators\[1\].keys\[0\]: .* also listed at operators\[0\]"
    ):
        load_policy(twice)
    key = json.loads(json.dumps(load_signer(str(acme)[:-4]).public_key.to_dict()))
    as_json = world.root / "acme-under-another-id.json"
    as_json.write_text(json.dumps({"keyid": "another-id", **key}))
    renamed = world.policy(
        operators=f'\n[[operators]]\nname = "a"\nkeys = [{{ file = "{acme}" }}]\n'
        f'\n[[operators]]\nname = "b"\nkeys = [{{ file = "{as_json}" }}]\n',
        threshold=1,
    )
    with pytest.raises(
        PolicyError,
        match=r"the same public key is listed twice: at operators\[0\].keys\[0\] and at "
        r"operators\[1\].keys\[0\]",
    ):
        load_policy(renamed)
