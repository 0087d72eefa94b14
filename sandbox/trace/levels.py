"""How much a build is traced."""

from __future__ import annotations

from enum import StrEnum


class TraceLevel(StrEnum):
    """``off``: nothing; ``standard``: the default, within 15% of an untraced build;
    ``deep``: also every file opened anywhere (image files too), with its pid."""

    OFF = "off"
    STANDARD = "standard"
    DEEP = "deep"
