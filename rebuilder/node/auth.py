"""Who may use a node: scoped API tokens (stored as sha256, compared in constant time),
client certificates mapped to scopes by subject (mutual TLS; the TLS layer checks the
chain), and a per-client rate limit.

Scopes: ``submit``, ``read`` (the client's own jobs), ``read-all`` (every tenant's jobs),
``cosign``. A principal's tenant is its kind and name (``token:ci``, ``cert:CN=ci,O=Acme``):
jobs are visible under the tenant they were submitted by, a token and a certificate never
share one, and a name appears once in a tokens or client scopes file.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
import tomllib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cryptography import x509

from rebuilder.errors import UserError
from sandbox.workspace import write_atomically


class Scope(StrEnum):
    """What a principal may do on a node."""

    SUBMIT = "submit"
    READ = "read"  # its own jobs
    READ_ALL = "read-all"  # every tenant's jobs
    COSIGN = "cosign"


SCOPES = tuple(scope.value for scope in Scope)


class AuthConfigError(UserError):
    """A tokens file that cannot be used."""


@dataclass(frozen=True)
class Principal:
    name: str
    scopes: frozenset[Scope]
    kind: str = "token"  # or "cert": a client certificate's subject

    @property
    def tenant(self) -> str:
        """Whose jobs these are: the kind and the name, so that a token named like a
        certificate subject (or the reverse) is another tenant."""
        return f"{self.kind}:{self.name}"

    @property
    def sees_all(self) -> bool:
        """Whether it may read every tenant's jobs, not only its own."""
        return Scope.READ_ALL in self.scopes

    def may(self, scope: Scope | str) -> bool:
        return scope in self.scopes or (scope == Scope.READ and self.sees_all)


def new_token() -> str:
    return f"hmt_{secrets.token_urlsafe(32)}"


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenRegistry:
    """The tokens a node accepts: ``{"tokens": [{"name", "sha256", "scopes"}]}``."""

    def __init__(self, entries: dict[str, Principal]) -> None:
        self._by_digest = entries

    @classmethod
    def load(cls, path: Path) -> TokenRegistry:
        try:
            document = json.loads(path.read_text())
            entries = {}
            names: set[str] = set()
            for item in document["tokens"]:
                scopes = frozenset(item["scopes"])
                unknown = scopes - set(SCOPES)
                if unknown:
                    raise ValueError(f"unknown scopes {sorted(unknown)}; known: {SCOPES}")
                name = str(item["name"])
                if name in names:  # two tokens of one name would be one tenant
                    raise ValueError(f"the name {name!r} is given twice")
                names.add(name)
                entries[str(item["sha256"])] = Principal(name, frozenset(Scope(x) for x in scopes))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise AuthConfigError(
                f"{path}: not a usable tokens file ({e!r}); expected "
                '{"tokens": [{"name": …, "sha256": …, "scopes": [...]}]}, as '
                "'hermetic node token' writes it"
            ) from None
        return cls(entries)

    def principal(self, token: str) -> Principal | None:
        digest = token_digest(token)
        for known, principal in self._by_digest.items():
            if hmac.compare_digest(known, digest):
                return principal
        return None


def add_token(path: Path, name: str, scopes: list[str]) -> str:
    """Create a token, append its digest to the tokens file (0600), return the token."""
    unknown = set(scopes) - set(SCOPES)
    if unknown or not scopes:
        named = f"unknown scope(s) {', '.join(sorted(unknown))}; " if unknown else ""
        raise AuthConfigError(f"{named}scopes must be among {', '.join(SCOPES)}")
    document: dict[str, list[dict[str, object]]] = {"tokens": []}
    if path.exists():
        TokenRegistry.load(path)  # refuse to extend a broken file
        document = json.loads(path.read_text())
    if any(item.get("name") == name for item in document["tokens"]):
        raise AuthConfigError(f"{path}: a token named {name!r} exists; choose another name")
    token = new_token()
    document["tokens"].append({"name": name, "sha256": token_digest(token), "scopes": scopes})
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, (json.dumps(document, indent=2) + "\n").encode(), mode=0o600)
    return token


class ClientScopes:
    """Scopes of mutual-TLS clients by certificate subject (``--client-scopes FILE``)::

        [[client]]
        subject = "CN=rebuild-ci,O=Acme"   # RFC 4514, as openssl x509 -subject -nameopt RFC2253
        scopes = ["submit", "read", "cosign"]

    A certified client whose subject is not listed has no scope at all. Subjects are
    compared as names, not spellings: escapes (``\\C3\\A9`` as openssl writes é) read as
    the characters they stand for.
    """

    def __init__(self, entries: dict[str, Principal]) -> None:
        self._by_subject = entries

    @classmethod
    def load(cls, path: Path) -> ClientScopes:
        """Raises AuthConfigError naming the file and what is wrong."""
        try:
            document = tomllib.loads(path.read_text())
            entries: dict[str, Principal] = {}
            unknown_keys = set(document) - {"client"}
            if unknown_keys:
                raise ValueError(f"unknown keys {sorted(unknown_keys)}")
            for item in document.get("client", []):
                subject = item["subject"]
                scopes = item["scopes"]
                if not isinstance(subject, str) or not subject:
                    raise ValueError("every client needs a subject")
                if not isinstance(scopes, list) or not all(isinstance(x, str) for x in scopes):
                    raise ValueError(f"{subject}: scopes must be a list of names")
                unknown = set(scopes) - set(SCOPES)
                if unknown:
                    raise ValueError(f"{subject}: unknown scopes {sorted(unknown)}")
                name = _subject(subject)
                if name in entries:
                    raise ValueError(f"{subject} is listed twice")
                entries[name] = Principal(name, frozenset(Scope(x) for x in scopes), "cert")
        except (OSError, ValueError, KeyError, TypeError, tomllib.TOMLDecodeError) as e:
            raise AuthConfigError(
                f"{path}: not a usable client scopes file ({e}); expected "
                '[[client]] tables with subject = "CN=…" and scopes = [...] '
                f"(scopes among {', '.join(SCOPES)})"
            ) from None
        return cls(entries)

    def principal(self, subject: str) -> Principal | None:
        try:
            return self._by_subject.get(_subject(subject))
        except ValueError:
            return None


def _subject(text: str) -> str:
    """A subject as cryptography writes it (RFC 4514): one spelling per name."""
    try:
        return x509.Name.from_rfc4514_string(text).rfc4514_string()
    except ValueError as e:
        raise ValueError(
            f"{text!r} is not an RFC 4514 name (as openssl x509 -noout -subject "
            f"-nameopt RFC2253 prints it): {e}"
        ) from None


class RateLimiter:
    """A token bucket per client: ``per_minute`` requests, bursts up to that many."""

    def __init__(self, per_minute: int) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(per_minute)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, client: str) -> bool:
        now = time.monotonic()
        with self._lock:
            level, last = self._buckets.get(client, (self.capacity, now))
            level = min(self.capacity, level + (now - last) * self.rate)
            if level < 1:
                self._buckets[client] = (level, now)
                return False
            self._buckets[client] = (level - 1, now)
            return True
