"""Hypothesis strategies shared by the property tests of every parser a user or a client
feeds: TOML documents (with our keys and plausible values mixed with anything at all),
and a small TOML writer for them."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import strategies as st

# Strings that the parsers give meaning to, beside arbitrary text.
MEANINGFUL = st.sampled_from(
    [
        "",
        ".",
        "..",
        "../x",
        "/abs",
        "a/../../b",
        "x\0y",
        "hermetic-minimal",
        "debian-bookworm",
        "repo@sha256:" + "a" * 64,
        "repo:tag",
        "repo@sha256:xyz",
        "1h30m",
        "90s",
        "0s",
        "99999999999999999999h",
        "4GiB",
        "1.5MB",
        "0B",
        "1e999",
        "NaN",
        "9" * 400 + "TiB",
        "-1",
        "http://[::1",
        "https://example.org/a.tar.gz",
        "file:///etc/passwd",
        "ftp://x",
        "a" * 64,
        "A" * 64,
        "sha256:" + "b" * 64,
        "SOURCE_DATE_EPOCH",
        "PATH",
    ]
)
TEXT = st.one_of(MEANINGFUL, st.text(max_size=40))
SCALARS = st.one_of(
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
)
ANYTHING: st.SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A plausible value most of the time, anything at all otherwise."""
    return st.one_of(strategy, strategy, strategy, ANYTHING)


def table(
    required: dict[str, st.SearchStrategy[Any]], optional: dict[str, st.SearchStrategy[Any]]
) -> st.SearchStrategy[dict[str, Any]]:
    """A TOML table with our keys (required ones usually there) and, sometimes, keys of no
    meaning."""
    present = st.fixed_dictionaries(
        {key: maybe(value) for key, value in required.items()},
        optional={key: maybe(value) for key, value in optional.items()},
    )
    sparse = st.fixed_dictionaries(
        {}, optional={key: maybe(value) for key, value in {**required, **optional}.items()}
    )
    known = st.one_of(present, present, present, sparse)
    extra = st.dictionaries(TEXT, ANYTHING, min_size=1, max_size=2)
    return st.one_of(known, known, known, st.builds(lambda a, b: {**b, **a}, known, extra))


def toml_value(value: Any) -> str:
    """One TOML value (inline: arrays and inline tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string, or a decode error for bad escapes
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def toml_document(document: dict[str, Any]) -> str:
    """A TOML text of a document (top-level keys as ``key = value`` lines)."""
    return "".join(f"{json.dumps(key)} = {toml_value(value)}\n" for key, value in document.items())


# --- hermetic.toml -------------------------------------------------------------------------

INPUT = table(
    {
        "url": st.sampled_from(["https://example.org/x.tar.gz", "file:///x", "http://[::1"]),
        "sha256": st.just("c" * 64),
        "dest": st.sampled_from(["vendor/x.tar.gz", "../x", "/x", "x"]),
    },
    {},
)
BUILD = table(
    {
        "command": st.one_of(
            st.lists(st.sampled_from(["sh", "-c", "make", "a=b", ""]), min_size=1, max_size=3),
            st.lists(TEXT, max_size=3),
        ),
        "outputs": st.one_of(
            st.lists(st.sampled_from(["out", "dist/*.tar.gz", "a/b"]), min_size=1, max_size=3),
            st.lists(TEXT, max_size=3),
        ),
    },
    {
        "image": st.one_of(st.sampled_from(["debian-bookworm", "r@sha256:" + "d" * 64]), TEXT),
        "env": st.dictionaries(TEXT, TEXT, max_size=3),
        "source_date_epoch": st.integers(min_value=-(2**70), max_value=2**70),
    },
)
SIZES = st.one_of(st.sampled_from(["4GiB", "1.5MB", "512"]), TEXT, st.integers())
LIMITS = table(
    {},
    {
        "timeout": st.one_of(st.sampled_from(["30m", "1h30m", "90s"]), TEXT, st.integers()),
        "memory": SIZES,
        "disk": SIZES,
        "log": SIZES,
        "pids": st.integers(min_value=-(2**70), max_value=2**70),
    },
)
SPECS = table({"build": BUILD}, {"inputs": st.lists(INPUT, max_size=2), "limits": LIMITS})
