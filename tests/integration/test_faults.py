"""Faults a user's machine has, for real: hermetic killed mid-build, the podman service
killed mid-build, full disks, builds longer than any client timeout, a check whose control
fails while its experiments run. Nothing hangs, nothing is left behind, --out is whole or
absent."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from rebuilder.check import CheckError, CheckRequest, prepare_report_dir, run_check
from sandbox.config import SandboxConfig
from sandbox.images import ImageCatalog
from sandbox.lifecycle import OWNER_LABEL, Owner
from sandbox.podman_api import DEFAULT_IDLE_S, PodmanSession, shared_service
from sandbox.podman_backend import PodmanBackend
from sandbox.spec import ImageReference, Spec
from tests.conftest import HERMETIC, write_spec
from tests.integration.conftest import hermetic_env

SPEC = """
[build]
image = "hermetic-minimal"
command = ["sh", "-c", '''{script}''']
outputs = ["{output}"]
source_date_epoch = 1700000000
[limits]
timeout = "{timeout}"
"""
SLEEPER = "echo sleeping; sleep infinity"


def spec_text(script: str, *, timeout: str = "10m", output: str = "out.txt") -> str:
    return SPEC.format(script=script, timeout=timeout, output=output)


def hermetic_containers() -> list[dict[str, object]]:
    """Every container hermetic made (running or not), as podman lists them."""
    done = subprocess.run(
        ["podman", "ps", "-a", "--format", "json", "--filter", "label=dev.hermetic.build"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return list(json.loads(done.stdout or "[]"))


def containers_of(pid: int) -> list[dict[str, object]]:
    found = []
    for container in hermetic_containers():
        labels = container.get("Labels") or {}
        assert isinstance(labels, dict)
        owner = Owner.parse(str(labels.get(OWNER_LABEL, "")))
        if owner is not None and owner.pid == pid:
            found.append(container)
    return found


def wait_for_container(process: subprocess.Popen[str]) -> dict[str, object]:
    deadline = time.monotonic() + 180
    while True:
        running = [c for c in containers_of(process.pid) if c.get("State") == "running"]
        if running:
            return running[0]
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the build container never started"
        time.sleep(0.2)


def start_build(spec: Path, out: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(HERMETIC), "build", str(spec.parent), "--out", str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def build(
    spec: Path, out: Path, env: dict[str, str], *extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HERMETIC), "build", str(spec.parent), "--out", str(out), *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def stamped_by(directory: Path, pid: int) -> list[Path]:
    return [p for p in directory.iterdir() if f".{pid}." in p.name] if directory.is_dir() else []


def test_a_build_killed_with_sigkill_leaves_nothing_after_the_next_command(
    tmp_path: Path, sandbox_config: SandboxConfig, minimal_image: str
) -> None:
    env = hermetic_env(sandbox_config)
    process = start_build(write_spec(tmp_path / "src", spec_text(SLEEPER)), tmp_path / "out", env)
    container = wait_for_container(process)
    process.kill()  # SIGKILL: no handler runs, no finally, no clean-up of its own
    process.wait()
    # What the kill left: the container runs on under conmon, the scratch directory, the
    # tracer's socket directory and a half-written --out beside --out.
    assert [c["Id"] for c in containers_of(process.pid)] == [container["Id"]]
    assert stamped_by(sandbox_config.work_dir, process.pid)
    partials = [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    assert partials and not (tmp_path / "out").exists()

    trivial = write_spec(tmp_path / "next", spec_text("echo hi > out.txt"))
    done = build(trivial, tmp_path / "next-out", env)
    assert done.returncode == 0, done.stderr
    assert containers_of(process.pid) == []
    assert stamped_by(sandbox_config.work_dir, process.pid) == []
    assert stamped_by(Path("/tmp"), process.pid) == []  # the tracer's sockets
    assert [p for p in tmp_path.iterdir() if ".partial-" in p.name] == []
    assert not (tmp_path / "out").exists()
    # the tracer of the killed build ends once its container is gone
    deadline = time.monotonic() + 60
    while [p for p in psutil.process_iter(["ppid", "cmdline"]) if _orphan_tracer(p)]:
        assert time.monotonic() < deadline, "a tracer of a removed build kept running"
        time.sleep(0.2)


def _orphan_tracer(process: psutil.Process) -> bool:
    command = process.info["cmdline"] or []
    return process.info["ppid"] == 1 and "sandbox.trace.supervisor" in command


def test_a_killed_build_s_container_keeps_its_own_deadline(
    tmp_path: Path, sandbox_config: SandboxConfig, minimal_image: str
) -> None:
    env = hermetic_env(sandbox_config)
    spec = write_spec(tmp_path / "src", spec_text(SLEEPER, timeout="3s"))
    process = start_build(spec, tmp_path / "out", env)
    container = wait_for_container(process)
    process.kill()
    process.wait()
    # No hermetic runs now: conmon kills the build at its deadline (3s + the margin).
    deadline = time.monotonic() + 120
    while (found := containers_of(process.pid)) and found[0].get("State") == "running":
        assert time.monotonic() < deadline, "the container outlived its deadline"
        time.sleep(0.5)
    assert [c["Id"] for c in found] == [container["Id"]]  # stopped, not yet removed
    done = build(write_spec(tmp_path / "next", spec_text("echo hi > out.txt")), tmp_path / "o", env)
    assert done.returncode == 0, done.stderr
    assert containers_of(process.pid) == []


def test_the_podman_service_killed_mid_build_is_an_infrastructure_error(
    tmp_path: Path, sandbox_config: SandboxConfig, minimal_image: str
) -> None:
    env = hermetic_env(sandbox_config)
    process = start_build(write_spec(tmp_path / "src", spec_text(SLEEPER)), tmp_path / "out", env)
    container = wait_for_container(process)
    service = shared_service()
    pid = service.pid()
    assert pid is not None, "the build should use hermetic's shared service"
    try:
        os.killpg(os.getpgid(pid), signal.SIGKILL)
        _, stderr = process.communicate(timeout=180)
    finally:
        if process.poll() is None:
            process.kill()
        service.ensure(podman_bin="podman", idle_s=DEFAULT_IDLE_S)  # for the tests after this
    assert process.returncode == 2, stderr
    assert "the podman service stopped answering" in stderr
    assert "Traceback" not in stderr
    # conmon kept the container running after its service died; hermetic removed it
    assert [c for c in hermetic_containers() if c["Id"] == container["Id"]] == []
    assert not (tmp_path / "out").exists()
    assert [p for p in tmp_path.iterdir() if ".partial-" in p.name] == []
    assert stamped_by(sandbox_config.work_dir, process.pid) == []


def test_a_build_outlives_every_client_timeout(
    tmp_path: Path, sandbox_config: SandboxConfig, podman_session: PodmanSession, minimal_image: str
) -> None:
    # Every API request may take at most 2s here; the build takes longer than several.
    env = hermetic_env(sandbox_config, HERMETIC_PODMAN_TIMEOUT="2")
    spec = write_spec(tmp_path / "src", spec_text("sleep 7; echo done > out.txt"))
    done = build(spec, tmp_path / "out", env, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "built" and result["duration_s"] >= 7
    assert (tmp_path / "out" / "artifacts" / "out.txt").read_text() == "done\n"


def test_the_client_timeout_is_real(
    sandbox_config: SandboxConfig, podman_session: PodmanSession, minimal_image: str
) -> None:
    # Negative control for the test above: the 2s client timeout does bound a plain
    # podman-py wait (what hermetic used to do), so the build above really outlived it.
    short = PodmanSession(podman_session.url, request_timeout_s=2)
    image = ImageCatalog(sandbox_config.images_dir).resolve(ImageReference(name=minimal_image))
    container = short._client.containers.create(
        image.reference, command=["sleep", "7"], network_mode="none"
    )
    try:
        container.start()
        with pytest.raises(Exception, match=r"operation failed|timed out"):
            container.wait(condition="exited")
    finally:
        podman_session.remove_container(container.id)
        short.close()


def test_sleep_infinity_with_a_5s_timeout_ends_as_a_timeout(
    tmp_path: Path, sandbox_config: SandboxConfig, minimal_image: str
) -> None:
    env = hermetic_env(sandbox_config)
    spec = write_spec(tmp_path / "src", spec_text("sleep infinity", timeout="5s"))
    done = build(spec, tmp_path / "out", env, "--json")
    assert done.returncode == 1, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "timeout" and "timed out after 5s" in result["reason"]
    assert hermetic_containers() == []


# --- a check whose control fails --------------------------------------------------------

# Fails at once in the normalized environment (the control), runs for ten minutes under
# any varied host name (the experiment).
CONTROL_FAILS = 'if [ "$(uname -n)" = hermetic ]; then exit 3; fi; sleep 600; echo x > out.txt'


def test_a_failed_control_stops_the_experiments_at_once(
    tmp_path: Path, sandbox_config: SandboxConfig, podman_session: PodmanSession, minimal_image: str
) -> None:
    spec = Spec.from_toml(write_spec(tmp_path / "src", spec_text(CONTROL_FAILS, timeout="20m")))
    backend = PodmanBackend(podman_session, seccomp_base=sandbox_config.seccomp_base)
    request = CheckRequest(
        spec=spec,
        report_dir=prepare_report_dir(tmp_path / "report", tmp_path),
        variations=("hostname",),
        seed=1,
        builds=3,
        jobs=3,
    )
    started = time.monotonic()
    with pytest.raises(CheckError, match=r"the control build failed \(the build command exited"):
        run_check(request, config=sandbox_config, backend=backend)
    # Not the experiments' ten minutes: they were stopped when the control failed.
    assert time.monotonic() - started < 300
    assert hermetic_containers() == []
    builds = sorted(p.name for p in (tmp_path / "report" / "builds").iterdir())
    assert builds == ["01-control"]  # the stopped experiments published nothing


# --- full disks ---------------------------------------------------------------------------

SMALL_FS = Path(f"/var/tmp/hermetic-small-fs-{pwd.getpwuid(os.getuid()).pw_name}")
PAGE = 4096


@pytest.fixture
def small_fs() -> Iterator[Path]:
    """The set-up's small tmpfs of this user (.ci/setup mounts it), emptied around a test."""
    mounted = any(
        line.split()[1] == str(SMALL_FS) for line in Path("/proc/mounts").read_text().splitlines()
    )
    if not mounted or not os.access(SMALL_FS, os.W_OK):
        pytest.fail(
            f"{SMALL_FS} is not a tmpfs of this user: run .ci/setup as root, which mounts it"
        )
    _empty(SMALL_FS)
    try:
        yield SMALL_FS
    finally:
        _empty(SMALL_FS)


