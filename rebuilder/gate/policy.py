"""The gate's policy (TOML), validated when loaded and again when constructed: anything
doubtful is an error, in the library as in the CLI. The reference is docs/gate.md.

[policy]
threshold = 2                    # independent operators that must agree
max_age = "30d"                  # counted from the newest time a trusted key signed
version = 3                      # optional; named in every VSA
expires = 2027-06-30T00:00:00Z   # optional; an expired policy is refused
allow_network_attempts = false   # deny builds that tried to reach outside their namespace
allow_loopback = false           # true: loopback traffic inside the build is fine
allow_incomplete_trace = false   # true: admit on a trace with gaps
deny_on_disagreement = true      # one trusted operator saying otherwise denies
require_check = false            # a trusted `hermetic check` verdict "reproducible"
require_sbom = false             # a trusted, signed SBOM naming the artifact
images = ["sha256:<64 hex>"]     # allowed build images (omit: any)
sources = ["sha256:<tree digest>", "git+https://host/repo@<commit>"]  # (omit: any)
specs = ["sha256:<sha256 of hermetic.toml>"]                          # (omit: any)
commands = [["make"]]                                                  # (omit: any)

[[operators]]                    # one operator counts once, whatever its keys
name = "acme"
optional = false                 # true: its nodes may be unreachable
nodes = ["https://rebuild.acme.example"]
keys = [{ file = "keys/acme.pub" }, { pem = "-----BEGIN PUBLIC KEY-----…" },
        { sslib = { keytype = "ed25519", scheme = "ed25519", keyval = { public = "…" } } }]
sigstore = [{ issuer = "https://token.actions.githubusercontent.com",
              subject = "https://github.com/acme/…@refs/heads/main" }]
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from securesystemslib.signer import Key

from rebuilder.attest.keys import (
    KeyProblem,
    KeyRing,
    key_fingerprint,
    load_public_key,
    public_key_from_dict,
    public_key_from_pem,
    sigstore_identity,
)
from rebuilder.attest.untrusted_json import shown
from rebuilder.errors import UserError
from rebuilder.formats.fields import EARLIEST, LATEST, format_time
from rebuilder.formats.provenance import SourceRef
from sandbox.digests import is_sha256
from sandbox.units import parse_duration

MAX_POLICY_BYTES = 1024**2
_GIT_SOURCE = re.compile(
    r"^git\+(?P<repo>[^@#\s]+)@(?P<commit>[0-9a-f]{40}|[0-9a-f]{64})(?:#(?P<dir>[^\s]+))?$"
)
_POLICY_KEYS = {
    "threshold",
    "max_age",
    "version",
    "expires",
    "allow_network_attempts",
    "allow_loopback",
    "allow_incomplete_trace",
    "deny_on_disagreement",
    "require_check",
    "require_sbom",
    "images",
    "sources",
    "specs",
    "commands",
}
_OPERATOR_KEYS = {"name", "optional", "nodes", "keys", "sigstore"}


class PolicyError(UserError):
    """The policy cannot be used; names the file, the key and why."""


@dataclass(frozen=True, kw_only=True)
class Operator:
    """One independent party; its keys and identities count as one vote."""

    name: str
    keys: tuple[Key, ...]
    nodes: tuple[str, ...] = ()
    optional: bool = False
    places: tuple[str, ...] = ()  # where each key is listed in the file (for errors)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise PolicyError("every operator needs a name")
        if not self.keys:
            raise PolicyError(f"operator {self.name!r} has no keys or Sigstore identities")
        if self.places and len(self.places) != len(self.keys):
            raise PolicyError(f"operator {self.name!r}: one place per key")

    def place_of(self, index: int) -> str:
        return self.places[index] if self.places else f"operators.{self.name}.keys[{index}]"


@dataclass(frozen=True, kw_only=True)
class KeyBinding:
    """One trusted key as the policy file loaded it."""

    operator: str
    place: str  # operators[0].keys[1]
    fingerprint: str  # sha256:<hex of its DER SubjectPublicKeyInfo>, or sigstore:<hex>


@dataclass(frozen=True)
class GitSource:
    """An allowed git source: the repository as recorded, and the commit."""

    repository: str
    commit: str
    subdirectory: str = ""

    def matches(self, source: SourceRef) -> bool:
        if source.git_commit != self.commit or source.uri is None:
            return False
        found = _GIT_SOURCE.match(source.uri)
        return (
            found is not None
            and found["commit"] == self.commit
            and _same_repository(found["repo"], self.repository)
            and (found["dir"] or "") == self.subdirectory
        )


def _same_repository(a: str, b: str) -> bool:
    def plain(url: str) -> str:
        return url.rstrip("/").removesuffix(".git").lower()

    return plain(a) == plain(b)


@dataclass(frozen=True, kw_only=True)
class SourceRule:
    """The sources a release may be built from: tree digests and git commits."""

    trees: frozenset[str] = frozenset()
    git: tuple[GitSource, ...] = ()

    def __post_init__(self) -> None:
        if not self.trees and not self.git:
            raise PolicyError("an empty source rule admits nothing; omit it to allow any source")

    def allows_commit(self, source: SourceRef) -> bool:
        return any(entry.matches(source) for entry in self.git)


@dataclass(frozen=True, kw_only=True)
class Policy:
    """A validated policy. Constructing one checks what loading checks: no threshold
    below 1 or above the operators, no operators, no key under two operators or ids."""

    path: Path
    threshold: int
    operators: tuple[Operator, ...]
    max_age_s: int | None = None
    allow_network_attempts: bool = False
    allow_loopback: bool = False
    allow_incomplete_trace: bool = False
    deny_on_disagreement: bool = True
    require_check: bool = False
    require_sbom: bool = False
    images: frozenset[str] | None = None  # bare hex digests; None: any image
    sources: SourceRule | None = None  # None: any source (still one source for all)
    specs: frozenset[str] | None = None  # sha256 of the spec file; None: any
    commands: frozenset[tuple[str, ...]] | None = None  # None: any command
    version: int | None = None
    expires: datetime | None = None
    sha256: str | None = None  # of the policy file as read
    signed_by: tuple[str, ...] = ()  # key ids of the policy owners that signed it
    ring: KeyRing = field(init=False, repr=False, compare=False)
    _owners: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.expires is not None:  # a time every reader can compare, convert and print
            object.__setattr__(self, "expires", _expires(self.path, self.expires))
        threshold = self.threshold
        if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 1:
            raise PolicyError(
                f"{self.path}: policy.threshold: expected a number of operators >= 1, "
                f"got {shown(threshold)}"
            )
        if not self.operators:
            raise PolicyError(
                f"{self.path}: operators: no trusted operators: nothing could ever be admitted"
            )
        if threshold > len(self.operators):
            raise PolicyError(
                f"{self.path}: policy.threshold: {threshold} is more than the "
                f"{len(self.operators)} trusted operators"
            )
        names = [op.name for op in self.operators]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise PolicyError(f"{self.path}: operators: operator {twice[0]!r} is listed twice")
        placed = [
            (f"operators.{op.name}.keys[{i}]", op.name, key)
            for op in self.operators
            for i, key in enumerate(op.keys)
        ]
        owners = check_unique_keys(self.path, placed)
        try:
            ring = KeyRing.of(key for _, _, key in placed)
        except KeyProblem as e:
            raise PolicyError(f"{self.path}: {e}") from None
        object.__setattr__(self, "ring", ring)
        object.__setattr__(self, "_owners", owners)

    def operator_of(self, fingerprint: str) -> str:
        """The operator owning the key with this fingerprint."""
        return self._owners[fingerprint]

    def key_bindings(self) -> tuple[KeyBinding, ...]:
        """Every trusted key as loaded, in file order: its operator, where it is listed,
        and its fingerprint (what a signed policy binds, so that the key files it names
        are covered by the owners' signatures as much as its own bytes)."""
        return tuple(
            KeyBinding(operator=op.name, place=op.place_of(i), fingerprint=key_fingerprint(key))
            for op in self.operators
            for i, key in enumerate(op.keys)
        )

    @property
    def keys(self) -> list[Key]:
        return list(self.ring.keys)


def check_unique_keys(path: Path, placed: Iterable[tuple[str, str, Key]]) -> dict[str, str]:
    """Operator by key fingerprint; one key under two operators, two ids or twice is an
    error naming both places.

    Raises:
        PolicyError: a key id or a key listed twice, or key material that does not parse.
    """
    by_id: dict[str, str] = {}
    by_key: dict[str, tuple[str, str]] = {}
    for place, operator, key in placed:
        if key.keyid in by_id:
            raise PolicyError(
                f"{path}: {place}: key id {shown(key.keyid)} is also listed at {by_id[key.keyid]}"
            )
        by_id[key.keyid] = place
        try:
            fingerprint = key_fingerprint(key)
        except KeyProblem as e:
            raise PolicyError(f"{path}: {place}: {e}") from None
        if fingerprint in by_key:
            raise PolicyError(
                f"{path}: {place}: the same public key is listed twice: at "
                f"{by_key[fingerprint][0]} and at {place} ({fingerprint[:23]}…); "
                "one key counts for one operator"
            )
        by_key[fingerprint] = (place, operator)
    return {fingerprint: operator for fingerprint, (_, operator) in by_key.items()}


def _fail(path: Path, key: str, reason: str) -> PolicyError:
    return PolicyError(f"{path}: {key}: {reason}")


def _duration(path: Path, value: object) -> int:
    try:
        return parse_duration(value, maximum=None, numbers=False)
    except ValueError:
        raise _fail(
            path,
            "policy.max_age",
            f"expected a duration such as '30d' or '12h', got {shown(value)}",
        ) from None


def _key(path: Path, where: str, entry: Any) -> Key:
    if (
        not isinstance(entry, dict)
        or len(entry) != 1
        or not ({"file", "pem", "sslib"} & set(entry))
    ):
        raise _fail(path, where, 'a key is { file = "…" }, { pem = "…" } or { sslib = {…} }')
    kind, value = next(iter(entry.items()))
    try:
        if kind == "sslib":
            return public_key_from_dict(value, f"{path}: {where}")
        if not isinstance(value, str) or not value or "\0" in value:
            raise _fail(path, where, f"{kind} must be a non-empty string")
        if kind == "file":
            return load_public_key(path.parent / value)
        return public_key_from_pem(value.encode(), f"{path}: {where}")
    except KeyProblem as e:
        raise _fail(path, where, str(e)) from None


def _sigstore(path: Path, where: str, entry: Any) -> Key:
    if (
        not isinstance(entry, dict)
        or set(entry) != {"issuer", "subject"}
        or not all(isinstance(v, str) and v for v in entry.values())
    ):
        raise _fail(path, where, 'a Sigstore identity is { issuer = "…", subject = "…" }')
    return sigstore_identity(issuer=entry["issuer"], identity=entry["subject"])


def _flag(path: Path, key: str, value: object, default: bool) -> bool:
    """A true/false setting; anything else (a string "false"…) is an error, not a guess."""
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _fail(path, key, f"expected true or false, got {shown(value)}")
    return value


def _list(path: Path, key: str, value: object, what: str) -> list[Any] | None:
    """A non-empty list, or None when the key is absent."""
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise _fail(path, key, f"a non-empty list of {what} (omit it to allow any)")
    return value


def _digests(path: Path, key: str, value: object) -> frozenset[str] | None:
    items = _list(path, key, value, "sha256:<hex> digests")
    if items is None:
        return None
    found = set()
    for item in items:
        digest = item.removeprefix("sha256:") if isinstance(item, str) else ""
        if not is_sha256(digest):
            raise _fail(path, key, f"{shown(item)} is not sha256:<64 lower-case hex>")
        found.add(digest)
    return frozenset(found)


def _sources(path: Path, value: object) -> SourceRule | None:
    items = _list(path, "policy.sources", value, "sources")
    if items is None:
        return None
    trees, git = set(), []
    for item in items:
        text = item if isinstance(item, str) else ""
        match = _GIT_SOURCE.match(text)
        if text.startswith("sha256:") and is_sha256(text.removeprefix("sha256:")):
            trees.add(text.removeprefix("sha256:"))
        elif match is not None:
            git.append(GitSource(match["repo"], match["commit"], match["dir"] or ""))
        else:
            raise _fail(
                path,
                "policy.sources",
                f"{shown(item)} is neither sha256:<source tree digest> nor "
                "git+<repository>@<full commit id>[#<subdirectory>]",
            )
    return SourceRule(trees=frozenset(trees), git=tuple(git))


def _commands(path: Path, value: object) -> frozenset[tuple[str, ...]] | None:
    items = _list(path, "policy.commands", value, "argv lists")
    if items is None:
        return None
    found = set()
    for item in items:
        if not isinstance(item, list) or not item or not all(isinstance(a, str) for a in item):
            raise _fail(
                path, "policy.commands", f'{shown(item)} is not an argv list such as ["make"]'
            )
        found.add(tuple(item))
    return frozenset(found)


def _version(path: Path, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < 2**63:
        raise _fail(path, "policy.version", f"expected an integer >= 1, got {shown(value)}")
    return value


def _expires(path: Path, value: object) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime) and value.tzinfo is not None:
        try:
            utc = value.astimezone(UTC)
        except OverflowError:  # an offset past the end of the calendar
            utc = None
        if utc is not None and EARLIEST <= utc < LATEST:
            return utc
        raise _fail(
            path,
            "policy.expires",
            f"{shown(value)} is not a time between {EARLIEST.year} and {LATEST.year}",
        )
    raise _fail(
        path,
        "policy.expires",
        f"expected a TOML date-time with a zone such as 2027-06-30T00:00:00Z, got {shown(value)}"
        + (" (a date alone names no instant)" if isinstance(value, date) else ""),
    )


def _operator(path: Path, index: int, entry: Any) -> tuple[Operator, list[str]]:
    """The operator, and the place of each of its keys in the file."""
    where = f"operators[{index}]"
    if not isinstance(entry, dict):
        raise _fail(path, where, "expected a table")
    unknown = set(entry) - _OPERATOR_KEYS
    if unknown:
        raise _fail(
            path, f"{where}.{sorted(unknown)[0]}", f"unknown key; known: {sorted(_OPERATOR_KEYS)}"
        )
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise _fail(path, f"{where}.name", "every operator needs a name")
    keys: list[Key] = []
    places: list[str] = []
    for kind, read in (("keys", _key), ("sigstore", _sigstore)):
        listed = entry.get(kind, [])
        if not isinstance(listed, list):
            raise _fail(path, f"{where}.{kind}", "expected a list")
        for i, item in enumerate(listed):
            keys.append(read(path, f"{where}.{kind}[{i}]", item))
            places.append(f"{where}.{kind}[{i}]")
    if not keys:
        raise _fail(path, where, f"operator {name!r} has no keys or Sigstore identities")
    nodes = entry.get("nodes", [])
    if not isinstance(nodes, list) or not all(isinstance(n, str) for n in nodes):
        raise _fail(path, f"{where}.nodes", "expected a list of URLs")
    operator = Operator(
        name=name,
        keys=tuple(keys),
        nodes=tuple(nodes),
        optional=_flag(path, f"{where}.optional", entry.get("optional"), False),
        places=tuple(places),
    )
    return operator, places


def parse_policy(
    data: bytes, path: Path, *, now: datetime, signed_by: tuple[str, ...] = ()
) -> Policy:
    """A policy from the bytes of its file (key files are read relative to ``path``).

    Raises:
        PolicyError: naming the file, the key and the reason; also when it has expired.
    """
    if len(data) > MAX_POLICY_BYTES:
        raise PolicyError(f"{path}: {len(data)} bytes; a policy is at most {MAX_POLICY_BYTES}")
    try:
        document = tomllib.loads(data.decode())
    except UnicodeDecodeError:
        raise PolicyError(f"{path}: not UTF-8 text") from None
    except (tomllib.TOMLDecodeError, RecursionError) as e:
        raise PolicyError(f"{path}: not valid TOML: {shown(str(e), 200)}") from None
    found = _Problems(path)
    for name in sorted(set(document) - {"policy", "operators"}):
        found.add(_fail(path, name, "unknown table; known: policy, operators"))
    settings = document.get("policy", {})
    if not isinstance(settings, dict):
        found.add(_fail(path, "policy", "expected a table"))
        settings = {}
    for name in sorted(set(settings) - _POLICY_KEYS):
        found.add(_fail(path, f"policy.{name}", f"unknown key; known: {sorted(_POLICY_KEYS)}"))
    listed = document.get("operators", [])
    if not isinstance(listed, list):
        found.add(_fail(path, "operators", "expected [[operators]] tables"))
        listed = []
    read = [
        operator
        for i, entry in enumerate(listed)
        if (operator := found.attempt(partial(_operator, path, i, entry), None)) is not None
    ]
    # the file's own places first: "operators[0].keys[1] and operators[2].keys[0]"
    found.attempt(
        partial(
            check_unique_keys,
            path,
            [
                (place, op.name, key)
                for op, places in read
                for place, key in zip(places, op.keys, strict=True)
            ],
        ),
        None,
    )
    expires = found.attempt(partial(_expires, path, settings.get("expires")), None)
    if expires is not None and now >= expires:
        found.add(
            _fail(
                path,
                "policy.expires",
                f"the policy expired at {format_time(expires)}; ask its owners for a current one",
            )
        )

    def flag(name: str, default: bool) -> bool:
        return found.attempt(
            partial(_flag, path, f"policy.{name}", settings.get(name), default), default
        )

    max_age = settings.get("max_age")
    fields: dict[str, Any] = {
        "max_age_s": found.attempt(partial(_duration, path, max_age), None)
        if max_age is not None
        else None,
        "allow_network_attempts": flag("allow_network_attempts", False),
        "allow_loopback": flag("allow_loopback", False),
        "allow_incomplete_trace": flag("allow_incomplete_trace", False),
        "deny_on_disagreement": flag("deny_on_disagreement", True),
        "require_check": flag("require_check", False),
        "require_sbom": flag("require_sbom", False),
        "images": found.attempt(
            partial(_digests, path, "policy.images", settings.get("images")), None
        ),
        "sources": found.attempt(partial(_sources, path, settings.get("sources")), None),
        "specs": found.attempt(
            partial(_digests, path, "policy.specs", settings.get("specs")), None
        ),
        "commands": found.attempt(partial(_commands, path, settings.get("commands")), None),
        "version": found.attempt(partial(_version, path, settings.get("version")), None),
    }
    found.raise_if_any()
    return Policy(
        path=path,
        threshold=settings.get("threshold"),  # type: ignore[arg-type]  # checked by Policy
        operators=tuple(op for op, _ in read),
        expires=expires,
        sha256=hashlib.sha256(data).hexdigest(),
        signed_by=signed_by,
        **fields,
    )


_T = TypeVar("_T")


class PolicyProblems(PolicyError):
    """Every problem of one policy file, reported at once."""

    def __init__(self, path: Path, errors: Sequence[PolicyError]) -> None:
        self.problems = tuple(str(error) for error in errors)
        super().__init__(
            f"{path}: {len(errors)} problems:\n"
            + "\n".join(f"  {problem}" for problem in self.problems)
        )


class _Problems:
    """The errors of one policy file, collected so that a user sees them all at once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.errors: list[PolicyError] = []

    def add(self, error: PolicyError) -> None:
        self.errors.append(error)

    def attempt(self, parse: Callable[[], _T], default: _T) -> _T:
        try:
            return parse()
        except PolicyError as e:
            self.errors.append(e)
            return default

    def raise_if_any(self) -> None:
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise PolicyProblems(self.path, self.errors)


def read_policy_bytes(path: Path) -> bytes:
    """The policy file's bytes, read once (what is verified is what is parsed).

    Raises:
        PolicyError: it cannot be read, or is too large to be a policy.
    """
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_POLICY_BYTES + 1)
    except OSError as e:
        raise PolicyError(f"{path}: cannot read the policy: {e.strerror}") from None
    return data


def load_policy(path: Path, *, now: datetime | None = None) -> Policy:
    """Read and validate an unsigned policy (see :mod:`rebuilder.gate.policy_signature`
    for a signed one).

    Raises:
        PolicyError: naming the file, the key and the reason.
    """
    return parse_policy(read_policy_bytes(path), path, now=now or datetime.now(tz=UTC))


def describe(policy: Policy) -> Mapping[str, Any]:
    """How a VSA names the policy: where, its digest, version and signers."""
    described: dict[str, Any] = {"uri": policy.path.resolve().as_uri()}
    if policy.sha256 is not None:
        described["digest"] = {"sha256": policy.sha256}
    annotations: dict[str, Any] = {}
    if policy.version is not None:
        annotations["version"] = policy.version
    if policy.expires is not None:
        annotations["expires"] = format_time(policy.expires)
    if policy.signed_by:
        annotations["signedBy"] = list(policy.signed_by)
    if annotations:
        described["annotations"] = annotations
    return described
