"""Isolation of real rootless builds, each check with a negative control that shows it can fail."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from sandbox.config import SandboxConfig
from sandbox.result import BuildStatus
from tests.integration.conftest import Builder, log_of

MINIMAL = 'image = "hermetic-minimal"\nsource_date_epoch = 1\n'


class Listener:
    """A TCP listener on the host's loopback that counts the connections it accepts."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


def _host_address() -> str:
    for name, addresses in psutil.net_if_addrs().items():
        for address in addresses:
            if address.family == socket.AF_INET and name != "lo":
                return str(address.address)
    pytest.fail("the host has no non-loopback IPv4 address to try")


CLIENT = (
    "for target in {targets}; do "
    "if (exec 3<>/dev/tcp/$target/{port}) 2>/dev/null; then echo connected:$target; "
    "else echo refused:$target; fi; done"
)


def test_network_is_unreachable_and_the_listener_sees_nothing(
    tmp_path: Path,
    listener: Listener,
    minimal_image: str,
    build: Builder,
) -> None:
    targets = f"127.0.0.1 {_host_address()}"
    client = CLIENT.format(targets=targets, port=listener.port)
    script = (
        f"{client}; cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ' | sed 's/^/iface:/'"
    )
    spec = f'[build]\n{MINIMAL}command = ["bash", "-c", "{script}"]\noutputs = ["hermetic.toml"]\n'
    result = build(spec)
    assert result.status is BuildStatus.BUILT, log_of(result)
    log = log_of(result)
    assert "connected:" not in log
    assert log.count("refused:") == 2
    assert [line for line in log.splitlines() if line.startswith("iface:")] == ["iface:lo"]
    assert listener.accepted == 0
    # Negative control: the same client code, run on the host, reaches the listener.
    control = subprocess.run(
        ["bash", "-c", CLIENT.format(targets="127.0.0.1", port=listener.port)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert control.stdout.strip() == "connected:127.0.0.1"
    for _ in range(50):
        if listener.accepted:
            break
        threading.Event().wait(0.05)
    assert listener.accepted == 1


def test_no_host_environment_hostname_or_user(
    tmp_path: Path,
    minimal_image: str,
    sandbox_config: SandboxConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    canary = "canary-7f3a9c1e"
    monkeypatch.setenv("HERMETIC_TEST_CANARY", canary)
    monkeypatch.setenv("http_proxy", "http://proxy.invalid:3128")  # podman copies these by default
    script = (
        "env | sed s/^/env:/; echo hostname:$(hostname); echo user:$(id -un):$(id -u); "
        "tr '\\\\0' '\\\\n' < /proc/1/environ | sed s/^/init:/"
    )
    spec_dir = tmp_path / "src"
    spec_dir.mkdir()
    (spec_dir / "hermetic.toml").write_text(
        f'[build]\n{MINIMAL}command = ["sh", "-c", "{script}"]\noutputs = ["hermetic.toml"]\n'
    )
    env = dict(
        os.environ,
        HERMETIC_IMAGES_DIR=str(sandbox_config.images_dir),
        HERMETIC_STORE=str(sandbox_config.store_dir),
        HERMETIC_WORK_DIR=str(sandbox_config.work_dir),
    )
    out = tmp_path / "out"
    done = subprocess.run(
        ["hermetic", "build", str(spec_dir), "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    log = (out / "build.log").read_text()
    assert canary not in log and "proxy.invalid" not in log
    build_env = sorted(
        line.removeprefix("env:")
        for line in log.splitlines()
        if line.startswith("env:") and not line.startswith(("env:PWD=", "env:SHLVL="))
    )
    assert build_env == [
        "HOME=/home/builder",
        "LANG=C.UTF-8",
        "LOGNAME=builder",
        "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "SOURCE_DATE_EPOCH=1",
        "TZ=UTC",
        "USER=builder",
    ]
    assert "hostname:hermetic" in log and f"hostname:{socket.gethostname()}" not in log
    assert "user:builder:1000" in log
    assert f"user:{psutil.Process().username()}:" not in log
    # Negative control: the same command on the host does see the canary.
    control = subprocess.run(["sh", "-c", "env"], capture_output=True, text=True, check=True)
    assert canary in control.stdout


def test_nothing_outside_the_build_dir_is_writable_or_readable(
    tmp_path: Path,
    minimal_image: str,
    build: Builder,
    sandbox_config: SandboxConfig,
) -> None:
    # A secret on the host, beside the build's source and beside its scratch space
    # (where the source archive, the runner and the hand-back directory live).
    canary = f"host-secret-{secrets.token_hex(8)}"
    secrets_on_host = [tmp_path / "host-secret", sandbox_config.work_dir / f"{canary}.txt"]
    sandbox_config.work_dir.mkdir(parents=True, exist_ok=True)
    for path in secrets_on_host:
        path.write_text(f"{canary}\n")
    probes = [
        "/etc/x",
        "/usr/bin/x",
        "/x",
        "/.hermetic/x",
        "/.hermetic/src.tar",
        "/.hermetic/runner.sh",
        "/.hermetic/out/x",
        "/.hermetic/out/status",
        "/.hermetic/state/x",
        "/.hermetic/gate",
        "/build/x",
        "/tmp/x",
    ]
    script = "".join(
        f"if echo w 2>/dev/null > {p}; then echo writable:{p}; else echo readonly:{p}; fi\n"
        for p in probes
    )
    # Every file the build can read that holds the secret. control.txt (in the source)
    # holds it too: the probe must find it there, and nowhere else.
    script += (
        "grep -rlF -f /build/control.txt / --exclude-dir=proc --exclude-dir=sys "
        "--exclude-dir=dev 2>/dev/null | sed s/^/found:/\n"
        "grep ' / ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1\n"
    )
    spec = f'[build]\n{MINIMAL}command = ["sh", "probe.sh"]\noutputs = ["x"]\n'
    before = sorted(p.name for p in tmp_path.iterdir() if p != secrets_on_host[0])
    try:
        result = build(spec, files={"probe.sh": script, "control.txt": f"{canary}\n"})
    finally:
        for path in secrets_on_host:
            path.unlink()
    assert result.status is BuildStatus.BUILT, log_of(result)
    lines = log_of(result).splitlines()
    for probe in probes[:-2]:
        assert f"readonly:{probe}" in lines, log_of(result)
    # Negative controls: the probes do detect a writable place, and a readable secret.
    assert "writable:/build/x" in lines and "writable:/tmp/x" in lines
    assert [line for line in lines if line.startswith("found:")] == ["found:/build/control.txt"]
    assert "ro" in lines
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "src-b", "out-b"])
