"""GNU hello 2.10, the real-world fixture: reproducible, traced without changing a bit,
and the result runs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from sandbox.result import BuildStatus
from sandbox.trace.levels import TraceLevel
from tests.integration.conftest import Builder, hello_spec, log_of, trace_of


@pytest.mark.slow
def test_hello_twice_identical_and_tracing_changes_nothing(
    tmp_path: Path, bookworm_image: str, hello_tarball: Path, build: Builder
) -> None:
    spec = hello_spec(hello_tarball)
    traced = build(spec, name="traced")
    untraced = build(spec, name="untraced", trace=TraceLevel.OFF)
    assert traced.status is BuildStatus.BUILT, log_of(traced)
    assert untraced.status is BuildStatus.BUILT, log_of(untraced)
    assert traced.digest == untraced.digest
    assert [o.path for o in traced.outputs] == ["hello-2.10/hello"]
    assert traced.outputs == untraced.outputs
    assert traced.source_digest == untraced.source_digest
    assert not untraced.inputs[0].fetched, "the second build fetches nothing"
    assert traced.resources.tasks_started > 1000  # configure starts thousands of processes
    trace = trace_of(traced)
    assert trace["complete"] and len(trace["executions"]) > 1000
    writer = trace["writers"]["/build/hello-2.10/hello"]
    assert writer["program"].endswith(("/ld", "/collect2", "/gcc")), writer
    hello = tmp_path / "out-traced" / "artifacts" / "hello-2.10" / "hello"
    ran = subprocess.run([hello], capture_output=True, text=True, timeout=10, check=True)
    assert ran.stdout == "Hello, world!\n"
