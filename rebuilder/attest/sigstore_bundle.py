"""Sigstore bundles (what cosign, GitHub, npm and PyPI publish), verified with
sigstore-python against an identity: a DSSE bundle yields its in-toto payload, a
message-signature bundle vouches for one artifact."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from securesystemslib.signer import Key
from sigstore.errors import Error as SigstoreError
from sigstore.models import Bundle
from sigstore.verify import Verifier
from sigstore.verify.policy import Identity

from rebuilder.attest.untrusted_json import UntrustedJsonError, parse_json, shown
from rebuilder.errors import UserError
from sandbox.uris import BUNDLE_MEDIA_TYPE


class BundleError(UserError):
    """A Sigstore bundle cannot be parsed."""


def is_bundle(document: Any) -> bool:
    return isinstance(document, dict) and str(document.get("mediaType", "")).startswith(
        BUNDLE_MEDIA_TYPE
    )


@dataclass(frozen=True, kw_only=True)
class BundleCheck:
    """Which identity verified the bundle, and what it signed."""

    signed_by: str | None  # the identity (key id) that verified; None: none did
    payload_type: str | None = None  # DSSE bundles
    payload: bytes | None = None
    failures: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class SigstoreTrust:
    """Which Sigstore instance verifies bundles (public-good, or its staging instance), and
    whether its trust root is refreshed through TUF (``offline``: the one shipped with
    sigstore-python is used as is)."""

    staging: bool = False
    offline: bool = False

    def verifier(self) -> Verifier:
        if self.staging:
            return Verifier.staging(offline=self.offline)
        return Verifier.production(offline=self.offline)


def _identities(keys: Sequence[Key]) -> list[tuple[str, str, Identity]]:
    """(key id, identity, policy) of each Sigstore key."""
    return [
        (
            key.keyid,
            key.keyval["identity"],
            Identity(identity=key.keyval["identity"], issuer=key.keyval["issuer"]),
        )
        for key in keys
        if key.keytype == "sigstore-oidc"
    ]


def check_bundle(
    data: bytes,
    keys: Sequence[Key],
    artifact: bytes | None = None,
    *,
    trust: SigstoreTrust = SigstoreTrust(),
) -> BundleCheck:
    """Verify a bundle against each Sigstore identity among keys (the first that holds).

    Args:
        data: the bundle as stored.
        keys: verification keys; only ``sigstore-oidc`` ones can verify a bundle.
        artifact: for a message-signature bundle, the signed file's bytes.
        trust: the Sigstore instance and how its trust root is had.

    Raises:
        BundleError: not a parsable bundle, or a message-signature bundle without artifact.
    """
    try:
        document = parse_json(data, "the bundle")
        bundle = Bundle.from_json(data)
    except (UntrustedJsonError, SigstoreError, ValueError) as e:
        raise BundleError(f"not a usable Sigstore bundle: {shown(str(e), 300)}") from None
    is_dsse = isinstance(document, dict) and "dsseEnvelope" in document
    if not is_dsse and artifact is None:
        raise BundleError("a message-signature bundle vouches for one file: give it as --artifact")
    if not _identities(keys):
        return BundleCheck(
            signed_by=None,
            failures=("a Sigstore bundle needs a sigstore-oidc key (identity and issuer)",),
        )
    try:
        verifier = trust.verifier()  # refreshes Sigstore's trust root (TUF) unless offline
    except SigstoreError as e:
        raise BundleError(
            f"cannot load Sigstore's trust root: {e}; set HERMETIC_SIGSTORE_OFFLINE=1 to use "
            "the one shipped with sigstore-python"
        ) from None
    failures = []
    for keyid, name, identity in _identities(keys):
        try:
            if is_dsse:
                payload_type, payload = verifier.verify_dsse(bundle, identity)
                return BundleCheck(signed_by=keyid, payload_type=payload_type, payload=payload)
            assert artifact is not None
            verifier.verify_artifact(artifact, bundle, identity)
            return BundleCheck(signed_by=keyid)
        except SigstoreError as e:
            failures.append(f"{name}: {e}")
    return BundleCheck(signed_by=None, failures=tuple(failures))
