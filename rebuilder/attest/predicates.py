"""What the gate and the nodes read of a statement, as typed values: subjects, the facts of
a SLSA provenance (image, source, spec, hermeticity), and statement times.

Every reader validates: a wrong type, a negative count, an unparsable time or a malformed
digest raises :class:`PredicateError` naming the field, so a hostile statement is one
invalid attestation with a reason, never a crash. An absent field is ``None`` (unknown),
which the gate counts against admission wherever it matters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from rebuilder.attest.statement import StatementError
from rebuilder.attest.untrusted_json import shown

CLOCK_SKEW = timedelta(minutes=5)
"""How far a statement's time may lie ahead of the reader's clock and still count."""

MAX_TEXT = 4096  # names, URIs, paths: longer is not a value hermetic writes
MAX_ITEMS = 10_000  # subjects, dependencies, gaps, argv
_SHA256 = re.compile(r"[0-9a-f]{64}")
_GIT_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # sha1 or sha256 repositories


class PredicateError(StatementError):
    """A statement's field has the wrong type or an impossible value."""


class Fields:
    """Typed, validated access to one JSON object of an untrusted statement."""

    def __init__(self, document: Any, where: str) -> None:
        if not isinstance(document, Mapping):
            raise PredicateError(f"{where}: expected an object, got {type(document).__name__}")
        self.document = document
        self.where = where

    def _fail(self, key: str, reason: str) -> PredicateError:
        return PredicateError(f"{self.where}.{key}: {reason}")

    def has(self, key: str) -> bool:
        return self.document.get(key) is not None

    def table(self, key: str) -> Fields | None:
        value = self.document.get(key)
        return None if value is None else Fields(value, f"{self.where}.{key}")

    def tables(self, key: str) -> list[Fields]:
        value = self.document.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or len(value) > MAX_ITEMS:
            raise self._fail(key, f"expected a list of at most {MAX_ITEMS} objects")
        return [Fields(item, f"{self.where}.{key}[{i}]") for i, item in enumerate(value)]

    def text(self, key: str, *, required: bool = False) -> str | None:
        value = self.document.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str) or len(value) > MAX_TEXT:
            raise self._fail(key, f"expected a string of at most {MAX_TEXT} characters")
        return value

    def texts(self, key: str) -> tuple[str, ...] | None:
        value = self.document.get(key)
        if value is None:
            return None
        if (
            not isinstance(value, list)
            or len(value) > MAX_ITEMS
            or not all(isinstance(v, str) and len(v) <= MAX_TEXT for v in value)
        ):
            raise self._fail(key, "expected a list of strings")
        return tuple(value)

    def count(self, key: str) -> int | None:
        """A non-negative integer (a bool, a float, -1 or NaN is not a count)."""
        value = self.document.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self._fail(key, f"expected a count (an integer >= 0), got {shown(value)}")
        return value

    def flag(self, key: str) -> bool | None:
        value = self.document.get(key)
        if value is None:
            return None
        if not isinstance(value, bool):
            raise self._fail(key, f"expected true or false, got {shown(value)}")
        return value

    def sha256(self, key: str) -> str | None:
        value = self.document.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not _SHA256.fullmatch(value):
            raise self._fail(key, f"expected 64 lower-case hex digits, got {shown(value)}")
        return value

    def time(self, key: str) -> datetime | None:
        """An RFC 3339 time with its zone (a zoneless time is no knowable time)."""
        value = self.document.get(key)
        if value is None:
            return None
        return parse_time(value, f"{self.where}.{key}")


EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
"""Statement times are in [EARLIEST, LATEST): others are no time anyone signs in earnest,
and converting them can overflow Python's calendar (``9999-12-31T23:59:59-23:59``)."""


