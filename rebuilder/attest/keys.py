"""Keys and signers: ed25519 pairs from ``hermetic keygen``, and every securesystemslib
signer URI (KMS, Vault, HSM, Sigstore) through a signer file, passed through unchanged."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)
from securesystemslib.signer import (
    KEY_FOR_TYPE_AND_SCHEME,
    SIGNER_FOR_URI_SCHEME,
    CryptoSigner,
    Key,
    Signer,
    SigstoreKey,
    SigstoreSigner,
    SSlibKey,
)
from securesystemslib.signer._utils import compute_default_keyid  # the library's own rule

from rebuilder.errors import UserError

# Sigstore is opt-in in securesystemslib (its formats are not yet stable there).
SIGNER_FOR_URI_SCHEME.setdefault(SigstoreSigner.SCHEME, SigstoreSigner)
KEY_FOR_TYPE_AND_SCHEME.setdefault(("sigstore-oidc", "Fulcio"), SigstoreKey)

MAX_KEY_BYTES = 1024**2
Passphrase = Callable[[], bytes]  # asks for a key's passphrase (the CLI prompts)


class KeyProblem(UserError):
    """A key or signer cannot be used; says which file and what to do."""


def generate_keypair(path: Path, passphrase: bytes | None = None) -> str:
    """Write an ed25519 private key (PKCS8 PEM, 0600) to path and its public key to path.pub.

    Returns:
        The key id (as securesystemslib computes it).

    Raises:
        KeyProblem: either file exists (keys are never overwritten).
    """
    public_path = path.with_name(path.name + ".pub")
    for existing in (path, public_path):
        if existing.exists():
            raise KeyProblem(f"{existing} exists; keys are never overwritten: choose another --out")
    private_key = Ed25519PrivateKey.generate()
    encryption = BestAvailableEncryption(passphrase) if passphrase else NoEncryption()
    private_pem = private_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, encryption)
    public_pem = private_key.public_key().public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(private_pem)
    public_path.write_bytes(public_pem)
    return public_key_from_pem(public_pem, str(public_path)).keyid


# The encodings of the eight small-order ed25519 points (the top bit, x's sign, aside):
# such a "key" verifies one forged signature for many messages, and for other such keys.
_SMALL_ORDER = frozenset(
    bytes.fromhex(h)
    for h in (
        "00" * 32,
        "01" + "00" * 31,
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "ec" + "ff" * 30 + "7f",
        "ed" + "ff" * 30 + "7f",
        "ee" + "ff" * 30 + "7f",
    )
)


def _usable(crypto: PublicKeyTypes, where: str) -> PublicKeyTypes:
    if isinstance(crypto, Ed25519PublicKey):
        raw = crypto.public_bytes(Encoding.Raw, PublicFormat.Raw)
        if raw[:31] + bytes([raw[31] & 0x7F]) in _SMALL_ORDER:
            raise KeyProblem(
                f"{where}: a small-order ed25519 key, which verifies forged signatures; "
                "not a usable key"
            )
    return crypto


def public_key_from_pem(data: bytes, where: str) -> SSlibKey:
    try:
        crypto = load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise KeyProblem(f"{where}: not a usable PEM public key ({e})") from None
    try:
        return SSlibKey.from_crypto(_usable(crypto, where))
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise KeyProblem(f"{where}: not a usable PEM public key ({e})") from None


def load_public_key(path: Path) -> Key:
    """A verification key: a PEM public key, or a securesystemslib key in JSON.

    Raises:
        KeyProblem: unreadable, or neither format.
    """
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_KEY_BYTES + 1)
    except OSError as e:
        raise KeyProblem(f"{path}: cannot read the key: {e.strerror}") from None
    if len(data) > MAX_KEY_BYTES:
        raise KeyProblem(f"{path}: larger than {MAX_KEY_BYTES} bytes: not a public key")
    return public_key_from_bytes(data, str(path))


def public_key_from_bytes(data: bytes, where: str) -> Key:
    """A PEM public key, or a securesystemslib key (or signer file) in JSON.

    Raises:
        KeyProblem: neither format, or key material that does not parse.
    """
    if data.lstrip().startswith(b"-----BEGIN"):
        return public_key_from_pem(data, where)
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise KeyProblem(
            f"{where}: not a PEM public key nor a securesystemslib key in JSON ({e})"
        ) from None
    if isinstance(document, dict) and "public_key" in document:
        document = document["public_key"]  # a signer file: its public half verifies
    return public_key_from_dict(document, where)


def public_key_from_dict(document: Any, where: str) -> Key:
    """A securesystemslib key (``keytype``, ``scheme``, ``keyval``, optional ``keyid``),
    spelled in any case, checked by parsing its key material.

    Raises:
        KeyProblem: not such a key, or its material does not parse.
    """
    if not isinstance(document, dict):
        raise KeyProblem(f"{where}: a securesystemslib key is a JSON object")
    document = dict(document)
    keyid = document.pop("keyid", None)
    keytype, scheme, keyval = (document.get(k) for k in ("keytype", "scheme", "keyval"))
    if not (isinstance(keytype, str) and isinstance(scheme, str) and isinstance(keyval, dict)):
        raise KeyProblem(f"{where}: a securesystemslib key needs keytype, scheme and keyval")
    if keyid is not None and (not isinstance(keyid, str) or not keyid):
        raise KeyProblem(f"{where}: keyid must be a non-empty string")
    written = (keytype, scheme, keyval)
    keytype = keytype.lower()
    if keytype == SIGSTORE_KEYTYPE:
        identity, issuer = keyval.get("identity"), keyval.get("issuer")
        if not (isinstance(identity, str) and identity and isinstance(issuer, str) and issuer):
            raise KeyProblem(f"{where}: a Sigstore identity needs keyval.identity and .issuer")
        return sigstore_identity(issuer=issuer, identity=identity, keyid=keyid)
    public = keyval.get("public")
    if not isinstance(public, str):
        raise KeyProblem(f"{where}: keyval.public must be a string")
    try:
        if keytype == "ed25519":
            crypto: PublicKeyTypes = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public))
        else:
            crypto = load_pem_public_key(public.encode())
        key = SSlibKey.from_crypto(_usable(crypto, where), scheme=scheme.lower())
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise KeyProblem(f"{where}: the {keytype} key material does not parse ({e})") from None
    # the type written must be the type of the material (an "rsa" EC key verifies nothing)
    if keytype not in (key.keytype, key.scheme):
        raise KeyProblem(
            f"{where}: keytype {keytype!r} does not match the key material ({key.keytype})"
        )
    if keyid is None:  # the id securesystemslib gives the key as written
        keyid = compute_default_keyid(*written)
    return SSlibKey(keyid, key.keytype, key.scheme, key.keyval)


SIGSTORE_KEYTYPE = "sigstore-oidc"


def sigstore_identity(*, issuer: str, identity: str, keyid: str | None = None) -> SigstoreKey:
    """A keyless Sigstore identity as a key (what a bundle's certificate must name)."""
    return SigstoreKey(
        keyid=keyid or f"sigstore:{issuer}:{identity}",
        keytype=SIGSTORE_KEYTYPE,
        scheme="Fulcio",
        keyval={"identity": identity, "issuer": issuer},
    )


def key_fingerprint(key: Key) -> str:
    """What identifies a key, whatever its spelling or id: ``sha256:`` of its DER
    SubjectPublicKeyInfo; for a Sigstore identity, ``sigstore:`` of its issuer and subject.

    Raises:
        KeyProblem: the key material does not parse.
    """
    if key.keytype == SIGSTORE_KEYTYPE:
        named = json.dumps([key.keyval.get("issuer"), key.keyval.get("identity")]).encode()
        return f"sigstore:{hashlib.sha256(named).hexdigest()}"
    public = key.keyval.get("public")
    try:
        if key.keytype == "ed25519" and isinstance(public, str):
            crypto: PublicKeyTypes = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public))
        else:
            crypto = load_pem_public_key(str(public).encode())
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise KeyProblem(f"key {key.keyid[:16]}…: the key material does not parse ({e})") from None
    der = crypto.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return f"sha256:{hashlib.sha256(der).hexdigest()}"


