from __future__ import annotations

import pytest

from sandbox.units import format_size, parse_duration, parse_size

SIZES = [
    ("512", 512),
    (512, 512),
    ("1KiB", 1024),
    ("64MiB", 64 * 1024**2),
    ("4GiB", 4 * 1024**3),
    ("10GB", 10 * 1000**3),
    ("1.5GiB", int(1.5 * 1024**3)),
    ("100 MB", 100 * 1000**2),
    ("2tib", 2 * 1024**4),
]
BAD_SIZES = ["", "lots", "10XB", "-1MiB", "0", 0, True, "1.2.3GiB", None, [1]]

DURATIONS = [
    ("30m", 1800),
    ("1h30m", 5400),
    ("90s", 90),
    ("1d", 86400),
    ("1d12h", 129600),
    ("1h", 3600),
    ("2h3m4s", 7384),
    (45, 45),
]
BAD_DURATIONS = ["", "30", "8d", "m", "-5s", 0, "0s", True, "30 minutes", None]


@pytest.mark.parametrize(("text", "expected"), SIZES)
def test_sizes(text: object, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", BAD_SIZES)
def test_bad_sizes_are_refused(text: object) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


@pytest.mark.parametrize(("text", "expected"), DURATIONS)
def test_durations(text: object, expected: int) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", BAD_DURATIONS)
def test_bad_durations_are_refused(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_format_size() -> None:
    assert format_size(512) == "512B"
    assert format_size(4 * 1024**3) == "4GiB"
    assert format_size(1536) == "1.5KiB"
