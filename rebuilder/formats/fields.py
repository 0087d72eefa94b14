"""Strict, typed reading of untrusted statement JSON: fields, subjects and times.

Every reader validates: a wrong type, a negative count, an unparsable time or a malformed
digest raises :class:`PredicateError` naming the field, so a hostile statement is one
invalid attestation with a reason, never a crash. An absent field is ``None`` (unknown),
which the gate counts against admission wherever it matters.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, TypeVar

from rebuilder.attest.untrusted_json import shown
from rebuilder.errors import UserError
from sandbox.digests import is_sha256

CLOCK_SKEW = timedelta(minutes=5)
"""How far a statement's time may lie ahead of the reader's clock and still count."""

MAX_TEXT = 4096  # names, URIs, paths: longer is not a value hermetic writes
MAX_ITEMS = 10_000  # subjects, dependencies, gaps, argv


class StatementError(UserError):
    """A statement is not a valid in-toto Statement v1 (or its predicate is invalid)."""


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

    def integer(self, key: str) -> int | None:
        """Any integer (an exit code may be negative; a bool or a float is no integer)."""
        value = self.document.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._fail(key, f"expected an integer, got {shown(value)}")
        return value

    def mapping(self, key: str) -> dict[str, Any] | None:
        """A free-form object (the spec as given, limits, resources), as it is."""
        value = self.document.get(key)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise self._fail(key, f"expected an object, got {shown(value)}")
        return dict(value)

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
        if not isinstance(value, str) or not is_sha256(value):
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
    """One artifact a statement is about, named by its sha256."""

    name: str
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "digest": {"sha256": self.sha256}}


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
class Statement:
    """An in-toto Statement v1 as read (the in-toto models validated it): its predicate
    type, the subjects named by a sha256, and the predicate, which the class of its type
    reads (:mod:`rebuilder.formats`); ``document`` is kept for reports and exact checks."""

    predicate_type: str
    subjects: tuple[Subject, ...]
    predicate: Any
    document: Mapping[str, Any]

    @classmethod
    def from_dict(cls, document: Any) -> Statement:
        """Raises: PredicateError: no predicate type, or a malformed subject."""
        fields = Fields(document, "statement")
        return cls(
            predicate_type=fields.text("predicateType", required=True) or "",
            subjects=subjects_of(document),
            predicate=document.get("predicate"),
            document=document,
        )

    @property
    def outputs(self) -> tuple[tuple[str, str], ...]:
        """(name, sha256) of its subjects, sorted, for comparison."""
        return tuple(sorted((item.name, item.sha256) for item in self.subjects))


class Predicate(ABC):
    """A typed predicate: its type URI, its document, and a statement of it."""

    predicate_type: ClassVar[str]

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """The predicate as it is signed."""

    def statement(self, subjects: Sequence[Subject]) -> bytes:
        """The payload of an in-toto Statement about ``subjects`` with this predicate.

        Raises:
            StatementError: no subjects, or what the in-toto models refuse.
        """
        from rebuilder.attest.statement import make_statement  # the in-toto models: heavy

        return make_statement(subjects, self.predicate_type, self.to_dict())


def exact_subjects(statement: Mapping[str, Any]) -> tuple[Subject, ...]:
    """Subjects that are each exactly a name and a sha256, as hermetic writes them.

    Raises:
        PredicateError: a subject with anything else (a sha512 alone, a second digest
            algorithm, a field of its own), or without a name.
    """
    found = []
    for item in Fields(statement, "statement").tables("subject"):
        digest = item.table("digest")
        name = item.text("name")
        if set(item.document) != {"name", "digest"} or digest is None or name is None:
            raise PredicateError(f"{item.where}: a subject is exactly a name and a digest")
        if set(digest.document) != {"sha256"}:
            raise PredicateError(f"{digest.where}: exactly one digest, sha256, is named")
        found.append(Subject(name, digest.sha256("sha256") or ""))
    return tuple(found)


T = TypeVar("T")


def once(previous: T | None, value: T | None, where: Fields) -> T | None:
    """A fact stated twice could be read either way: it is an error, not a choice."""
    if previous is not None:
        raise PredicateError(f"{where.where}: stated a second time")
    return value
