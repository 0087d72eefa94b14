"""Sandbox overhead: ``hermetic build`` of GNU hello vs the same configure+make on the host.

Runs N pairs side by side (alternating which goes first), prints each pair's ratio and the
median. The host build uses the host's toolchain; the script prints both gcc versions so
that "the same toolchain" can be checked.

Usage: python -m bench.sandbox_overhead [--pairs 5] [--tarball PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HELLO_SHA256 = "31e066137a962676e89f69d1b65382de95a7ef7d914b8cb956f41ea72e0f516b"
HOST_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "TZ": "UTC",
    "SOURCE_DATE_EPOCH": "1416009600",
}
BUILD = "tar -xzf hello-2.10.tar.gz && cd hello-2.10 && ./configure && make"


def find_tarball(explicit: str | None) -> Path:
    for candidate in (
        explicit,
        os.environ.get("HERMETIC_HELLO_TARBALL"),
        str(REPO.parent / "shared" / "fixtures" / "hello-2.10.tar.gz"),
    ):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    sys.exit("no hello-2.10.tar.gz: pass --tarball or set HERMETIC_HELLO_TARBALL")


def host_build(tarball: Path, scratch: Path) -> float:
    work = Path(tempfile.mkdtemp(dir=scratch, prefix="host-"))
    shutil.copy(tarball, work / "hello-2.10.tar.gz")
    started = time.monotonic()
    subprocess.run(
        ["sh", "-c", BUILD],
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


def hermetic_build(spec_dir: Path, scratch: Path, env: dict[str, str]) -> tuple[float, str]:
    out = Path(tempfile.mkdtemp(dir=scratch, prefix="hermetic-")) / "out"
    started = time.monotonic()
    done = subprocess.run(
        ["hermetic", "build", str(spec_dir), "--out", str(out), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"hermetic build failed:\n{done.stdout}\n{done.stderr}")
    digest = json.loads(done.stdout)["digest"]
    shutil.rmtree(out.parent)
    return elapsed, digest


def gcc_version(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    return done.stdout.splitlines()[0] if done.stdout else done.stderr.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--tarball")
    args = parser.parse_args()
    tarball = find_tarball(args.tarball)
    scratch = Path(tempfile.mkdtemp(prefix="hermetic-bench-"))
    spec_dir = scratch / "spec"
    spec_dir.mkdir()
    (spec_dir / "hermetic.toml").write_text(f"""
[build]
image = "debian-bookworm"
command = ["sh", "-c", "{BUILD}"]
outputs = ["hello-2.10/hello"]
source_date_epoch = 1416009600
[[inputs]]
url = "{tarball.resolve().as_uri()}"
sha256 = "{HELLO_SHA256}"
dest = "hello-2.10.tar.gz"
""")
    service = None
    env = dict(os.environ)
    if not env.get("HERMETIC_PODMAN_URL"):
        # A user normally has podman's socket running (podman.socket); start one for the
        # whole run so that each build measures the build, not the service's start.
        socket_path = scratch / "podman.sock"
        service = subprocess.Popen(
            ["podman", "system", "service", "--time=0", f"unix://{socket_path}"],
            stderr=subprocess.DEVNULL,
        )
        while not socket_path.exists():
            time.sleep(0.05)
        env["HERMETIC_PODMAN_URL"] = f"unix://{socket_path}"
    try:
        print(f"host gcc:  {gcc_version(['gcc', '--version'])}")
        image_gcc = subprocess.run(
            [
                "python3",
                "-c",
                "import json,sys; print(json.load(open(sys.argv[1]))['packages']['gcc-12'])",
                str(REPO / "images" / "debian-bookworm" / "lock.json"),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        print(f"image gcc: gcc-12 {image_gcc} (debian-bookworm lock)")
        hermetic_build(spec_dir, scratch, env)  # warm-up: store the input, page in the image
        host_build(tarball, scratch)
        ratios, hosts, sandboxed = [], [], []
        for pair in range(args.pairs):
            if pair % 2 == 0:
                host = host_build(tarball, scratch)
                boxed, digest = hermetic_build(spec_dir, scratch, env)
            else:
                boxed, digest = hermetic_build(spec_dir, scratch, env)
                host = host_build(tarball, scratch)
            hosts.append(host)
            sandboxed.append(boxed)
            ratios.append(boxed / host)
            print(
                f"pair {pair + 1}: host {host:6.2f}s  hermetic build {boxed:6.2f}s  "
                f"ratio {boxed / host:.3f}  ({digest[:19]}…)",
                flush=True,
            )
        host_median, boxed_median = statistics.median(hosts), statistics.median(sandboxed)
        print(
            f"median: host {host_median:.2f}s, hermetic {boxed_median:.2f}s, "
            f"ratio {statistics.median(ratios):.3f} "
            f"(median of {args.pairs} pair ratios; target <= 1.05)"
        )
    finally:
        if service is not None:
            service.terminate()
            service.wait()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
