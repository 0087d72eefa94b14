"""Sigstore: real published bundles verified offline, and keyless signing wired up to the
network boundary (Fulcio cannot be reached here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from securesystemslib.signer import Key

from rebuilder.attest.keys import KeyProblem, load_public_key, load_signer
from rebuilder.attest.sigstore_bundle import BundleError, SigstoreTrust
from rebuilder.attest.verify import verify_attestation
from tests.unit.conftest import Hermetic
from tests.unit.rebuilder.conftest import BEACON, DSSE_BUNDLE, FIXTURES, GITHUB

WHEEL = FIXTURES / "bundle_v3_github.whl"
WHEEL_BUNDLE = FIXTURES / "bundle_v3_github.whl.sigstore"
WHEEL_SIGNER = (
    "https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2"
)


def identity(tmp_path: Path, name: str, issuer: str = GITHUB) -> Key:
    path = tmp_path / "identity.json"
    path.write_text(
        json.dumps(
            {
                "keytype": "sigstore-oidc",
                "scheme": "Fulcio",
                "keyval": {"identity": name, "issuer": issuer},
            }
        )
    )
    return load_public_key(path)


# sigstore-python's shipped trust roots: no TUF refresh (the tests run without network)
OFFLINE = SigstoreTrust(offline=True)
OFFLINE_STAGING = SigstoreTrust(offline=True, staging=True)


def test_a_published_release_bundle_verifies_offline(tmp_path: Path) -> None:
    key = identity(tmp_path, WHEEL_SIGNER)
    outcome = verify_attestation(WHEEL_BUNDLE, [key], artifacts=[WHEEL], trust=OFFLINE)
    assert outcome.ok, outcome.reasons
    assert outcome.signed_by == (key.keyid,)


def test_a_modified_release_file_fails(tmp_path: Path) -> None:
    changed = tmp_path / "changed.whl"
    changed.write_bytes(WHEEL.read_bytes() + b"\0")
    outcome = verify_attestation(
        WHEEL_BUNDLE, [identity(tmp_path, WHEEL_SIGNER)], artifacts=[changed], trust=OFFLINE
    )
    assert not outcome.ok


def test_another_identity_fails(tmp_path: Path) -> None:
    impostor = WHEEL_SIGNER.replace("trailofbits", "someone-else")
    outcome = verify_attestation(
        WHEEL_BUNDLE, [identity(tmp_path, impostor)], artifacts=[WHEEL], trust=OFFLINE
    )
    assert not outcome.ok
    assert any(impostor in reason for reason in outcome.reasons)


def test_a_message_bundle_needs_its_file(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="exactly one --artifact"):
        verify_attestation(WHEEL_BUNDLE, [identity(tmp_path, WHEEL_SIGNER)], trust=OFFLINE)


def test_a_dsse_bundle_yields_a_checked_in_toto_statement(tmp_path: Path) -> None:
    key = identity(tmp_path, BEACON)
    outcome = verify_attestation(DSSE_BUNDLE, [key], trust=OFFLINE_STAGING)
    assert outcome.ok, outcome.reasons
    assert outcome.statement is not None
    assert outcome.statement.predicate_type == "https://slsa.dev/provenance/v1"
    # its subject is another a.txt: a file that is not it is refused
    refused = verify_attestation(
        DSSE_BUNDLE,
        [key],
        artifacts=[FIXTURES / "a.dsse.staging-rekor-v2.txt"],
        trust=OFFLINE_STAGING,
    )
    assert "matches no subject" in refused.reasons[0]


def test_a_production_verifier_refuses_a_staging_bundle(tmp_path: Path) -> None:
    outcome = verify_attestation(DSSE_BUNDLE, [identity(tmp_path, BEACON)], trust=OFFLINE)
    assert not outcome.ok


def test_keyless_signing_reaches_fulcio_with_the_ambient_identity(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An ambient CI token becomes the signer's identity, named as Fulcio will certify it
    (the workflow URI); signing then needs Sigstore's services, unreachable here."""
    import base64

    def segment(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    claims = {
        "iss": GITHUB,
        "aud": "sigstore",
        "sub": "repo:example/app:ref:refs/heads/main",
        "job_workflow_ref": "example/app/.github/workflows/release.yml@refs/heads/main",
        "iat": 1700000000,
        "nbf": 1700000000,
        "exp": 4102444800,
    }
    token = f"{segment({'alg': 'RS256'})}.{segment(claims)}.c2ln"
    monkeypatch.setattr("sigstore.oidc.detect_credential", lambda: token)
    signer = load_signer("sigstore:")
    assert signer.public_key.keyval == {
        "identity": "https://github.com/example/app/.github/workflows/release.yml@refs/heads/main",
        "issuer": GITHUB,
    }
    # Signing first refreshes Sigstore's trust root (TUF), then asks Fulcio: here
    # neither is reachable, and the forged token would be refused anyway.
    with pytest.raises(Exception, match=r"TUF|Fulcio|token|connect"):
        signer.sign(b"DSSEv1 ...")


def test_keyless_without_ambient_credentials_says_where_they_come_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sigstore.oidc.detect_credential", lambda: None)
    with pytest.raises(KeyProblem, match="no ambient OIDC credential"):
        load_signer("sigstore:")


def test_the_gate_counts_a_bundle_for_the_operator_of_its_identity(tmp_path: Path) -> None:
    from rebuilder.gate.decide import evidence
    from rebuilder.gate.policy import load_policy

    policy = tmp_path / "policy.toml"
    policy.write_text(
        '[policy]\nthreshold = 1\n\n[[operators]]\nname = "conformance"\n'
        f'sigstore = [{{ issuer = "{GITHUB}", subject = "{BEACON}" }}]\n'
    )
    found, why = evidence(
        "bundle", DSSE_BUNDLE.read_bytes(), load_policy(policy), trust=OFFLINE_STAGING
    )
    assert found is not None, why
    assert found.operators == {"conformance"}
    assert found.predicate_type == "https://slsa.dev/provenance/v1"
    policy.write_text(policy.read_text().replace("extremely-dangerous", "someone-else"))
    found, why = evidence(
        "bundle", DSSE_BUNDLE.read_bytes(), load_policy(policy), trust=OFFLINE_STAGING
    )
    assert found is None and "no trusted Sigstore identity" in why


def test_the_cli_verifies_with_the_instance_its_settings_name(
    tmp_path: Path, hermetic: Hermetic
) -> None:
    """HERMETIC_SIGSTORE_INSTANCE and _OFFLINE reach the verifier through the settings."""
    identity(tmp_path, BEACON)  # writes the identity file, as users give it to --key
    argv = ["verify", str(DSSE_BUNDLE), "--key", str(tmp_path / "identity.json")]
    hermetic.env["HERMETIC_SIGSTORE_OFFLINE"] = "1"
    hermetic.env["HERMETIC_SIGSTORE_INSTANCE"] = "production"
    assert hermetic(*argv).exit_code == 1  # control: production's roots refuse it
    hermetic.env["HERMETIC_SIGSTORE_INSTANCE"] = "staging"
    done = hermetic(*argv)
    assert done.exit_code == 0, done.output
