"""A signed policy covers everything it trusts, and stops being usable: key files bound by
their material, expiry checked whenever a decision is made, old versions refused (review
gate-1, findings 3 and 9)."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rebuilder.attest.keys import generate_keypair, load_public_key, load_signer
from rebuilder.cli import app
from rebuilder.gate.gate import run_gate
from rebuilder.gate.policy import Operator, Policy, PolicyError, load_policy
from rebuilder.gate.policy_signature import load_signed_policy, sign_policy, signature_path
from rebuilder.node.client import Credentials
from tests.schemas import validate_envelope
from tests.unit.rebuilder.gate.conftest import NOW, World, fresh, gate_args, upper_case_json

EXPIRES = "expires = 2999-01-01T00:00:00Z\n"


@pytest.fixture
def world(tmp_path: Path) -> World:
    made = World(tmp_path)
    for name in ("acme", "globex"):
        made.operator(name)
    return made


@pytest.fixture
def owner(tmp_path: Path) -> Path:
    generate_keypair(tmp_path / "owner")
    return tmp_path / "owner"


def keyed_policy(world: World, extra: str = EXPIRES) -> Path:
    """A policy beside its own keys/ directory, naming its keys by file."""
    directory = world.root / "pol"
    (directory / "keys").mkdir(parents=True, exist_ok=True)
    for name in ("acme", "globex"):
        shutil.copy(world.keys[name][0], directory / "keys" / f"{name}.pub")
    policy = directory / "policy.toml"
    policy.write_text(
        f"[policy]\nthreshold = 2\n{extra}"
        '\n[[operators]]\nname = "acme"\nkeys = [{ file = "keys/acme.pub" }]\n'
        '\n[[operators]]\nname = "globex"\nkeys = [{ file = "keys/globex.pub" }]\n'
    )
    return policy


def test_a_key_file_swapped_after_signing_is_refused(world: World, owner: Path) -> None:
    """t_polkey.py: only the TOML bytes were signed; a key file beside it was read after."""
    policy = keyed_policy(world)
    sign_policy(policy, [load_signer(str(owner))], now=NOW)
    assert validate_envelope(policy.parent / "policy.toml.intoto.json") == (
        "gate-policy-predicate.schema.json"
    )
    owners = [load_public_key(Path(f"{owner}.pub"))]
    assert load_signed_policy(policy, owners, now=NOW).threshold == 2  # control
    mallory = world.root / "mallory"
    generate_keypair(mallory)
    shutil.copy(f"{mallory}.pub", policy.parent / "keys" / "globex.pub")
    with pytest.raises(PolicyError, match=r"operators\[1\].keys\[0\]: .*not the key .*signed"):
        load_signed_policy(policy, owners, now=NOW)


def test_a_key_file_respelled_with_the_same_key_is_still_the_signed_key(
    world: World, owner: Path
) -> None:
    policy = keyed_policy(world)
    sign_policy(policy, [load_signer(str(owner))], now=NOW)
    respelled = policy.parent / "keys" / "globex.pub"
    upper_case_json(world.keys["globex"][0], respelled)  # the same key, as JSON
    loaded = load_signed_policy(policy, [load_public_key(Path(f"{owner}.pub"))], now=NOW)
    assert loaded.threshold == 2


def test_a_policy_expiring_after_it_was_loaded_denies(world: World) -> None:
    """t_expiry.py: a long-running gate (or a library user) loads the policy while it is
    valid and decides after it expired."""
    later = NOW + timedelta(hours=2)
    world.provenance("acme", finished=NOW + timedelta(minutes=50))
    world.provenance("globex", finished=NOW + timedelta(minutes=50))
    policy = load_policy(world.policy(extra="expires = 2026-11-22T13:00:00Z\n"), now=NOW)
    decisions, _ = run_gate(
        [world.artifact], policy, [str(world.store)], credentials=Credentials(), now=later
    )
    (decision,) = decisions
    assert not decision.admitted
    assert decision.reasons == ("the policy expired at 2026-11-22T13:00:00Z",)
    decisions, _ = run_gate(  # control: decided before it expired
        [world.artifact],
        policy,
        [str(world.store)],
        credentials=Credentials(),
        now=NOW + timedelta(minutes=59),
    )
    assert decisions[0].admitted, decisions[0].reasons


def test_a_signed_policy_must_expire(world: World, owner: Path) -> None:
    """An owner's signature on a policy without `expires` could be replayed for ever."""
    policy = keyed_policy(world, extra="")
    with pytest.raises(PolicyError, match=r"policy\.expires: a signed policy must expire"):
        sign_policy(policy, [load_signer(str(owner))], now=NOW)
    assert not signature_path(policy).exists()
    sign_policy(keyed_policy(world), [load_signer(str(owner))], now=NOW)  # control


def test_an_older_signed_policy_put_back_is_refused_below_the_minimum_version(
    world: World, owner: Path
) -> None:
    """t_expiry.py: v1 (threshold 1) and its signatures, put back after v2 replaced it."""
    signer = load_signer(str(owner))
    v1 = keyed_policy(world, extra=f"version = 1\n{EXPIRES}")
    v1.write_text(v1.read_text().replace("threshold = 2", "threshold = 1"))
    sign_policy(v1, [signer], now=NOW)
    saved = (v1.read_bytes(), signature_path(v1).read_bytes())
    keyed_policy(world, extra=f"version = 2\n{EXPIRES}")
    sign_policy(v1, [signer], now=NOW)
    v1.write_bytes(saved[0])
    signature_path(v1).write_bytes(saved[1])
    owners = [load_public_key(Path(f"{owner}.pub"))]
    assert load_signed_policy(v1, owners, now=NOW).threshold == 1  # the replay, unbounded
    with pytest.raises(PolicyError, match="version 1 is older than the minimum 2"):
        load_signed_policy(v1, owners, now=NOW, min_version=2)
    fresh(world)
    keys = ["--policy-key", f"{owner}.pub"]
    done = CliRunner().invoke(app, gate_args(world, v1, *keys, "--policy-min-version", "2"))
    assert done.exit_code == 2 and "older than the minimum" in done.stderr
    done = CliRunner().invoke(app, gate_args(world, v1, *keys, "--policy-min-version", "1"))
    assert done.exit_code == 0, done.output  # control


def test_the_library_keeps_an_expiry_in_utc_and_refuses_one_past_the_calendar(
    world: World,
) -> None:
    acme = load_public_key(world.keys["acme"][0])
    operators = (Operator(name="acme", keys=(acme,)),)
    zone = timezone(timedelta(hours=2))
    kept = Policy(
        path=Path("p"), threshold=1, operators=operators, expires=datetime(2999, 1, 1, tzinfo=zone)
    )
    assert kept.expires == datetime(2998, 12, 31, 22, 0, tzinfo=UTC)  # control, in UTC
    beyond = datetime(9999, 12, 31, 23, 59, tzinfo=timezone(-timedelta(minutes=1439)))
    with pytest.raises(PolicyError, match="not a time between 1970 and 9000"):
        Policy(path=Path("p"), threshold=1, operators=operators, expires=beyond)