def _empty(directory: Path) -> None:
    for entry in directory.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def fill(fs: Path, *, leave: int) -> None:
    """Fill ``fs`` until ``leave`` bytes (whole pages) are free."""
    free = shutil.disk_usage(fs).free
    size = free - leave
    assert size > 0, f"only {free} bytes free on {fs}"
    with (fs / "filler").open("wb") as filler:
        filler.write(b"\0" * size)


def tree_digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_a_full_input_store_is_a_clear_error_and_stores_nothing(
    tmp_path: Path, sandbox_config: SandboxConfig, minimal_image: str, small_fs: Path
) -> None:
    data = os.urandom(2 * 1024**2)
    (tmp_path / "input.bin").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    text = spec_text("cp input.bin out.txt") + (
        f'[[inputs]]\nurl = "{(tmp_path / "input.bin").as_uri()}"\n'
        f'sha256 = "{digest}"\ndest = "input.bin"\n'
    )
    spec = write_spec(tmp_path / "src", text)
    env = hermetic_env(sandbox_config, HERMETIC_STORE=str(small_fs / "store"))
    fill(small_fs, leave=64 * PAGE)
    done = build(spec, tmp_path / "out", env)
    assert done.returncode == 2, done.stderr
    assert "cannot write the input store" in done.stderr and "No space left" in done.stderr
    assert "Traceback" not in done.stderr
    assert list((small_fs / "store" / "sha256").iterdir()) == []  # no entry, no temp file
    assert not (tmp_path / "out").exists()
    # Control: with room, the same build stores the entry (verified) and builds.
    (small_fs / "filler").unlink()
    done = build(spec, tmp_path / "out", env)
    assert done.returncode == 0, done.stderr
    stored = small_fs / "store" / "sha256" / digest
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == digest


