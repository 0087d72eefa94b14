"""Owner stamps: what a dead hermetic left is recognized by the stamp it wrote, never by a
name alone, and removed; what a live one (or anyone else) owns is left alone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from sandbox.lifecycle import (
    Owner,
    owner_in_name,
    process_start,
    reap_directories,
    stamped_prefix,
)
from sandbox.podman_api import kill_stuck_creations


def dead_owner() -> Owner:
    """A process that ran on this boot and has ended."""
    process = subprocess.Popen(["sleep", "60"])
    start = process_start(process.pid)
    assert start is not None
    process.kill()
    process.wait()
    return Owner(boot=Owner.current().boot, pid=process.pid, start=start)


def test_a_stamp_names_this_process_and_round_trips() -> None:
    me = Owner.current()
    assert Owner.parse(me.stamp) == me and me.alive()
    assert owner_in_name(f"{stamped_prefix('build')}abc123", "build") == me
    assert owner_in_name(f".out.{stamped_prefix('partial')}x_1", "partial") == me


@pytest.mark.parametrize(
    "stamp",
    ["", "build", "0.1.2", "g" * 32 + ".1.2", "a" * 32 + ".0.5", "a" * 32 + ".1", "../x"],
)
def test_what_is_not_a_stamp_is_no_owner(stamp: str) -> None:
    assert Owner.parse(stamp) is None


def test_a_dead_owner_a_reused_pid_and_another_boot_are_not_alive() -> None:
    dead = dead_owner()
    assert not dead.alive()
    me = Owner.current()
    assert not Owner(boot=me.boot, pid=me.pid, start=me.start + 1).alive()  # pid reused
    assert not Owner(boot="f" * 32, pid=me.pid, start=me.start).alive()  # before a reboot


def test_only_directories_of_dead_owners_are_reaped(tmp_path: Path) -> None:
    dead = dead_owner()
    orphan = tmp_path / f"build-{dead.stamp}-x1"
    partial = tmp_path / f".out.partial-{dead.stamp}-x2"
    mine = tmp_path / f"{stamped_prefix('build')}x3"
    unstamped = tmp_path / "build-someone-else"
    other_kind = tmp_path / f"cache-{dead.stamp}-x4"
    for directory in (orphan, partial, mine, unstamped, other_kind):
        (directory / "sub").mkdir(parents=True)
    (orphan / "sub").chmod(0o500)  # a build may take permissions away
    assert reap_directories(tmp_path, "build") == [orphan]
    assert reap_directories(tmp_path, "partial") == [partial]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (mine, unstamped, other_kind)
    )


@pytest.fixture
def stand_ins(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """Programs whose process names are conmon and runc (copies of python and sleep)."""
    conmon, runc = tmp_path / "conmon", tmp_path / "runc"
    shutil.copy(Path(sys.executable).resolve(), conmon)
    shutil.copy(shutil.which("sleep") or "/bin/sleep", runc)
    (tmp_path / "body.py").write_text(
        f"import subprocess, time\nsubprocess.Popen([{str(runc)!r}, '600'])\ntime.sleep(600)\n"
    )
    yield conmon, runc
    children = psutil.Process().children(recursive=True)
    for process in children:
        process.kill()
    psutil.wait_procs(children, timeout=10)


def _conmon(conmon: Path, runc: Path, scratch: Path) -> subprocess.Popen[bytes]:
    """A conmon stand-in for a container whose log is in ``scratch``, with a runc child."""
    body = conmon.with_name("body.py")
    log = f"k8s-file:{scratch}/container.log"
    return subprocess.Popen([str(conmon), str(body), "-c", "f00d", "-l", log])


def test_a_creation_stuck_for_a_dead_owner_is_ended(
    tmp_path: Path, stand_ins: tuple[Path, Path]
) -> None:
    conmon, runc = stand_ins
    orphan = _conmon(conmon, runc, tmp_path / f"build-{dead_owner().stamp}-x1")
    live = _conmon(conmon, runc, tmp_path / f"{stamped_prefix('build')}x2")
    for process in (orphan, live):
        while not psutil.Process(process.pid).children():
            time.sleep(0.01)  # until its runtime child runs
    orphan_runtime = psutil.Process(orphan.pid).children()[0]
    live_runtime = psutil.Process(live.pid).children()[0]
    assert kill_stuck_creations() == ["f00d"]
    assert _ended(orphan_runtime)
    assert live_runtime.status() != psutil.STATUS_ZOMBIE  # a live hermetic's is its own


def _ended(process: psutil.Process) -> bool:
    """Killed: gone, or a zombie its parent (the stand-in conmon) has not reaped."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_another_accounts_directories_are_left_alone(tmp_path: Path) -> None:
    orphan = tmp_path / f"build-{dead_owner().stamp}-x1"
    orphan.mkdir()
    # as another account (its uid injected), the orphan is not this one's to reap
    assert reap_directories(tmp_path, "build", euid=os.getuid() + 1) == []
    assert orphan.exists()
    assert reap_directories(tmp_path, "build") == [orphan]  # control: its own account's
