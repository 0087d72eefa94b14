"""Shared by the benchmarks: the hello fixture, a spec for it, a user's environment, timing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HELLO_SHA256 = "31e066137a962676e89f69d1b65382de95a7ef7d914b8cb956f41ea72e0f516b"
HELLO_BUILD = "tar -xzf hello-2.10.tar.gz && cd hello-2.10 && ./configure && make"


def find_tarball(explicit: str | None) -> Path:
    for candidate in (
        explicit,
        os.environ.get("HERMETIC_HELLO_TARBALL"),
        str(REPO.parent / "shared" / "fixtures" / "hello-2.10.tar.gz"),
    ):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    sys.exit("no hello-2.10.tar.gz: pass --tarball or set HERMETIC_HELLO_TARBALL")


def write_hello_spec(directory: Path, tarball: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "hermetic.toml").write_text(f"""
[build]
image = "debian-bookworm"
command = ["sh", "-c", "{HELLO_BUILD}"]
outputs = ["hello-2.10/hello"]
source_date_epoch = 1416009600
[[inputs]]
url = "{tarball.resolve().as_uri()}"
sha256 = "{HELLO_SHA256}"
dest = "hello-2.10.tar.gz"
""")
    return directory


def user_env() -> dict[str, str]:
    """The environment of a user's fresh command: no pre-started service of the benchmark's
    own, so each command finds (or starts) hermetic's shared podman service as a user's
    commands do."""
    env = dict(os.environ)
    env.pop("HERMETIC_PODMAN_URL", None)
    return env


def stop_shared_service() -> bool:
    """Stop hermetic's shared podman service, so that the next command starts it (cold)."""
    from sandbox.podman_api import shared_service

    return shared_service().stop()


def hermetic_build(
    spec_dir: Path, scratch: Path, env: dict[str, str], extra: Sequence[str] = ()
) -> tuple[float, dict[str, object]]:
    """Wall time of one ``hermetic build`` and its result document."""
    out = Path(tempfile.mkdtemp(dir=scratch, prefix="hermetic-")) / "out"
    started = time.monotonic()
    done = subprocess.run(
        ["hermetic", "build", str(spec_dir), "--out", str(out), "--json", *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"hermetic build failed:\n{done.stdout}\n{done.stderr}")
    result: dict[str, object] = json.loads(done.stdout)
    shutil.rmtree(out.parent)
    return elapsed, result
