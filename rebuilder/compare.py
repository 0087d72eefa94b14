"""Comparing two builds' outputs: which paths differ, and how."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sandbox.outputs import OutputFile
from sandbox.result import BuildResult


@dataclass(frozen=True, kw_only=True)
class Difference:
    """One output path whose content or executable bit differs between two builds."""

    path: str
    control: OutputFile | None  # None: the build did not produce it
    other: OutputFile | None

    @property
    def kind(self) -> str:
        """``missing`` (one side lacks it), ``mode`` (same content) or ``content``."""
        if self.control is None or self.other is None:
            return "missing"
        return "mode" if self.control.sha256 == self.other.sha256 else "content"

    @property
    def mode_changed(self) -> bool:
        """Both builds made it, one executable and one not (what the digest counts)."""
        return (
            self.control is not None
            and self.other is not None
            and self.control.digest_mode != self.other.digest_mode
        )

    def to_json(self) -> dict[str, Any]:
        def side(item: OutputFile | None) -> dict[str, Any] | None:
            return None if item is None else {"sha256": item.sha256, "mode": f"{item.mode:04o}"}

        return {
            "path": self.path,
            "kind": self.kind,
            "control": side(self.control),
            "experiment": side(self.other),
        }


def differences(control: BuildResult, other: BuildResult) -> list[Difference]:
    """Paths whose kind, content or executable bit differ, as the output digest sees
    them (a build that did not finish has none); other mode bits do not count."""
    ours = {item.path: item for item in control.outputs}
    theirs = {item.path: item for item in other.outputs}

    def identity(item: OutputFile | None) -> tuple[str, int, str] | None:
        return item.identity if item is not None else None

    return [
        Difference(path=path, control=ours.get(path), other=theirs.get(path))
        for path in sorted(set(ours) | set(theirs))
        if identity(ours.get(path)) != identity(theirs.get(path))
    ]


def same(control: BuildResult, other: BuildResult) -> bool:
    """Whether another build reproduced the control bit for bit."""
    return other.built and other.digest == control.digest
