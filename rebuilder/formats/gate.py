"""The gate's statements: what a policy's owners sign about it (the policy file's digest and
every key it trusts), and the SLSA Verification Summary (VSA) the gate signs for an
admitted artifact."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from rebuilder.formats.fields import Fields, Predicate, PredicateError, format_time
from sandbox.uris import POLICY_PREDICATE, SLSA_VSA


class GateVerdict(StrEnum):
    """The gate's decision on one artifact."""

    ADMIT = "admit"
    DENY = "deny"


@dataclass(frozen=True, kw_only=True)
class SignedKey:
    """One key a signed policy trusts: its operator and fingerprint."""

    operator: str
    fingerprint: str


@dataclass(frozen=True, kw_only=True)
class PolicyStatement(Predicate):
    """The predicate of a policy signature (subject: the policy file by its sha256)."""

    file: str
    keys: tuple[SignedKey, ...]
    version: int | None = None
    expires: datetime | None = None
    predicate_type: ClassVar[str] = POLICY_PREDICATE

    def to_dict(self) -> dict[str, Any]:
        predicate: dict[str, Any] = {
            "file": self.file,
            "keys": [{"operator": k.operator, "fingerprint": k.fingerprint} for k in self.keys],
        }
        if self.version is not None:
            predicate["version"] = self.version
        if self.expires is not None:
            predicate["expires"] = format_time(self.expires)
        return predicate

    @classmethod
    def from_dict(cls, predicate: Any) -> PolicyStatement:
        """Raises: PredicateError: a field is missing or malformed."""
        fields = Fields(predicate, "predicate")
        keys = []
        for item in fields.tables("keys"):
            operator, fingerprint = item.text("operator"), item.text("fingerprint")
            if operator is None or fingerprint is None:
                raise PredicateError(f"{item.where}: a key names its operator and fingerprint")
            keys.append(SignedKey(operator=operator, fingerprint=fingerprint))
        return cls(
            file=fields.text("file") or "",
            keys=tuple(keys),
            version=fields.count("version"),
            expires=fields.time("expires"),
        )


@dataclass(frozen=True, kw_only=True)
class InputAttestation:
    """An attestation the gate's decision rested on."""

    uri: str
    sha256: str


@dataclass(frozen=True, kw_only=True)
class VerificationSummary(Predicate):
    """A SLSA VSA v1 predicate for an admitted artifact (``PASSED`` is the only result
    the gate signs). ``policy`` is how the policy is named: its URI, digest, version,
    expiry and signers (:func:`rebuilder.gate.policy.describe`)."""

    verifier_id: str
    time_verified: datetime
    resource_uri: str
    policy: dict[str, Any]
    inputs: tuple[InputAttestation, ...]
    agreeing_operators: tuple[str, ...]
    threshold: int
    predicate_type: ClassVar[str] = SLSA_VSA

    def to_dict(self) -> dict[str, Any]:
        return {
            "verifier": {"id": self.verifier_id},
            "timeVerified": format_time(self.time_verified),
            "resourceUri": self.resource_uri,
            "policy": dict(self.policy),
            "inputAttestations": [
                {"uri": item.uri, "digest": {"sha256": item.sha256}} for item in self.inputs
            ],
            "verificationResult": "PASSED",
            "verifiedLevels": [],
            "slsaVersion": "1.0",
            "hermetic": {
                "agreeingOperators": list(self.agreeing_operators),
                "threshold": self.threshold,
            },
        }

    @classmethod
    def from_dict(cls, predicate: Any) -> VerificationSummary:
        """Raises: PredicateError: not a passed verification, or a field malformed."""
        fields = Fields(predicate, "predicate")
        if fields.text("verificationResult") != "PASSED":
            raise PredicateError("predicate.verificationResult: the gate signs PASSED only")
        verifier = fields.table("verifier") or Fields({}, "predicate.verifier")
        verified = fields.time("timeVerified")
        ours = fields.table("hermetic") or Fields({}, "predicate.hermetic")
        threshold = ours.count("threshold")
        if verified is None or threshold is None:
            raise PredicateError("a VSA names timeVerified and hermetic.threshold")
        inputs = []
        for item in fields.tables("inputAttestations"):
            digest = item.table("digest")
            sha256 = digest.sha256("sha256") if digest is not None else None
            if sha256 is None:
                raise PredicateError(f"{item.where}: an input attestation names its sha256")
            inputs.append(InputAttestation(uri=item.text("uri") or "", sha256=sha256))
        return cls(
            verifier_id=verifier.text("id", required=True) or "",
            time_verified=verified,
            resource_uri=fields.text("resourceUri") or "",
            policy=fields.mapping("policy") or {},
            inputs=tuple(inputs),
            agreeing_operators=ours.texts("agreeingOperators") or (),
            threshold=threshold,
        )
