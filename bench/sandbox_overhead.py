"""Sandbox overhead: ``hermetic build --trace=off`` of GNU hello vs the same
``./configure && make`` run directly on the host with the host's toolchain.

Runs N pairs side by side (alternating which goes first) and prints each pair's ratio
and the median. Each hermetic build is a fresh command with a user's defaults: it finds
hermetic's shared podman service (the warm-up command starts it, as a user's first command
does) and pays everything else a user's command pays. Both gcc versions are printed, so
"the same toolchain" can be checked.

Usage: python -m bench.sandbox_overhead [--pairs 5] [--tarball PATH]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import (
    HELLO_BUILD,
    REPO,
    find_tarball,
    hermetic_build,
    user_env,
    write_hello_spec,
)

HOST_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "TZ": "UTC",
    "SOURCE_DATE_EPOCH": "1416009600",
}


def host_build(tarball: Path, scratch: Path) -> float:
    work = Path(tempfile.mkdtemp(dir=scratch, prefix="host-"))
    shutil.copy(tarball, work / "hello-2.10.tar.gz")
    started = time.monotonic()
    subprocess.run(
        ["sh", "-c", HELLO_BUILD],
        cwd=work,
        env=HOST_ENV,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=1800,
    )
    elapsed = time.monotonic() - started
    shutil.rmtree(work)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description="sandbox overhead on GNU hello")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--tarball")
    args = parser.parse_args()
    tarball = find_tarball(args.tarball)
    scratch = Path(tempfile.mkdtemp(prefix="hermetic-bench-"))
    spec_dir = write_hello_spec(scratch / "spec", tarball)
    host_gcc = subprocess.run(["gcc", "--version"], capture_output=True, text=True, check=True)
    lock = json.loads((REPO / "images" / "debian-bookworm" / "lock.json").read_text())
    print(f"host gcc:  {host_gcc.stdout.splitlines()[0]}")
    print(f"image gcc: gcc-12 {lock['packages']['gcc-12']} (debian-bookworm lock)")
    untraced = ["--trace=off"]
    try:
        env = user_env()
        hermetic_build(spec_dir, scratch, env, untraced)  # warm-up: store the input
        host_build(tarball, scratch)
        ratios, hosts, boxed = [], [], []
        for pair in range(args.pairs):
            if pair % 2 == 0:
                host = host_build(tarball, scratch)
                sandboxed, result = hermetic_build(spec_dir, scratch, env, untraced)
            else:
                sandboxed, result = hermetic_build(spec_dir, scratch, env, untraced)
                host = host_build(tarball, scratch)
            hosts.append(host)
            boxed.append(sandboxed)
            ratios.append(sandboxed / host)
            print(
                f"pair {pair + 1}: host {host:6.2f}s  hermetic build {sandboxed:6.2f}s  "
                f"ratio {sandboxed / host:.3f}  ({str(result['digest'])[:19]}…)",
                flush=True,
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(
        f"median: host {statistics.median(hosts):.2f}s, hermetic {statistics.median(boxed):.2f}s, "
        f"ratio {statistics.median(ratios):.3f} "
        f"(median of {args.pairs} pair ratios, a fresh command per build; target <= 1.05)"
    )


if __name__ == "__main__":
    main()
