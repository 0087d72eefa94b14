"""The build container's inspection while its process ends (podman answers 500)."""

from __future__ import annotations

from typing import Any

import podman.errors
import pytest

from sandbox.errors import SandboxError
from sandbox.podman_api import BuildContainer


class _Inspected:
    """A container whose inspection fails as podman 4.3's does for a process that has
    just ended (it reads /proc/PID/cgroup), or with another error."""

    id = "c" * 64

    def __init__(self, error: str | None, pid: int = 4242) -> None:
        self.error = error
        self.attrs: dict[str, Any] = {"State": {"Pid": pid}}

    def reload(self) -> None:
        if self.error is not None:
            raise podman.errors.APIError(self.error)


def test_a_process_ending_while_podman_inspects_it_has_no_pid() -> None:
    ended = "read /proc/4242/cgroup: no such process"
    assert BuildContainer(_Inspected(ended)).init_pid() is None
    assert BuildContainer(_Inspected(None)).init_pid() == 4242  # control: a running one
    with pytest.raises(SandboxError, match="inspect the build container"):
        BuildContainer(_Inspected("no such container")).init_pid()  # other errors stay
