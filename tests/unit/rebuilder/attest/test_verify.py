"""Attestations: statements, DSSE signing and verification, and every tampering caught."""

from __future__ import annotations

import base64
import json
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from securesystemslib.signer import CryptoSigner, Key

from rebuilder.attest.envelope import EnvelopeError, sign_payload, write_envelope
from rebuilder.attest.keys import (
    KeyProblem,
    generate_keypair,
    load_public_key,
    load_signer,
)
from rebuilder.attest.statement import make_statement, parse_statement
from rebuilder.attest.verify import verify_attestation
from rebuilder.formats.fields import StatementError, Subject
from sandbox.uris import SLSA_PROVENANCE
from tests.unit.rebuilder.conftest import PREDICATE

DIGEST = "a" * 64


def payload() -> bytes:
    return make_statement([Subject("hello", DIGEST)], SLSA_PROVENANCE, PREDICATE)


def raw_payload(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


def statement_document() -> dict[str, Any]:
    return dict(json.loads(payload()))


@pytest.fixture
def signer() -> CryptoSigner:
    return CryptoSigner.generate_ed25519()


def write(tmp_path: Path, envelope: dict[str, Any], name: str = "a.intoto.json") -> Path:
    path = tmp_path / name
    write_envelope(path, envelope)
    return path


def reasons(path: Path, keys: Sequence[Key], **options: Any) -> tuple[str, ...]:
    return verify_attestation(path, keys, **options).reasons


def test_a_signed_statement_verifies(tmp_path: Path, signer: CryptoSigner) -> None:
    path = write(tmp_path, sign_payload(payload(), [signer]))
    outcome = verify_attestation(path, [signer.public_key])
    assert outcome.ok and outcome.signed_by == (signer.public_key.keyid,)
    assert outcome.statement is not None
    assert outcome.statement.subjects == (Subject("hello", DIGEST),)


def test_a_changed_subject_digest_is_caught(tmp_path: Path, signer: CryptoSigner) -> None:
    envelope = sign_payload(payload(), [signer])
    document = statement_document()
    document["subject"][0]["digest"]["sha256"] = "b" * 64
    envelope["payload"] = base64.b64encode(raw_payload(document)).decode()
    assert (
        "0 of the 1 given key(s) signed it validly"
        in reasons(write(tmp_path, envelope), [signer.public_key])[0]
    )


def test_a_changed_predicate_byte_is_caught(tmp_path: Path, signer: CryptoSigner) -> None:
    envelope = sign_payload(payload(), [signer])
    stored = base64.b64decode(envelope["payload"])
    changed = stored.replace(b'"x":1', b'"x":2')
    assert changed != stored
    envelope["payload"] = base64.b64encode(changed).decode()
    assert reasons(write(tmp_path, envelope), [signer.public_key])


def test_a_removed_signature_is_caught(tmp_path: Path, signer: CryptoSigner) -> None:
    envelope = sign_payload(payload(), [signer])
    envelope["signatures"] = []
    (reason,) = reasons(write(tmp_path, envelope), [signer.public_key])
    assert "0 of the 1 given key(s)" in reason and "0 signature(s)" in reason


def test_a_wrong_key_is_caught(tmp_path: Path, signer: CryptoSigner) -> None:
    other = CryptoSigner.generate_ed25519()
    path = write(tmp_path, sign_payload(payload(), [signer]))
    assert reasons(path, [other.public_key])
    # the right signature under a key id that claims to be the other key: still refused
    envelope = sign_payload(payload(), [signer])
    envelope["signatures"][0]["keyid"] = other.public_key.keyid
    assert reasons(write(tmp_path, envelope, "b.json"), [other.public_key])


def test_an_unknown_payload_type_is_caught(tmp_path: Path, signer: CryptoSigner) -> None:
    from securesystemslib.dsse import Envelope

    envelope = Envelope(payload(), "application/json", {})
    envelope.sign(signer)  # validly signed, but not an in-toto payload
    (reason,) = reasons(write(tmp_path, envelope.to_dict()), [signer.public_key])
    assert "payloadType is 'application/json'" in reason


@pytest.mark.parametrize("kind", [None, "https://in-toto.io/Statement/v0.1", "x"])
def test_a_missing_or_unknown_statement_type_is_caught(
    tmp_path: Path, signer: CryptoSigner, kind: str | None
) -> None:
    document = statement_document()
    if kind is None:
        del document["_type"]
    else:
        document["_type"] = kind
    path = write(tmp_path, sign_payload(raw_payload(document), [signer]))
    (reason,) = reasons(path, [signer.public_key])
    assert "not an in-toto Statement v1" in reason


def test_the_same_key_twice_counts_once_towards_a_threshold(
    tmp_path: Path, signer: CryptoSigner
) -> None:
    other = CryptoSigner.generate_ed25519()
    envelope = sign_payload(payload(), [signer])
    envelope["signatures"].append(dict(envelope["signatures"][0]))  # duplicated
    path = write(tmp_path, envelope)
    keys = [signer.public_key, other.public_key]
    (reason,) = reasons(path, keys, threshold=2)
    assert "1 of the 2 given key(s) signed it validly; 2 needed" in reason
    assert not reasons(path, keys, threshold=1)
    # the same key given twice is one key, too
    assert verify_attestation(path, [signer.public_key, signer.public_key]).threshold == 1


def test_two_signers_meet_a_threshold_of_two(tmp_path: Path, signer: CryptoSigner) -> None:
    other = CryptoSigner.generate_ed25519()
    path = write(tmp_path, sign_payload(payload(), [signer, other]))
    assert verify_attestation(path, [signer.public_key, other.public_key]).ok


def test_a_signature_without_key_id_is_tried_against_every_key(
    tmp_path: Path, signer: CryptoSigner
) -> None:
    envelope = sign_payload(payload(), [signer])
    envelope["signatures"][0]["keyid"] = ""  # as cosign writes them
    assert verify_attestation(write(tmp_path, envelope), [signer.public_key]).ok


@pytest.mark.parametrize(
    "content",
    [b"", b'{"payload": "e30=", "payloadT', b"not json", b"[]", b'{"payload": "e30="}'],
    ids=["empty", "truncated", "text", "array", "fields-missing"],
)
def test_a_file_that_is_no_envelope_is_an_error(
    tmp_path: Path, signer: CryptoSigner, content: bytes
) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(EnvelopeError, match=str(path)):
        verify_attestation(path, [signer.public_key])


def test_artifacts_must_match_a_subject(tmp_path: Path, signer: CryptoSigner) -> None:
    content = b"hello\n"
    import hashlib

    digest = hashlib.sha256(content).hexdigest()
    statement = make_statement([Subject("bin/hello", digest)], SLSA_PROVENANCE, PREDICATE)
    path = write(tmp_path, sign_payload(statement, [signer]))
    good, bad = tmp_path / "hello", tmp_path / "modified"
    good.write_bytes(content)
    bad.write_bytes(content + b"!")
    outcome = verify_attestation(path, [signer.public_key], artifacts=[good])
    assert outcome.ok and outcome.matched == ((str(good), "bin/hello"),)
    (reason,) = reasons(path, [signer.public_key], artifacts=[good, bad])
    assert reason.startswith(f"{bad}: sha256:") and "matches no subject" in reason


def test_an_artifact_matches_a_subject_by_its_sha256_only(
    tmp_path: Path, signer: CryptoSigner
) -> None:
    """t_cosign.py: a subject naming the artifact by sha512 alone is one no node built
    (nodes and the gate read sha256); verify must not match it either."""
    import hashlib

    content = b"never built by any node\n"
    artifact = tmp_path / "evil.bin"
    artifact.write_bytes(content)
    document = statement_document()
    document["subject"].append(
        {"name": "evil.bin", "digest": {"sha512": hashlib.sha512(content).hexdigest()}}
    )
    path = write(tmp_path, sign_payload(raw_payload(document), [signer]))
    outcome = verify_attestation(path, [signer.public_key], artifacts=[artifact])
    assert not outcome.ok and outcome.matched == ()
    assert "matches no subject" in outcome.reasons[0]
    document["subject"][-1]["digest"]["sha256"] = hashlib.sha256(content).hexdigest()
    path = write(tmp_path, sign_payload(raw_payload(document), [signer]))
    assert verify_attestation(path, [signer.public_key], artifacts=[artifact]).ok  # control


@pytest.mark.parametrize(
    ("where", "alias", "value"),
    [
        ((), "predicate_type", SLSA_PROVENANCE),  # beside predicateType: two readings
        (("predicate",), "build_definition", {"buildType": "https://evil"}),
        (("predicate",), "run_details", {"builder": {"id": "https://evil"}}),
        (("predicate", "buildDefinition"), "build_type", "https://evil"),
        (("predicate", "buildDefinition"), "resolved_dependencies", [{"name": "x"}]),
        (("predicate", "runDetails", "builder"), "builder_dependencies", []),
        (("subject", 0), "media_type", "text/plain"),
    ],
)
def test_protobuf_snake_case_aliases_are_refused(
    where: tuple[str | int, ...], alias: str, value: Any
) -> None:
    """review gate-1, finding 8: protobuf's JSON reader accepts a field's proto name as
    well as its JSON name, so one payload could be read two ways."""
    document: Any = statement_document()
    parse_statement(raw_payload(document))  # control: the honest statement is valid
    here = document
    for step in where:
        here = here[step]
    here[alias] = value
    with pytest.raises(StatementError, match=alias):
        parse_statement(raw_payload(document))


def test_a_snake_case_alias_instead_of_the_json_name_is_refused() -> None:
    document = statement_document()
    document["predicate_type"] = document.pop("predicateType")
    with pytest.raises(StatementError, match="predicate_type"):
        parse_statement(raw_payload(document))


def test_the_verifier_checks_the_stored_bytes(tmp_path: Path, signer: CryptoSigner) -> None:
    # A payload that is not canonical JSON still verifies: nothing is re-serialized.
    spaced = json.dumps(statement_document(), indent=3).encode()
    path = write(tmp_path, sign_payload(spaced, [signer]))
    assert verify_attestation(path, [signer.public_key]).ok


def test_statements_are_validated_by_the_in_toto_models() -> None:
    with pytest.raises(StatementError, match="At least one subject"):
        make_statement([], SLSA_PROVENANCE, PREDICATE)
    with pytest.raises(StatementError, match="no field named"):
        make_statement([Subject("a", DIGEST)], SLSA_PROVENANCE, {"buildDefinitionX": {}})
    with pytest.raises(StatementError, match="not JSON"):
        parse_statement(b"\xff")


def test_envelopes_are_written_atomically(tmp_path: Path, signer: CryptoSigner) -> None:
    path = write(tmp_path, sign_payload(payload(), [signer]))
    write(tmp_path, sign_payload(payload(), [signer]))  # replaced whole
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_keygen_writes_a_private_key_only_its_owner_reads(tmp_path: Path) -> None:
    key = tmp_path / "keys" / "release"
    keyid = generate_keypair(key)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert load_public_key(Path(f"{key}.pub")).keyid == keyid
    signer = load_signer(str(key))
    assert signer.public_key.keyid == keyid
    with pytest.raises(KeyProblem, match="never overwritten"):
        generate_keypair(key)


def test_an_encrypted_key_needs_its_passphrase(tmp_path: Path) -> None:
    key = tmp_path / "secret"
    generate_keypair(key, b"correct horse")
    assert b"ENCRYPTED" in key.read_bytes()
    assert load_signer(str(key), lambda: b"correct horse").public_key.keyid
    with pytest.raises(KeyProblem, match="wrong passphrase"):
        load_signer(str(key), lambda: b"wrong")
    with pytest.raises(KeyProblem, match="no passphrase can be asked"):
        load_signer(str(key), None)


def test_a_signer_file_passes_a_securesystemslib_uri_through(tmp_path: Path) -> None:
    key = tmp_path / "k"
    keyid = generate_keypair(key)
    public = load_public_key(Path(f"{key}.pub"))
    signer_file = tmp_path / "signer.json"
    signer_file.write_text(
        json.dumps({"uri": f"file2:{key}", "public_key": {"keyid": keyid, **public.to_dict()}})
    )
    signer = load_signer(str(signer_file))
    path = write(tmp_path, sign_payload(payload(), [signer]))
    assert verify_attestation(path, [load_public_key(signer_file)]).ok
    # a KMS scheme goes to securesystemslib unchanged; its error is shown with the file
    signer_file.write_text(
        json.dumps({"uri": "awskms:alias/release", "public_key": public.to_dict()})
    )
    with pytest.raises(KeyProblem, match=r"signer 'awskms:alias/release' cannot be used"):
        load_signer(str(signer_file))
