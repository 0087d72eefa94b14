"""DSSE envelopes: an unsigned one is written without the signing stack, in the shape
securesystemslib writes, and reads back like any other."""

from __future__ import annotations

import json
import subprocess
import sys

from securesystemslib.dsse import Envelope
from securesystemslib.signer import CryptoSigner

from rebuilder.attest.envelope import parse_envelope, sign_payload
from sandbox.uris import PAYLOAD_TYPE

PAYLOAD = b'{"_type":"https://in-toto.io/Statement/v1","subject":[]}'


def test_an_unsigned_envelope_is_what_securesystemslib_writes() -> None:
    ours = sign_payload(PAYLOAD, ())
    theirs = Envelope(payload=PAYLOAD, payload_type=PAYLOAD_TYPE, signatures={}).to_dict()
    assert ours == theirs
    stored = parse_envelope(json.dumps(ours).encode(), "test")
    assert stored.payload == PAYLOAD
    assert stored.signatures == ()


def test_a_signed_envelope_still_carries_each_signature() -> None:
    signer = CryptoSigner.generate_ed25519()
    envelope = sign_payload(PAYLOAD, [signer])
    assert [entry["keyid"] for entry in envelope["signatures"]] == [signer.public_key.keyid]


def test_an_unsigned_build_loads_no_signing_code() -> None:
    # The attestation path of an unsigned build, in a fresh interpreter: securesystemslib
    # (its signers, DSSE, cryptography) stays unloaded. Negative control: signing loads it.
    probe = """
import sys
import rebuilder.attest.attestor, rebuilder.sbom
from rebuilder.attest.envelope import sign_payload
sign_payload(b"{}", ())
print(*(name in sys.modules for name in ("securesystemslib", "cryptography")))
from securesystemslib.signer import CryptoSigner
signer = CryptoSigner.generate_ed25519()
print("securesystemslib.dsse" in sys.modules)
sign_payload(b"{}", [signer])
print("securesystemslib.dsse" in sys.modules)
"""
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.split() == ["False", "False", "False", "True"]