def test_a_full_scratch_space_is_a_clear_error(
    tmp_path: Path, sandbox_config: SandboxConfig, minimal_image: str, small_fs: Path
) -> None:
    spec = write_spec(tmp_path / "src", spec_text("cat big > out.txt"))
    (spec.parent / "big").write_bytes(os.urandom(2 * 1024**2))
    env = hermetic_env(sandbox_config, HERMETIC_WORK_DIR=str(small_fs / "work"))
    (small_fs / "work").mkdir()
    fill(small_fs, leave=64 * PAGE)
    done = build(spec, tmp_path / "out", env)
    assert done.returncode == 2, done.stderr
    assert "out of disk space" in done.stderr and f"the scratch space {small_fs}" in done.stderr
    assert "Traceback" not in done.stderr
    assert list((small_fs / "work").iterdir()) == []  # the scratch directory was removed
    assert not (tmp_path / "out").exists()
    assert hermetic_containers() == []
    (small_fs / "filler").unlink()  # control: with room it builds
    done = build(spec, tmp_path / "out", env)
    assert done.returncode == 0, done.stderr


def test_a_scratch_space_that_fills_while_the_build_hands_back(
    tmp_path: Path, sandbox_config: SandboxConfig, minimal_image: str, small_fs: Path
) -> None:
    # The source fits; the 8 MiB the build writes do not fit when they are handed back.
    spec = write_spec(tmp_path / "src", spec_text("head -c 8388608 /dev/zero > out.txt"))
    env = hermetic_env(sandbox_config, HERMETIC_WORK_DIR=str(small_fs / "work"))
    (small_fs / "work").mkdir()
    fill(small_fs, leave=1024 * PAGE)
    done = build(spec, tmp_path / "out", env)
    assert done.returncode == 2, done.stderr
    assert f"The scratch space {small_fs / 'work'} is full" in done.stderr
    assert list((small_fs / "work").iterdir()) == []
    assert not (tmp_path / "out").exists()
    (small_fs / "filler").unlink()  # control: with room it builds
    assert build(spec, tmp_path / "out", env).returncode == 0


