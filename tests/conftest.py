"""Markers and shared fixtures.

Markers: ``integration`` (real podman, mmdebstrap, as an unprivileged user) and
``slow`` (a minute or more). Unit tests need neither.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HERMETIC = Path(sys.executable).parent / "hermetic"  # the installed command, as users run it


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: uses real podman as an unprivileged user")
    config.addinivalue_line("markers", "slow: takes a minute or more (kept in the default run)")


def write_spec(directory: Path, text: str) -> Path:
    """Write a hermetic.toml into ``directory`` and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "hermetic.toml"
    path.write_text(text)
    return path
