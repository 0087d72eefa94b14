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
_DURATION_RE = re.compile(r"^(?:(\d{1,30})h)?(?:(\d{1,30})m)?(?:(\d{1,30})s)?$")
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


def parse_duration(value: object) -> int:
    """Parse a duration into whole seconds.

    Args:
        value: an int (seconds) or a string such as "30m", "1h30m", "45s".

    Returns:
        The duration in seconds, at least 1.

    Raises:
        ValueError: with a reason fit for a spec error message.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as '30m', got {value!r}")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str) and value and (match := _DURATION_RE.match(value.strip())):
        hours, minutes, secs = (int(part) if part else 0 for part in match.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    else:
        raise ValueError(f"expected a duration such as '30m', '1h30m' or '90s', got {value!r}")
    if seconds < 1:
        raise ValueError(f"duration must be at least 1s, got {value!r}")
    if seconds > MAX_DURATION_S:
        raise ValueError(f"duration must be at most 7 days ({MAX_DURATION_S}s), got {value!r}")
    return seconds


def format_size(size: int) -> str:
    """Render bytes in the largest IEC unit that keeps the number readable."""
    for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor:
            return f"{size / factor:.3g}{unit}"
    return f"{size}B"