def test_a_disk_that_fills_while_the_attestation_is_written_keeps_out_as_it_was(
    tmp_path: Path, sandbox_config: SandboxConfig, minimal_image: str, small_fs: Path
) -> None:
    key = tmp_path / "key"
    keygen = subprocess.run(
        [str(HERMETIC), "keygen", "--out", str(key)], capture_output=True, text=True, timeout=60
    )
    assert keygen.returncode == 0, keygen.stderr
    # The spec is in the provenance (and in result.json): a long value makes the
    # attestation several pages, so it is the write that runs out of room.
    padding = "x" * 40000
    text = spec_text("echo built > out.txt") + f'[build.env]\nPADDING = "{padding}"\n'
    spec = write_spec(tmp_path / "src", text)
    env = hermetic_env(sandbox_config)
    out = small_fs / "out"
    first = build(spec, out, env, "--sign", str(key), "--trace=off")
    assert first.returncode == 0, first.stderr
    before = tree_digests(out)
    pages = {name: -(-(out / name).stat().st_size // PAGE) for name in before}
    attestation = pages.pop("provenance.intoto.json")
    assert attestation >= 8
    # Room for everything the build writes before its attestation, and half of that.
    fill(small_fs, leave=(sum(pages.values()) + attestation // 2) * PAGE)
    done = build(spec, out, env, "--sign", str(key), "--trace=off")
    assert done.returncode == 2, done.stderr
    assert "out of disk space" in done.stderr and "the output directory" in done.stderr
    assert "Traceback" not in done.stderr
    assert tree_digests(out) == before  # --out is the previous, whole result
    assert [p.name for p in small_fs.iterdir() if ".partial-" in p.name] == []
