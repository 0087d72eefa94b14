"""GNU hello 2.10, the real-world fixture: reproducible, and the result runs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from sandbox.result import BuildStatus
from tests.integration.conftest import Builder, hello_spec, log_of


@pytest.mark.slow
def test_hello_built_twice_gives_identical_digests(
    tmp_path: Path,
    bookworm_image: str,
    hello_tarball: Path,
    build: Builder,
) -> None:
    spec = hello_spec(hello_tarball)
    first = build(spec, name="first")
    second = build(spec, name="second")
    assert first.status is BuildStatus.BUILT, log_of(first)
    assert second.status is BuildStatus.BUILT, log_of(second)
    assert first.digest == second.digest
    assert [o.path for o in first.outputs] == ["hello-2.10/hello"]
    assert first.outputs == second.outputs
    assert first.source_digest == second.source_digest
    assert not second.inputs[0].fetched, "the second build fetches nothing"
    assert first.resources.tasks_started > 1000  # configure starts thousands of processes
    hello = tmp_path / "out-first" / "artifacts" / "hello-2.10" / "hello"
    ran = subprocess.run([hello], capture_output=True, text=True, timeout=10, check=True)
    assert ran.stdout == "Hello, world!\n"
