"""Markers and shared fixtures.

Markers: ``integration`` (real podman, mmdebstrap, as an unprivileged user) and
``slow`` (a minute or more). Unit tests need neither.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Property tests: a few hundred examples per parser, the same ones on every run (a CI run
# must not pass or fail by chance), no time limit per example (no timing thresholds), no
# example database (the checkout may be read-only; found failures become @example lines).
settings.register_profile(
    "hermetic",
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "hermetic"))

REPO = Path(__file__).resolve().parent.parent
HERMETIC = Path(sys.executable).parent / "hermetic"  # the installed command, as users run it


def wait_until(
    condition: Callable[[], object], what: str, timeout_s: float = 600, interval_s: float = 1
) -> None:
    """Poll ``condition`` until it holds; fail the test naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout_s}s for {what}"
        time.sleep(interval_s)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: uses real podman as an unprivileged user")
    config.addinivalue_line("markers", "slow: takes a minute or more (kept in the default run)")
    config.stash[_SERVICE_BEFORE] = _shared_service_pid()


def pytest_unconfigure(config: pytest.Config) -> None:
    """A run leaves nothing of its own: stop the shared podman service if the run started
    it (one that ran before the run is the user's and keeps running)."""
    if _shared_service_pid() not in (None, config.stash.get(_SERVICE_BEFORE, None)):
        from sandbox.podman_api import shared_service

        shared_service().stop()


_SERVICE_BEFORE = pytest.StashKey[int | None]()


def _shared_service_pid() -> int | None:
    if os.geteuid() == 0:
        return None  # the integration tests refuse root; root's service is not ours
    from sandbox.podman_api import shared_service

    return shared_service().pid()


def write_spec(directory: Path, text: str) -> Path:
    """Write a hermetic.toml into ``directory`` and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "hermetic.toml"
    path.write_text(text)
    return path
