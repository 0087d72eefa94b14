"""The gate's policy (TOML), validated when loaded: anything doubtful is an error.

[policy]
threshold = 2                    # independent operators that must agree
max_age = "30d"                  # attestations older than this do not count
allow_network_attempts = false   # deny builds whose trace recorded network attempts
deny_on_disagreement = true      # one trusted operator saying otherwise denies
require_check = false            # true: a trusted, signed `hermetic check` verdict
                                 # "reproducible" about the artifact is required
require_sbom = false             # true: a trusted, signed SBOM (sbom.intoto.json) whose
                                 # subjects include the artifact is required
images = ["sha256:<64 hex>"]     # allowed build images (omit: any)

[[operators]]                    # one operator counts once, whatever its keys
name = "acme"
optional = false                 # true: its nodes may be unreachable
nodes = ["https://rebuild.acme.example"]
keys = [{ file = "keys/acme.pub" }, { pem = "-----BEGIN PUBLIC KEY-----…" }]
sigstore = [{ issuer = "https://token.actions.githubusercontent.com",
              subject = "https://github.com/acme/…@refs/heads/main" }]
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from securesystemslib.signer import Key, SigstoreKey

from rebuilder.attest.keys import KeyProblem, load_public_key, public_key_from_pem
from rebuilder.errors import Error

_DURATION = re.compile(r"^(\d+)\s*([smhd])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_POLICY_KEYS = {
    "threshold",
    "max_age",
    "allow_network_attempts",
    "deny_on_disagreement",
    "require_check",
    "require_sbom",
    "images",
}
_OPERATOR_KEYS = {"name", "optional", "nodes", "keys", "sigstore"}


class PolicyError(Error):
    """The policy cannot be used; names the file, the key and why."""


@dataclass(frozen=True, kw_only=True)
class Operator:
    name: str
    keys: tuple[Key, ...]
    nodes: tuple[str, ...] = ()
    optional: bool = False


@dataclass(frozen=True, kw_only=True)
class Policy:
    path: Path
    threshold: int
    operators: tuple[Operator, ...]
    max_age_s: int | None = None
    allow_network_attempts: bool = False
    deny_on_disagreement: bool = True
    require_check: bool = False
    require_sbom: bool = False
    images: frozenset[str] | None = None  # bare hex digests; None: any image

    def operator_of(self) -> dict[str, str]:
        """Operator name by key id."""
        return {key.keyid: op.name for op in self.operators for key in op.keys}

    @property
    def keys(self) -> list[Key]:
        return [key for op in self.operators for key in op.keys]


def _fail(path: Path, key: str, reason: str) -> PolicyError:
    return PolicyError(f"{path}: {key}: {reason}")


def _duration(path: Path, value: object) -> int:
    match = _DURATION.match(str(value).strip())
    if not match or int(match.group(1)) == 0:
        raise _fail(
            path, "policy.max_age", f"expected a duration such as '30d' or '12h', got {value!r}"
        )
    return int(match.group(1)) * _SECONDS[match.group(2)]


def _key(path: Path, where: str, entry: Any) -> Key:
    if not isinstance(entry, dict) or len(entry) != 1 or not ({"file", "pem"} & set(entry)):
        raise _fail(path, where, 'a key is { file = "…" } or { pem = "…" }')
    try:
        if "file" in entry:
            return load_public_key((path.parent / str(entry["file"])).resolve())
        return public_key_from_pem(str(entry["pem"]).encode(), where)
    except KeyProblem as e:
        raise _fail(path, where, str(e)) from None


def _sigstore(path: Path, where: str, entry: Any) -> Key:
    if not isinstance(entry, dict) or set(entry) != {"issuer", "subject"}:
        raise _fail(path, where, 'a Sigstore identity is { issuer = "…", subject = "…" }')
    identity = {"identity": str(entry["subject"]), "issuer": str(entry["issuer"])}
    return SigstoreKey(
        keyid=f"sigstore:{identity['issuer']}:{identity['identity']}",
        keytype="sigstore-oidc",
        scheme="Fulcio",
        keyval=identity,
    )


def _flag(path: Path, key: str, value: object, default: bool) -> bool:
    """A true/false setting; anything else (a string "false"…) is an error, not a guess."""
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _fail(path, key, f"expected true or false, got {value!r}")
    return value


def _operator(path: Path, index: int, entry: Any) -> Operator:
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
    keys = [_key(path, f"{where}.keys[{i}]", k) for i, k in enumerate(entry.get("keys", []))]
    keys += [
        _sigstore(path, f"{where}.sigstore[{i}]", s)
        for i, s in enumerate(entry.get("sigstore", []))
    ]
    if not keys:
        raise _fail(path, where, f"operator {name!r} has no keys or Sigstore identities")
    nodes = entry.get("nodes", [])
    if not isinstance(nodes, list) or not all(isinstance(n, str) for n in nodes):
        raise _fail(path, f"{where}.nodes", "expected a list of URLs")
    return Operator(
        name=name,
        keys=tuple(keys),
        nodes=tuple(nodes),
        optional=_flag(path, f"{where}.optional", entry.get("optional"), False),
    )


def _unique(path: Path, operators: list[Operator]) -> None:
    """One key counts for one operator: duplicate ids and one key under two ids are errors."""
    seen_ids: dict[str, str] = {}
    seen_material: dict[str, str] = {}
    names = set()
    for op in operators:
        if op.name in names:
            raise _fail(path, "operators", f"operator {op.name!r} is listed twice")
        names.add(op.name)
        for key in op.keys:
            if key.keyid in seen_ids:
                raise _fail(
                    path,
                    f"operators.{op.name}",
                    f"key id {key.keyid[:16]}… is also listed for {seen_ids[key.keyid]!r}",
                )
            seen_ids[key.keyid] = op.name
            material = repr(sorted(key.keyval.items()))
            if material in seen_material:
                raise _fail(
                    path,
                    f"operators.{op.name}",
                    f"the same public key is listed twice "
                    f"({seen_material[material]!r} and {op.name!r})",
                )
            seen_material[material] = op.name


def load_policy(path: Path) -> Policy:
    """Read and validate a policy.

    Raises:
        PolicyError: naming the file, the key and the reason.
    """
    try:
        document = tomllib.loads(path.read_text())
    except OSError as e:
        raise PolicyError(f"{path}: cannot read the policy: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise PolicyError(f"{path}: not valid TOML: {e}") from None
    unknown = set(document) - {"policy", "operators"}
    if unknown:
        raise _fail(path, sorted(unknown)[0], "unknown table; known: policy, operators")
    settings = document.get("policy", {})
    unknown = set(settings) - _POLICY_KEYS
    if unknown:
        raise _fail(
            path, f"policy.{sorted(unknown)[0]}", f"unknown key; known: {sorted(_POLICY_KEYS)}"
        )
    operators = [_operator(path, i, e) for i, e in enumerate(document.get("operators", []))]
    if not operators:
        raise _fail(path, "operators", "no trusted operators: nothing could ever be admitted")
    _unique(path, operators)
    threshold = settings.get("threshold")
    if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 1:
        raise _fail(
            path, "policy.threshold", f"expected a number of operators >= 1, got {threshold!r}"
        )
    if threshold > len(operators):
        raise _fail(
            path,
            "policy.threshold",
            f"{threshold} is more than the {len(operators)} trusted operators",
        )
    images = settings.get("images")
    allowed: frozenset[str] | None = None
    if images is not None:
        if not isinstance(images, list) or not images:
            raise _fail(
                path,
                "policy.images",
                "a non-empty list of sha256:<hex> digests (omit it to allow any image)",
            )
        allowed = frozenset()
        for item in images:
            digest = str(item).removeprefix("sha256:")
            if not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise _fail(path, "policy.images", f"{item!r} is not sha256:<64 hex>")
            allowed |= {digest}
    return Policy(
        path=path,
        threshold=threshold,
        operators=tuple(operators),
        max_age_s=_duration(path, settings["max_age"]) if "max_age" in settings else None,
        allow_network_attempts=_flag(
            path, "policy.allow_network_attempts", settings.get("allow_network_attempts"), False
        ),
        deny_on_disagreement=_flag(
            path, "policy.deny_on_disagreement", settings.get("deny_on_disagreement"), True
        ),
        require_check=_flag(path, "policy.require_check", settings.get("require_check"), False),
        require_sbom=_flag(path, "policy.require_sbom", settings.get("require_sbom"), False),
        images=allowed,
    )
