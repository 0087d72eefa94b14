"""Evidence in the outputs themselves: varied values a build copied into a differing
file, and modes that changed. Strong evidence makes a variation a suspect, which
the culprit search tests on its own first."""

from __future__ import annotations

import mmap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rebuilder.compare import Difference
from rebuilder.variations import BY_NAME
from sandbox.environment import BuildEnvironment

MAX_SCANNED_BYTES = 1024**3  # larger outputs are not searched
_MAX_COUNT = 1000
_MIN_MARK = 3  # shorter values would match by chance
MODE_VARIATIONS = ("umask",)  # what changes the mode of a file a build creates
MARK_NOUNS = {
    "environment": "the varied environment variable",
    "build_path": "the build path",
    "hostname": "the host name",
    "user_group": "the user name",
    "home": "HOME",
    "locales": "the locale name",
    "timezone": "the TZ value",
}


@dataclass(frozen=True, kw_only=True)
class Embedded:
    """A value one variation set, found inside an output."""

    variation: str
    value: str
    count: int  # occurrences, up to 1000

    def to_json(self) -> dict[str, Any]:
        return {"variation": self.variation, "value": self.value, "count": self.count}


def marks(variations: Iterable[str], environment: BuildEnvironment) -> dict[str, tuple[str, ...]]:
    """The distinctive values each variation gave this build."""
    found = {}
    for name in variations:
        values = tuple(v for v in BY_NAME[name].marks(environment) if len(v) >= _MIN_MARK)
        if values:
            found[name] = values
    return found


def embedded_in(path: Path, wanted: Mapping[str, tuple[str, ...]]) -> tuple[Embedded, ...]:
    """Which of the wanted values occur in a regular file (links and huge files: none)."""
    if path.is_symlink() or not path.is_file():
        return ()
    size = path.stat().st_size
    if size == 0 or size > MAX_SCANNED_BYTES:
        return ()
    found = []
    with path.open("rb") as stream, mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as data:
        for variation, values in wanted.items():
            for value in values:
                count = _count(data, value.encode())
                if count:
                    found.append(Embedded(variation=variation, value=value, count=count))
    return tuple(found)


def _count(data: mmap.mmap, needle: bytes) -> int:
    count, start = 0, data.find(needle)
    while start >= 0 and count < _MAX_COUNT:
        count += 1
        start = data.find(needle, start + 1)
    return count


def suspects(
    varied: tuple[str, ...],
    found: Iterable[Difference],
    embedded: Iterable[Embedded],
) -> tuple[str, ...]:
    """Variations the outputs point at, in registry order."""
    named = {item.variation for item in embedded}
    if any(d.mode_changed for d in found):
        named.update(MODE_VARIATIONS)
    return tuple(name for name in varied if name in named)
