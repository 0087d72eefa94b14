"""JSON from someone else: parsed strictly and within bounds, so that a hostile document
is an error with a reason, never a crash, a hang or two readings of one text."""

from __future__ import annotations

import json
import math
from typing import Any

from rebuilder.errors import UserError

MAX_JSON_BYTES = 16 * 1024**2
MAX_DEPTH = 64  # hermetic's own documents nest about 8 deep
MAX_SHOWN = 80  # characters of a hostile value quoted in a reason


class UntrustedJsonError(UserError):
    """A document is not JSON we accept (too large, too deep, NaN, duplicate keys…)."""


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # {"a": 1, "a": 2} reads as 1 to one verifier and 2 to another: refuse it
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"key {shown(key)} appears twice in one object")
            seen.add(key)
    return document


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses as infinity
        raise ValueError(f"{shown(text)} is not a finite number")
    return value


def _depth_within(document: Any, limit: int) -> bool:
    stack = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > limit:
                return False
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return True


def parse_json(
    data: bytes | str, where: str, *, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_DEPTH
) -> Any:
    """Parse untrusted JSON.

    Refused: more than ``max_bytes``, nesting deeper than ``max_depth``, ``NaN`` and
    ``Infinity``, an object with a key twice, text that is not UTF-8 JSON.

    Raises:
        UntrustedJsonError: naming ``where`` and the reason.
    """
    if len(data) > max_bytes:
        raise UntrustedJsonError(f"{where}: {len(data)} bytes; at most {max_bytes} are read")
    try:
        document = json.loads(
            data, parse_constant=_no_constants, parse_float=_finite, object_pairs_hook=_unique_keys
        )
    except RecursionError:
        raise UntrustedJsonError(f"{where}: nested deeper than {max_depth} levels") from None
    except (UnicodeDecodeError, ValueError) as e:  # JSONDecodeError is a ValueError
        raise UntrustedJsonError(f"{where}: not JSON we accept: {shown(str(e), 200)}") from None
    if not _depth_within(document, max_depth):
        raise UntrustedJsonError(f"{where}: nested deeper than {max_depth} levels")
    return document


def shown(value: object, limit: int = MAX_SHOWN) -> str:
    """``repr(value)``, cut to ``limit`` characters: hostile values go into reasons."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}…"
