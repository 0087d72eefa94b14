"""Limits on real rootless builds: timeout, log cap, pids, memory and disk, with controls."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest

from sandbox.config import SandboxConfig
from sandbox.podman_backend import PodmanBackend
from sandbox.result import BuildStatus
from tests.integration.conftest import build_in, log_of

HEAD = '[build]\nimage = "hermetic-minimal"\nsource_date_epoch = 1\noutputs = ["hermetic.toml"]\n'


def spec(command: str, limits: str) -> str:
    return f'{HEAD}command = ["sh", "-c", "{command}"]\n[limits]\n{limits}\n'


def containers_left() -> str:
    done = subprocess.run(
        ["podman", "ps", "-a", "--filter", "label=dev.hermetic.build", "--format", "{{.Names}}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


def test_timeout_kills_the_container_and_is_not_a_build_failure(
    tmp_path: Path,
    minimal_image: str,
    backend: PodmanBackend,
    sandbox_config: SandboxConfig,
) -> None:
    started = time.monotonic()
    result = build_in(
        tmp_path,
        spec("echo started; sleep infinity", 'timeout = "3s"'),
        backend=backend,
        config=sandbox_config,
    )
    assert result.status is BuildStatus.TIMEOUT
    assert result.exit_code is None and "timed out after 3s" in result.reason
    assert time.monotonic() - started < 60
    assert "started" in log_of(result)
    assert containers_left() == ""


def test_log_flood_is_capped_and_the_build_goes_on(
    tmp_path: Path,
    minimal_image: str,
    backend: PodmanBackend,
    sandbox_config: SandboxConfig,
) -> None:
    result = build_in(
        tmp_path,
        spec("yes flood-line-of-text | head -n 400000; echo finished > done.txt", 'log = "256KiB"'),
        backend=backend,
        config=sandbox_config,
    )
    assert result.status is BuildStatus.BUILT
    data = result.log.path.read_bytes()
    # podman's own copy of the log is capped too, so hermetic sees more than it keeps
    # but not always all of it: the marker says "at least".
    assert result.log.truncated and result.log.bytes_seen > 256 * 1024
    assert len(data) < 256 * 1024 + 200
    assert data.rstrip().endswith(b"more bytes dropped]")


# Starts N sleeping children, counting the forks that fail, then counts the processes
# that exist in the container's pid namespace.
FLOOD = r"""
my ($started, $failed) = (0, 0);
for (1 .. $ARGV[0]) {
    my $pid = fork;
    if (!defined $pid) { $failed++; next }
    if ($pid == 0) { sleep 5; exit 0 }
    $started++;
}
opendir my $proc, "/proc" or die;
my $count = grep { /^\d+$/ } readdir $proc;
print "procs:$count started:$started failed:$failed\n";
1 while wait != -1;
"""


def _flood(
    tmp_path: Path, backend: PodmanBackend, config: SandboxConfig, pids: int
) -> dict[str, int]:
    text = f'{HEAD}command = ["perl", "flood.pl", "300"]\n[limits]\npids = {pids}\n'
    result = build_in(
        tmp_path, text, backend=backend, config=config, name=str(pids), files={"flood.pl": FLOOD}
    )
    assert result.status is BuildStatus.BUILT, log_of(result)
    line = next(x for x in log_of(result).splitlines() if x.startswith("procs:"))
    return {k: int(v) for k, v in (part.split(":") for part in line.split())}


def test_pids_limit_stops_a_process_flood(
    tmp_path: Path,
    minimal_image: str,
    backend: PodmanBackend,
    sandbox_config: SandboxConfig,
) -> None:
    limited = _flood(tmp_path, backend, sandbox_config, pids=40)
    assert limited["procs"] <= 40 and limited["failed"] > 200
    # Negative control: with room for them, all 300 children start.
    roomy = _flood(tmp_path, backend, sandbox_config, pids=1000)
    assert roomy["started"] == 300 and roomy["failed"] == 0 and roomy["procs"] > 300


def test_a_fork_bomb_is_contained(
    tmp_path: Path,
    minimal_image: str,
    backend: PodmanBackend,
    sandbox_config: SandboxConfig,
) -> None:
    me = os.getuid()
    baseline = sum(1 for p in psutil.process_iter(["uids"]) if p.info["uids"].real == me)
    peak = [baseline]
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak.append(sum(1 for p in psutil.process_iter(["uids"]) if p.info["uids"].real == me))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        bomb = (
            f'{HEAD}command = ["bash", "-c", "b(){{ b | b & }}; b; sleep 4"]\n[limits]\npids = 64\n'
        )
        result = build_in(tmp_path, bomb, backend=backend, config=sandbox_config)
    finally:
        stop.set()
        watcher.join()
    assert result.status is BuildStatus.BUILT  # the bomb's parent returns; its children are killed
    assert "fork" in log_of(result) and "unavailable" in log_of(result)
    assert max(peak) <= baseline + 64 + 16  # catatonit, runner and conmon besides the build's 64
    assert containers_left() == ""


def test_memory_limit_per_process(
    tmp_path: Path,
    minimal_image: str,
    backend: PodmanBackend,
    sandbox_config: SandboxConfig,
) -> None:
    grab = "perl -e '$x = q(a) x (300*1024*1024); print qq(allocated\\\\n)'"
    small = build_in(
        tmp_path,
        spec(grab, 'memory = "128MiB"'),
        backend=backend,
        config=sandbox_config,
        name="small",
    )
    assert small.status is BuildStatus.FAILED and "allocated" not in log_of(small)
    roomy = build_in(
        tmp_path,
        spec(grab, 'memory = "1GiB"'),
        backend=backend,
        config=sandbox_config,
        name="roomy",
    )
    assert roomy.status is BuildStatus.BUILT and "allocated" in log_of(roomy)


def test_memory_limit_on_the_whole_build(
    tmp_path: Path,
    minimal_image: str,
    backend: PodmanBackend,
    sandbox_config: SandboxConfig,
) -> None:
    # Four processes of 80 MiB each: every one is under the limit, together they are not.
    hog = "perl -e '$x = q(a) x (80*1024*1024); sleep 15' &"
    command = f"{hog} {hog} {hog} {hog} wait"
    limited = build_in(
        tmp_path,
        spec(command, 'memory = "200MiB"'),
        backend=backend,
        config=sandbox_config,
        name="limited",
    )
    assert limited.status is BuildStatus.LIMIT_EXCEEDED, log_of(limited)
    assert "memory limit exceeded" in limited.reason
    assert limited.duration_s < 15
    quick = command.replace("sleep 15", "sleep 1")
    roomy = build_in(
        tmp_path,
        spec(quick, 'memory = "1GiB"'),
        backend=backend,
        config=sandbox_config,
        name="roomy",
    )
    assert roomy.status is BuildStatus.BUILT
    assert roomy.resources.peak_memory_bytes > 300 * 1024**2


def test_disk_limit(
    tmp_path: Path,
    minimal_image: str,
    backend: PodmanBackend,
    sandbox_config: SandboxConfig,
) -> None:
    fill = "head -c 30000000 /dev/zero > big && echo wrote"
    small = build_in(
        tmp_path, spec(fill, 'disk = "10MiB"'), backend=backend, config=sandbox_config, name="small"
    )
    assert small.status is BuildStatus.FAILED and "wrote" not in log_of(small)
    roomy = build_in(
        tmp_path,
        spec(fill, 'disk = "100MiB"'),
        backend=backend,
        config=sandbox_config,
        name="roomy",
    )
    assert roomy.status is BuildStatus.BUILT and "wrote" in log_of(roomy)


@pytest.mark.parametrize(
    ("command", "output", "reason"),
    [
        ("touch x && chmod 4755 x", "x", "setuid"),
        ("ln -s /etc/passwd x", "x", "symlink leaving"),
        ("mkfifo x", "x", "special file"),
    ],
    ids=["setuid", "link-outside", "fifo"],
)
def test_unsafe_outputs_are_refused(
    tmp_path: Path,
    minimal_image: str,
    backend: PodmanBackend,
    sandbox_config: SandboxConfig,
    command: str,
    output: str,
    reason: str,
) -> None:
    text = spec(command, "").replace('outputs = ["hermetic.toml"]', f'outputs = ["{output}"]')
    result = build_in(tmp_path, text, backend=backend, config=sandbox_config)
    assert result.status is BuildStatus.FAILED
    assert reason in result.reason and result.digest is None
    assert not (tmp_path / "out-b" / "artifacts").exists()
