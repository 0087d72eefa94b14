"""Comparing two builds' outputs: which paths differ, and how."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sandbox.result import BuildResult


@dataclass(frozen=True, kw_only=True)
class Difference:
    """One output path whose content or mode differs between two builds."""

    path: str
    control: str | None  # sha256 (hex) and mode, None when the output is missing
    other: str | None

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "control": self.control, "experiment": self.other}


def _files(result: BuildResult) -> dict[str, str]:
    return {item.path: f"{item.sha256} {item.mode:04o}" for item in result.outputs}


def differences(control: BuildResult, other: BuildResult) -> list[Difference]:
    """Paths whose sha256 or mode differ (a build that did not finish differs entirely)."""
    ours, theirs = _files(control), _files(other)
    return [
        Difference(path=path, control=ours.get(path), other=theirs.get(path))
        for path in sorted(set(ours) | set(theirs))
        if ours.get(path) != theirs.get(path)
    ]


def same(control: BuildResult, other: BuildResult) -> bool:
    """Whether another build reproduced the control bit for bit."""
    return other.built and other.digest == control.digest
