"""The cost of pinned, offline language dependencies against the same install on the
host with network: a Python application with 30+ wheels and an npm project with 200+
packages. For each: 'hermetic pin' time, the first build (inputs fetched into an empty
store), the second build (every input from the store), and the host install.

Usage: python -m bench.pin_cost [--skip-npm]
(needs the python and node toolchain images' locks of docs/examples, and npm on the host
for the npm lockfile and the host install)
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO, user_env

# Top-level requirements; pip resolves them (set-up, not measured) into 30+ pins.
PYTHON_TOP = ["sphinx==7.2.6", "requests==2.31.0", "flask==3.0.0", "pytest==7.4.3", "boto3==1.34.0"]
# An npm project whose lockfile has 200+ packages.
NPM_TOP = {"eslint": "8.56.0", "webpack": "5.89.0", "jest": "29.7.0"}


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.monotonic()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return time.monotonic() - started


def python_requirements(directory: Path) -> int:
    """Resolve the top-level requirements into pins (pip's resolver, Python 3.11)."""
    report = directory / "report.json"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--report", str(report), "--only-binary=:all:", "--python-version", "3.11",
         "--platform", "manylinux_2_17_x86_64", "--platform", "any",
         *PYTHON_TOP],
        check=True, timeout=600,
    )  # fmt: skip
    pins = sorted(
        f"{item['metadata']['name']}=={item['metadata']['version']}"
        for item in json.loads(report.read_text())["install"]
    )
    (directory / "requirements.txt").write_text("\n".join(pins) + "\n")
    return len(pins)


def measure(
    project: Path, pin: list[str], host: list[str], env: dict[str, str]
) -> dict[str, float]:
    store = project.parent / "store"
    pin_s = run(["hermetic", *pin], project, {**env, "HERMETIC_STORE": str(store)})
    fresh = {**env, "HERMETIC_STORE": str(project.parent / "fresh-store")}
    first = run(["hermetic", "build", ".", "--out", str(project.parent / "one")], project, fresh)
    second = run(["hermetic", "build", ".", "--out", str(project.parent / "two")], project, fresh)
    host_dir = project.parent / "host"
    shutil.copytree(project, host_dir)
    host_s = run(["sh", "-c", " && ".join(host)], host_dir, env)
    return {
        "pin_s": round(pin_s, 1),
        "first_build_s": round(first, 1),
        "second_build_s": round(second, 1),
        "host_install_s": round(host_s, 1),
        "first_vs_host": round(first / host_s, 2),
        "second_vs_host": round(second / host_s, 2),
    }


def spec(example: str, command: str) -> str:
    text = (REPO / "docs" / "examples" / example / "hermetic.toml").read_text()
    image = text[text.index("[image]") : text.index("[limits]")]
    # npm's V8 reserves address space that a per-process RLIMIT_DATA (the memory limit's
    # fallback without a cgroup memory controller) counts: give it room
    limits = '[limits]\nmemory = "16GiB"\n'
    build = f'[build]\ncommand = ["sh", "-c", {json.dumps(command)}]\noutputs = ["done"]\n'
    return f"{build}\n{image}\n{limits}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-npm", action="store_true")
    args = parser.parse_args()
    report: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="hermetic-bench-pin-") as temp:
        scratch = Path(temp)
        env = user_env()  # hermetic's shared podman service, as a user has it
        env = {**env, "HERMETIC_SIGN": "", "HERMETIC_WORK_DIR": str(scratch / "work")}
        project = scratch / "python" / "project"
        project.mkdir(parents=True)
        count = python_requirements(project)
        install = "venv/bin/pip install --no-compile -r requirements.txt"
        command = f"python3 -m venv venv && {install} && touch done"
        (project / "hermetic.toml").write_text(spec("python-wheel", command))
        shutil.copy(REPO / "docs/examples/python-wheel/hermetic.lock", project)
        python = measure(
            project,
            ["pin", "pip", "requirements.txt"],
            ["python3 -m venv venv", f"PIP_NO_CACHE_DIR=1 {install} -q"],
            env,
        )
        report["python"] = {"wheels": count, **python}
        if not args.skip_npm:
            project = scratch / "npm" / "project"
            project.mkdir(parents=True)
            (project / "package.json").write_text(
                json.dumps({"name": "bench", "version": "1.0.0", "dependencies": NPM_TOP})
            )
            run(["npm", "install", "--package-lock-only", "--ignore-scripts"], project, env)
            lock = json.loads((project / "package-lock.json").read_text())
            count = len([k for k in lock["packages"] if k])
            command = "npm cache add ./npm/*.tgz && npm ci --ignore-scripts && touch done"
            (project / "hermetic.toml").write_text(spec("node-pack", command))
            shutil.copy(REPO / "docs/examples/node-pack/hermetic.lock", project)
            npm = measure(
                project,
                ["pin", "npm", "package-lock.json"],
                ["npm ci --ignore-scripts --cache ./.npm-cache"],
                env,
            )
            report["npm"] = {"packages": count, **npm}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
