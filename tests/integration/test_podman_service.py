"""The podman API socket: the user's when one answers, else a private one started and stopped."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import psutil
import pytest

from sandbox.podman_api import PodmanService


def _services_under(directory: Path) -> list[psutil.Process]:
    return [
        p
        for p in psutil.process_iter(["cmdline"])
        if p.info["cmdline"]
        and "service" in p.info["cmdline"]
        and any(str(directory) in arg for arg in p.info["cmdline"])
    ]


def test_a_private_service_is_started_and_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONTAINER_HOST", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))  # no socket answers here
    service = PodmanService(url=None)
    with service as session:
        assert service.started
        assert session.url.startswith("unix:///") and str(tmp_path) not in session.url
        socket_dir = Path(session.url.removeprefix("unix://")).parent
        assert session.image_exists("localhost/no-such-image@sha256:" + "0" * 64) is False
        assert _services_under(socket_dir)
    assert not socket_dir.exists()
    assert not _services_under(socket_dir)


def test_a_running_user_service_is_used_and_left_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONTAINER_HOST", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    socket = tmp_path / "podman" / "podman.sock"
    socket.parent.mkdir()
    users = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{socket}"],
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not socket.exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        service = PodmanService(url=None)
        with service as session:
            assert not service.started and session.url == f"unix://{socket}"
        assert users.poll() is None, "the user's own service must keep running"
    finally:
        users.terminate()
        users.wait()