@dataclass(frozen=True)
class KeyRing:
    """Verification keys, each once: two spellings or ids of one key are one entry.

    Build it with :meth:`of`; the library refuses to verify against nothing.
    """

    keys: tuple[Key, ...]
    fingerprints: tuple[str, ...]  # parallel to keys
    _by_object: dict[int, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.keys:
            raise KeyProblem("no verification keys: nothing could ever verify")
        if len(self.keys) != len(self.fingerprints) or len(set(self.fingerprints)) != len(
            self.fingerprints
        ):
            raise KeyProblem("a key ring holds each key once, with its fingerprint")
        by_object = {id(k): fp for k, fp in zip(self.keys, self.fingerprints, strict=True)}
        object.__setattr__(self, "_by_object", by_object)

    def fingerprint(self, key: Key) -> str:
        """The fingerprint of one of this ring's own key objects."""
        return self._by_object[id(key)]

    @classmethod
    def of(cls, keys: Iterable[Key]) -> KeyRing:
        """The distinct keys among ``keys`` (the first spelling of each is kept).

        Raises:
            KeyProblem: no keys, or key material that does not parse.
        """
        kept: dict[str, Key] = {}
        for key in keys:
            kept.setdefault(key_fingerprint(key), key)
        return cls(tuple(kept.values()), tuple(kept))

    def __len__(self) -> int:
        return len(self.keys)

    def fingerprint_of(self, keyid: str) -> str | None:
        """The fingerprint of the first key listed under this id."""
        for key, fingerprint in zip(self.keys, self.fingerprints, strict=True):
            if key.keyid == keyid:
                return fingerprint
        return None


def load_signer(reference: str, passphrase: Passphrase | None = None) -> Signer:
    """The signer ``--sign`` names.

    ``reference`` is a PEM private key file (from ``hermetic keygen``), a signer file
    (JSON: ``uri``, a securesystemslib signer URI, and ``public_key``), or a Sigstore
    URI (``sigstore:`` keyless, with ambient OIDC credentials).

    Raises:
        KeyProblem: the file or URI cannot give a signer; says why.
    """
    if reference.startswith(f"{SigstoreSigner.SCHEME}:") and not Path(reference).exists():
        return _sigstore_signer(reference)
    path = Path(reference)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise KeyProblem(f"{path}: cannot read the signing key: {e.strerror}") from None
    if data.lstrip().startswith(b"-----BEGIN"):
        return _file_signer(path, data, passphrase)
    try:
        document = json.loads(data)
        uri = document["uri"]
        key = public_key_from_dict(document["public_key"], str(path))
    except (ValueError, KeyError, TypeError, RecursionError) as e:
        raise KeyProblem(
            f"{path}: not a PEM private key nor a signer file "
            f'{{"uri": "<securesystemslib signer URI>", "public_key": {{…}}}} ({e})'
        ) from None
    try:
        return Signer.from_priv_key_uri(uri, key)
    except Exception as e:  # noqa: BLE001 - every signer backend raises its own kinds
        raise KeyProblem(f"{path}: signer {uri!r} cannot be used: {e}") from None


def _file_signer(path: Path, data: bytes, passphrase: Passphrase | None) -> Signer:
    try:
        private_key = load_pem_private_key(data, None)
    except TypeError:  # encrypted: it needs the passphrase
        if passphrase is None:
            raise KeyProblem(
                f"{path} is encrypted and no passphrase can be asked here; "
                "sign from a terminal, or use an unencrypted key kept safe by other means"
            ) from None
        try:
            private_key = load_pem_private_key(data, passphrase())
        except ValueError:
            raise KeyProblem(f"{path}: wrong passphrase") from None
    except ValueError as e:
        raise KeyProblem(f"{path}: not a usable PEM private key ({e})") from None
    try:
        return CryptoSigner(private_key)
    except ValueError as e:
        raise KeyProblem(f"{path}: unsupported key type ({e})") from None


def _sigstore_signer(uri: str) -> Signer:
    """Keyless signing: the ambient OIDC identity (CI) becomes the key's identity."""
    try:
        from sigstore.oidc import IdentityToken, detect_credential

        credential = detect_credential()
        if credential is None:
            raise KeyProblem(
                "sigstore: no ambient OIDC credential found (GitHub Actions with "
                "'id-token: write', GitLab, Buildkite, CircleCI or GCP); sign with a key file"
            )
        token = IdentityToken(credential)
        name = _certificate_identity(credential) or token.identity
        key = SigstoreKey(
            keyid=name,
            keytype="sigstore-oidc",
            scheme="Fulcio",
            keyval={"identity": name, "issuer": token.federated_issuer or token.issuer},
        )
        return Signer.from_priv_key_uri(uri, key)
    except KeyProblem:
        raise
    except Exception as e:  # noqa: BLE001 - sigstore and its OIDC detection raise many kinds
        raise KeyProblem(f"sigstore: cannot sign keyless: {e}") from None


GITHUB_ACTIONS_ISSUER = "https://token.actions.githubusercontent.com"


def _certificate_identity(credential: str) -> str | None:
    """The identity Fulcio will certify for a GitHub Actions token: the workflow URI
    (the token's ``sub`` is not what the certificate names). Read without verification:
    it only says which identity a verifier should expect; Fulcio checks the token."""
    try:
        body = credential.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (IndexError, ValueError):
        return None
    if claims.get("iss") == GITHUB_ACTIONS_ISSUER and claims.get("job_workflow_ref"):
        return f"https://github.com/{claims['job_workflow_ref']}"
    return None
