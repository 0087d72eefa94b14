"""A ``hermetic check`` verdict as a predicate: reproducible or not, the culprit
variations, each build, the differences and the reports' digests. A signed "not
reproducible" is evidence too."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from rebuilder.formats.fields import Fields, Predicate, PredicateError, format_time
from sandbox.uris import CHECK_PREDICATE


class CheckVerdict(StrEnum):
    """What a check concluded (the predicate's ``reproducible``: true or false)."""

    REPRODUCIBLE = "reproducible"
    NOT_REPRODUCIBLE = "not-reproducible"


@dataclass(frozen=True, kw_only=True)
class CheckedBuild:
    """One build of the check, as the verdict names it."""

    name: str
    role: str  # control, experiment, control-again, culprit-search
    variations: tuple[str, ...]
    status: str
    sha256: str | None  # the output set's digest (None: it built nothing)
    image: str
    source_sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "variations": list(self.variations),
            "status": self.status,
            "digest": f"sha256:{self.sha256}" if self.sha256 else None,
            "image": self.image,
            "sourceDigest": f"sha256:{self.source_sha256}",
        }

    @classmethod
    def from_fields(cls, item: Fields) -> CheckedBuild:
        return cls(
            name=item.text("name", required=True) or "",
            role=item.text("role", required=True) or "",
            variations=item.texts("variations") or (),
            status=item.text("status", required=True) or "",
            sha256=_digest(item, "digest"),
            image=item.text("image", required=True) or "",
            source_sha256=_digest(item, "sourceDigest") or "",
        )


def _digest(item: Fields, key: str) -> str | None:
    text = item.text(key)
    if text is None:
        return None
    digest = Fields({key: text.removeprefix("sha256:")}, item.where).sha256(key)
    if not text.startswith("sha256:"):
        raise PredicateError(f"{item.where}.{key}: expected sha256:<64 hex digits>")
    return digest


@dataclass(frozen=True, kw_only=True)
class CheckPredicate(Predicate):
    """The verdict of one check; ``finished_on`` is the checker's clock when it ended.

    Only ``reproducible`` is required of a statement read; what else it states must be
    well-formed (hermetic writes every field).
    """

    reproducible: bool
    culprits: tuple[str, ...] = ()
    variations: tuple[str, ...] = ()
    skipped: Mapping[str, str] = field(default_factory=dict)  # variation: why not varied
    seed: int | None = None
    builds: tuple[CheckedBuild, ...] = ()
    differences: tuple[Mapping[str, Any], ...] = ()  # compare.Difference.to_json()
    report_digests: Mapping[str, str] = field(default_factory=dict)  # html, text, json
    checker_id: str = ""
    hermetic_version: str | None = None
    finished_on: datetime | None = None
    predicate_type: ClassVar[str] = CHECK_PREDICATE

    @property
    def verdict(self) -> CheckVerdict:
        return CheckVerdict.REPRODUCIBLE if self.reproducible else CheckVerdict.NOT_REPRODUCIBLE

    def to_dict(self) -> dict[str, Any]:
        return {
            "reproducible": self.reproducible,
            "culprits": list(self.culprits),
            "variations": list(self.variations),
            "skippedVariations": dict(self.skipped),
            "seed": self.seed,
            "builds": [build.to_dict() for build in self.builds],
            "differences": [dict(item) for item in self.differences],
            "reportDigests": {kind: {"sha256": d} for kind, d in self.report_digests.items()},
            "checker": {"id": self.checker_id, "version": self.hermetic_version},
            "finishedOn": format_time(self.finished_on) if self.finished_on else None,
        }

    @classmethod
    def from_dict(cls, predicate: Any) -> CheckPredicate:
        """Raises: PredicateError: a field is missing or malformed."""
        fields = Fields(predicate, "predicate")
        reproducible = fields.flag("reproducible")
        seed = fields.integer("seed")
        finished = fields.time("finishedOn")
        checker = fields.table("checker") or Fields({}, "predicate.checker")
        if reproducible is None:
            raise PredicateError("predicate.reproducible: a check verdict says true or false")
        skipped = fields.mapping("skippedVariations") or {}
        if not all(isinstance(v, str) for v in skipped.values()):
            raise PredicateError("predicate.skippedVariations: expected reasons (strings)")
        digests = fields.table("reportDigests") or Fields({}, "predicate.reportDigests")
        report_digests = {}
        for kind in digests.document:
            table = digests.table(str(kind))
            digest = table.sha256("sha256") if table is not None else None
            if digest is None:
                raise PredicateError(f"{digests.where}.{kind}: expected a sha256")
            report_digests[str(kind)] = digest
        return cls(
            reproducible=reproducible,
            culprits=fields.texts("culprits") or (),
            variations=fields.texts("variations") or (),
            skipped=skipped,
            seed=seed,
            builds=tuple(CheckedBuild.from_fields(item) for item in fields.tables("builds")),
            differences=tuple(item.document for item in fields.tables("differences")),
            report_digests=report_digests,
            checker_id=checker.text("id") or "",
            hermetic_version=checker.text("version"),
            finished_on=finished,
        )
