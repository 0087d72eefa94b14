"""Strict parsers for the sizes and durations a spec may contain.

Sizes take IEC (KiB, MiB, GiB, TiB) or SI (kB, MB, GB, TB) units, or plain bytes, up to
1 PiB; durations take h/m/s parts ("1h30m", "90s") or plain seconds, up to 7 days. Anything
else is refused: a number no host can honour is an error, not an overflow later.
"""

from __future__ import annotations

import re
from fractions import Fraction

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*(\d{1,30}(?:\.\d{1,30})?)\s*([a-zA-Z]*)\s*$")
_DURATION_RE = re.compile(
    r"^(?:(\d{1,30})\s*d)?(?:(\d{1,30})\s*h)?(?:(\d{1,30})\s*m)?(?:(\d{1,30})\s*s)?$"
)
_UNIT_SECONDS = (86400, 3600, 60, 1)
MAX_SIZE = 1024**5  # 1 PiB: above any machine's memory or disk, below every rlimit's range
MAX_DURATION_S = 7 * 86400  # a week: longer than any build a rebuilder should wait for


def parse_size(value: object) -> int:
    """Parse a size into bytes.

    Args:
        value: an int (bytes) or a string such as "64MiB", "10GB", "512".

    Returns:
        The size in bytes, at least 1.

    Raises:
        ValueError: with a reason fit for a spec error message.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as '4GiB', got {value!r}")
    if isinstance(value, int):
        number, unit = Fraction(value), ""
    elif isinstance(value, str) and (match := _SIZE_RE.match(value)):
        number, unit = Fraction(match.group(1)), match.group(2).lower()
    else:
        raise ValueError(f"expected a size such as '4GiB' or '500MB', got {value!r}")
    if unit not in _SIZE_UNITS:
        raise ValueError(
            f"unknown size unit {unit!r} in {value!r}; use B, kB, MB, GB, TB, KiB, MiB, GiB or TiB"
        )
    size = int(number * _SIZE_UNITS[unit])  # exact: no float rounds 2.5GiB or overflows
    if size < 1:
        raise ValueError(f"size must be at least 1 byte, got {value!r}")
    if size > MAX_SIZE:
        raise ValueError(f"size must be at most 1PiB ({MAX_SIZE} bytes), got {value!r}")
    return size


def parse_duration(
    value: object, *, maximum: int | None = MAX_DURATION_S, numbers: bool = True
) -> int:
    """Parse a duration into whole seconds: the one grammar of specs, policies and options.

    Args:
        value: a string such as "30m", "1h30m", "45s", "7d"; an int (seconds) if ``numbers``.
        maximum: the most seconds accepted (None: any).
        numbers: whether a bare integer counts as seconds.

    Returns:
        The duration in seconds, at least 1.

    Raises:
        ValueError: with a reason fit for a spec or policy error message.
    """
    example = "expected a duration such as '30m', '1h30m', '90s' or '7d'"
    if isinstance(value, bool) or (isinstance(value, int) and not numbers):
        raise ValueError(f"{example}, got {value!r}")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str) and value.strip() and (match := _DURATION_RE.match(value.strip())):
        seconds = sum(
            int(part) * unit
            for part, unit in zip(match.groups(), _UNIT_SECONDS, strict=True)
            if part
        )
    else:
        raise ValueError(f"{example}, got {value!r}")
    if seconds < 1:
        raise ValueError(f"duration must be at least 1s, got {value!r}")
    if maximum is not None and seconds > maximum:
        raise ValueError(f"duration must be at most {maximum}s, got {value!r}")
    return seconds


def format_size(size: int) -> str:
    """Render bytes in the largest IEC unit that keeps the number readable."""
    for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor:
            return f"{size / factor:.3g}{unit}"
    return f"{size}B"
