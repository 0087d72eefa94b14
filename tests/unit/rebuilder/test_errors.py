"""One error tree: every error hermetic raises is a user error (not retried) or an
infrastructure error (retried), and a node decides retry vs failed build by the branch."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import rebuilder
import sandbox
from rebuilder.errors import SigningError
from rebuilder.node.execute import execute
from rebuilder.node.jobs import Outcome
from rebuilder.node.requests import pack_source
from sandbox.config import SandboxConfig
from sandbox.errors import (
    BuildCancelled,
    Error,
    ImageError,
    InfrastructureError,
    SandboxError,
    UserError,
)
from sandbox.input_policy import InputPolicy
from sandbox.trace.levels import TraceLevel
from tests.conftest import write_spec
from tests.unit.conftest import FAKE_SPEC


def _every_error() -> set[type[Error]]:
    for package in (sandbox, rebuilder):
        for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if not module.name.endswith(("__main__", "serve")):
                importlib.import_module(module.name)
    found: set[type[Error]] = set()
    stack: list[type[Error]] = [Error]
    while stack:
        for child in stack.pop().__subclasses__():
            if child.__module__.startswith(("sandbox.", "rebuilder.")):
                found.add(child)
            stack.append(child)
    return found


def test_every_error_is_on_one_branch() -> None:
    errors = _every_error() - {UserError, InfrastructureError}
    assert len(errors) > 20  # the walk found the packages' errors (negative control)
    off = {
        e.__qualname__
        for e in errors
        if issubclass(e, UserError) == issubclass(e, InfrastructureError)
    }
    assert off == {BuildCancelled.__qualname__}  # a cancel is neither: nobody's fault


def test_a_signing_failure_is_no_sandbox_error() -> None:
    assert issubclass(SigningError, InfrastructureError)
    assert not issubclass(SigningError, SandboxError)


def _run(tmp_path: Path, config: SandboxConfig, failure: Error) -> Outcome:
    source = tmp_path / "src"
    write_spec(source, FAKE_SPEC)

    @contextmanager
    def connect(_: SandboxConfig) -> Iterator[object]:
        raise failure
        yield  # pragma: no cover

    return execute(
        pack_source(source, tmp_path),
        tmp_path / "job",
        attempt=1,
        config=config,
        connect=connect,  # type: ignore[arg-type]
        trace=TraceLevel.OFF,
        builder_id="test",
        input_policy=InputPolicy.of(),
    ).outcome


def test_a_user_error_fails_the_build(tmp_path: Path, fake_config: SandboxConfig) -> None:
    assert _run(tmp_path, fake_config, ImageError("no such image")) is Outcome.BUILD_FAILED


def test_an_infrastructure_error_is_raised_for_a_retry(
    tmp_path: Path, fake_config: SandboxConfig
) -> None:
    with pytest.raises(SandboxError, match="podman died"):
        _run(tmp_path, fake_config, SandboxError("podman died"))