def parse_time(value: object, where: str) -> datetime:
    """An RFC 3339 / ISO 8601 time with a zone, in UTC, between 1970 and 9000.

    Raises:
        PredicateError: not a string, not a time, no zone, or outside those years.
    """
    if not isinstance(value, str) or len(value) > 64:
        raise PredicateError(f"{where}: expected an RFC 3339 time, got {shown(value)}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise PredicateError(f"{where}: not an RFC 3339 time: {shown(value)}") from None
    if parsed.tzinfo is None:
        raise PredicateError(f"{where}: {shown(value)} has no time zone: no knowable time")
    try:
        utc = parsed.astimezone(UTC)
    except OverflowError:  # the offset carries it past year 1 or 9999
        utc = None
    if utc is None or not EARLIEST <= utc < LATEST:
        raise PredicateError(
            f"{where}: {shown(value)} is not a time between {EARLIEST.year} and {LATEST.year}"
        )
    return utc


def format_time(value: datetime) -> str:
    """UTC, to the second, as every statement of ours writes it."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Subject:
    name: str
    sha256: str


def subjects_of(statement: Mapping[str, Any]) -> tuple[Subject, ...]:
    """The statement's subjects that carry a sha256 (others cannot name an artifact here).

    Raises:
        PredicateError: a subject is malformed.
    """
    found = []
    for item in Fields(statement, "statement").tables("subject"):
        name = item.text("name") or ""
        digest = item.table("digest")
        sha256 = digest.sha256("sha256") if digest is not None else None
        if sha256 is not None:
            found.append(Subject(name, sha256))
    return tuple(found)


@dataclass(frozen=True, kw_only=True)
class SourceRef:
    """What a build was made from: hermetic's source tree digest and, when the builder saw
    that the tree is exactly a git commit's content, that commit and its repository."""

    sha256: str
    git_commit: str | None = None
    uri: str | None = None  # git+<repository>@<commit>[#<subdirectory>]

    def __post_init__(self) -> None:
        if not _SHA256.fullmatch(self.sha256):
            raise PredicateError(f"source tree digest {shown(self.sha256)} is not 64 hex digits")
        if self.git_commit is not None and not _GIT_COMMIT.fullmatch(self.git_commit):
            raise PredicateError(f"git commit {shown(self.git_commit)} is not a commit id")

    def to_dependency(self) -> dict[str, Any]:
        """As a SLSA resolved dependency named ``source``."""
        digest = {"sha256": self.sha256}
        if self.git_commit is not None:
            digest["gitCommit"] = self.git_commit
        found: dict[str, Any] = {"name": "source", "digest": digest}
        if self.uri is not None:
            found["uri"] = self.uri
        return found

    @classmethod
    def from_dependency(cls, dependency: Fields) -> SourceRef:
        digest = dependency.table("digest")
        tree = digest.sha256("sha256") if digest is not None else None
        if digest is None or tree is None:
            raise PredicateError(f"{dependency.where}: the source names no sha256 tree digest")
        commit = digest.text("gitCommit")
        return cls(sha256=tree, git_commit=commit, uri=dependency.text("uri"))


@dataclass(frozen=True, kw_only=True)
class Hermeticity:
    """The ``hermeticity`` byproduct's evidence the gate decides on (None: not recorded).

    ``network_attempts`` counts attempts to reach outside the build's own network
    namespace; ``loopback_attempts`` those inside it (recorded since loopback is told apart).
    """

    network_attempts: int | None = None
    loopback_attempts: int | None = None
    trace_complete: bool | None = None
    trace_gaps: tuple[str, ...] | None = None

    @classmethod
    def from_annotations(cls, annotations: Fields) -> Hermeticity:
        return cls(
            network_attempts=annotations.count("networkAttempts"),
            loopback_attempts=annotations.count("loopbackAttempts"),
            trace_complete=annotations.flag("traceComplete"),
            trace_gaps=annotations.texts("traceGaps"),
        )

    @property
    def complete(self) -> bool:
        """The trace says it saw everything: complete, and no gap recorded."""
        return self.trace_complete is True and not self.trace_gaps


@dataclass(frozen=True, kw_only=True)
class BuildFacts:
    """What a SLSA provenance of hermetic's says about one build, validated."""

    image_sha256: str | None
    source: SourceRef | None
    spec_sha256: str | None
    command: tuple[str, ...] | None
    hermeticity: Hermeticity | None
    finished_on: datetime | None

    @classmethod
    def from_predicate(cls, predicate: Any) -> BuildFacts:
        """Read a SLSA Provenance v1 predicate.

        Raises:
            PredicateError: a field the gate reads is malformed.
        """
        fields = Fields(predicate, "predicate")
        definition = fields.table("buildDefinition") or Fields({}, "predicate.buildDefinition")
        run = fields.table("runDetails") or Fields({}, "predicate.runDetails")
        image = source = spec = None
        for dependency in definition.tables("resolvedDependencies"):
            name = dependency.text("name")
            digest = dependency.table("digest")
            if name == "image" and digest is not None:
                image = _once(image, digest.sha256("sha256"), dependency)
            elif name == "source":
                source = _once(source, SourceRef.from_dependency(dependency), dependency)
            elif name == "spec" and digest is not None:
                spec = _once(spec, digest.sha256("sha256"), dependency)
        hermeticity = None
        for byproduct in run.tables("byproducts"):
            if byproduct.text("name") == "hermeticity":
                annotations = byproduct.table("annotations")
                found = Hermeticity.from_annotations(
                    annotations or Fields({}, f"{byproduct.where}.annotations")
                )
                hermeticity = _once(hermeticity, found, byproduct)
        metadata = run.table("metadata")
        parameters = definition.table("externalParameters")
        spec_document = parameters.table("spec") if parameters is not None else None
        build = spec_document.table("build") if spec_document is not None else None
        return cls(
            image_sha256=image,
            source=source,
            spec_sha256=spec,
            command=build.texts("command") if build is not None else None,
            hermeticity=hermeticity,
            finished_on=metadata.time("finishedOn") if metadata is not None else None,
        )


T = TypeVar("T")


def _once(previous: T | None, value: T | None, where: Fields) -> T | None:
    """A fact stated twice could be read either way: it is an error, not a choice."""
    if previous is not None:
        raise PredicateError(f"{where.where}: stated a second time")
    return value
