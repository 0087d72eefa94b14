"""An SBOM statement's predicate: the SPDX 2.3 or CycloneDX 1.5 document itself, as
written beside the build; what the gate reads of it is when it was made."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rebuilder.formats.fields import Fields, Predicate, PredicateError
from sandbox.uris import CYCLONEDX_PREDICATE, SPDX_PREDICATE

SBOM_PREDICATES = (SPDX_PREDICATE, CYCLONEDX_PREDICATE)


@dataclass(frozen=True, kw_only=True)
class Sbom(Predicate):
    """An SBOM as a predicate (``document`` free-form but for its creation time)."""

    predicate_type: str  # type: ignore[misc]  # an instance's: SPDX or CycloneDX
    document: Mapping[str, Any]

    def __post_init__(self) -> None:
        if self.predicate_type not in SBOM_PREDICATES:
            raise PredicateError(f"{self.predicate_type}: not an SBOM predicate type")
        self.created  # noqa: B018 - a malformed time is a malformed SBOM

    @property
    def created(self) -> datetime | None:
        """When it was made: SPDX ``creationInfo.created``, CycloneDX ``metadata.timestamp``.

        Raises:
            PredicateError: the time is there but malformed.
        """
        read = Fields(self.document, "predicate")
        if self.predicate_type == SPDX_PREDICATE:
            info = read.table("creationInfo")
            return info.time("created") if info is not None else None
        metadata = read.table("metadata")
        return metadata.time("timestamp") if metadata is not None else None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.document)

    @classmethod
    def from_dict(cls, predicate: Any, predicate_type: str) -> Sbom:
        """Raises: PredicateError: not an object, or a malformed creation time."""
        return cls(predicate_type=predicate_type, document=Fields(predicate, "predicate").document)
