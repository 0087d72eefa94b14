"""Time to a first build of a new project, as a new user has it: ``hermetic init``, then
``hermetic image build`` (a new image: no lock yet), then ``hermetic build``, for a
Python project (the python-wheel example without its spec) and a C project (GNU hello);
and the build time and size of every toolchain image (each example's [image], rebuilt).

Usage: python -m bench.first_build [--tarball hello-2.10.tar.gz] [--skip-images]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

from bench.common import REPO, find_tarball, user_env

# one example per toolchain image (the [image] tables 'hermetic init' writes)
TOOLCHAINS = {
    "python": "python-wheel",
    "go": "go-hello",
    "rust": "rust-hello",
    "c": "cmake-hello",
    "node": "node-pack",
}


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    started = time.monotonic()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}")
    return time.monotonic() - started


def first_build(project: Path, env: dict[str, str]) -> dict[str, float]:
    steps = {
        "init": ["hermetic", "init", "."],
        "image_build": ["hermetic", "image", "build", "."],
        "build": ["hermetic", "build", ".", "--out", str(project.parent / "out")],
    }
    times = {name: round(timed(argv, env, project), 1) for name, argv in steps.items()}
    times["total"] = round(sum(times.values()), 1)
    return times


def image_size(reference: str) -> int:
    done = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Size}}", reference],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return int(done.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tarball", help="GNU hello 2.10 (default: the shared fixture)")
    parser.add_argument("--skip-images", action="store_true", help="no toolchain image builds")
    args = parser.parse_args()
    report: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="hermetic-bench-") as temp:
        scratch = Path(temp)
        env = user_env()  # hermetic's shared podman service, as a user has it
        env = {**env, "HERMETIC_WORK_DIR": str(scratch / "work"), "HERMETIC_SIGN": ""}
        python = scratch / "python" / "project"
        shutil.copytree(REPO / "docs" / "examples" / "python-wheel", python)
        (python / "hermetic.toml").unlink()
        (python / "hermetic.lock").unlink()  # a new project: no lock, a new image
        report["python_first_build_s"] = first_build(python, env)
        with tarfile.open(find_tarball(args.tarball)) as archive:
            archive.extractall(scratch / "c")
        report["c_first_build_s"] = first_build(scratch / "c" / "hello-2.10", env)
        if not args.skip_images:
            images: dict[str, dict[str, float]] = {}
            for name, example in TOOLCHAINS.items():
                project = scratch / "images" / name
                shutil.copytree(REPO / "docs" / "examples" / example, project)
                (project / "hermetic.lock").unlink(missing_ok=True)  # a fresh build
                seconds = timed(["hermetic", "image", "build", "."], env, project)
                lock = json.loads((project / "hermetic.lock").read_text())
                reference = f"localhost/hermetic/{lock['name']}@{lock['image_digest']}"
                images[name] = {
                    "build_s": round(seconds, 1),
                    "size_mb": round(image_size(reference) / 1e6),
                }
            report["toolchain_images"] = images
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
