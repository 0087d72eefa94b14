"""``hermetic check`` side by side with ``reprotest --auto-build`` on GNU hello.

Both tools vary the same things (reprotest's set minus ``user_group``, which needs sudo
and a second account, and ``exec_path``, which hermetic has no equivalent for; reprotest's
``domain_host`` is hermetic's ``hostname``), both must name a culprit, and the wall times
are measured in one run, alternating which tool goes first. A trivial build is checked
too: that is the fixed cost of a check (image start, tracing, comparison).

reprotest's ``fileordering`` mounts disorderfs through /dev/fuse and ``domain_host``
unshares the UTS namespace, so reprotest runs as root; hermetic runs rootless as
``--user`` (the set-up's build user), as it always does.

Usage: python -m bench.check_vs_reprotest [--pairs 1] [--tarball PATH] [--user hermetic]
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import HELLO_BUILD, REPO, find_tarball, write_hello_spec

# The variations both tools run; hermetic names reprotest's domain_host "hostname".
REPROTEST_VARY = "-user_group,-exec_path"
HERMETIC_VARY = "-user_group"
TRIVIAL_BUILD = "echo hello > out.txt"


@dataclass(frozen=True)
class Run:
    """One tool's check: wall time, verdict and culprits as the tool reported them."""

    seconds: float
    reproducible: bool
    culprits: tuple[str, ...]
    builds: int


def _as_user(user: str | None, argv: list[str]) -> list[str]:
    """argv run as the unprivileged user with a clean environment (root only)."""
    if user is None:
        return argv
    entry = pwd.getpwnam(user)
    venv_bin = str(Path(sys.executable).parent)
    env = [
        f"HOME={entry.pw_dir}",
        f"USER={user}",
        f"LOGNAME={user}",
        "LANG=C.UTF-8",
        f"PATH={venv_bin}:/usr/local/bin:/usr/bin:/bin",
    ]
    if os.environ.get("HERMETIC_PODMAN_URL"):
        env.append(f"HERMETIC_PODMAN_URL={os.environ['HERMETIC_PODMAN_URL']}")
    return ["runuser", "-u", user, "--", "env", "-i", *env, *argv]


def run_hermetic(spec_dir: Path, scratch: Path, user: str | None) -> Run:
    report = Path(tempfile.mkdtemp(dir=scratch, prefix="check-")) / "report"
    if user is not None:
        shutil.chown(report.parent, user)
    argv = ["hermetic", "check", str(spec_dir), f"--vary={HERMETIC_VARY}"]
    argv += ["--report", str(report), "--json", "--trace=standard"]
    started = time.monotonic()
    done = subprocess.run(
        _as_user(user, argv), capture_output=True, text=True, cwd=scratch, timeout=3600
    )
    elapsed = time.monotonic() - started
    if done.returncode not in (0, 1):
        sys.exit(f"hermetic check failed ({done.returncode}):\n{done.stderr}")
    result = json.loads(done.stdout)
    shutil.rmtree(report.parent, ignore_errors=True)
    return Run(elapsed, result["reproducible"], tuple(result["culprits"]), len(result["builds"]))


def run_reprotest(source: Path, artifact: str, build: str, scratch: Path) -> Run:
    argv = ["reprotest", "--verbosity=1", "--auto-build", f"--vary={REPROTEST_VARY}"]
    argv += ["-c", build, str(source), artifact, "--", "null"]
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=scratch, timeout=7200)
    elapsed = time.monotonic() - started
    if done.returncode not in (0, 1):
        tail = "\n".join(done.stderr.splitlines()[-20:])
        sys.exit(f"reprotest failed ({done.returncode}):\n{tail}")
    builds = len(re.findall(r'^INFO:reprotest.*build "', done.stderr, re.MULTILINE))
    return Run(elapsed, done.returncode == 0, _reprotest_culprits(done.stdout), builds)


def _reprotest_culprits(stdout: str) -> tuple[str, ...]:
    """The names reprotest lists after "unreproducibility when varying each of"."""
    match = re.search(r"varying each of the following:\n((?:\S+\n)+)", stdout)
    return tuple(match.group(1).split()) if match else ()


def _write_trivial(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "hermetic.toml").write_text(f"""
[build]
image = "debian-bookworm"
command = ["sh", "-c", "{TRIVIAL_BUILD}"]
outputs = ["out.txt"]
""")
    return directory


def _line(tool: str, run: Run) -> str:
    verdict = "reproducible" if run.reproducible else "NOT reproducible"
    culprits = ", ".join(run.culprits) or "-"
    return f"  {tool:<10} {run.seconds:7.1f}s  {run.builds:2d} builds  {verdict} ({culprits})"


def main() -> None:
    parser = argparse.ArgumentParser(description="hermetic check vs reprotest on GNU hello")
    parser.add_argument("--pairs", type=int, default=1)
    parser.add_argument("--tarball")
    parser.add_argument("--user", default=os.environ.get("HERMETIC_USER", "hermetic"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: reprotest needs /dev/fuse (fileordering) and a UTS namespace")
    if shutil.which("reprotest") is None:
        sys.exit("reprotest is not installed: apt-get install reprotest disorderfs faketime")
    scratch = Path(tempfile.mkdtemp(prefix="hermetic-bench-"))
    scratch.chmod(0o755)  # the build user reads the specs and the tarball
    os.chdir(REPO)
    try:
        tarball = Path(shutil.copy(find_tarball(args.tarball), scratch / "hello-2.10.tar.gz"))
        spec_dir = write_hello_spec(scratch / "hello", tarball)
        reprotest_source = scratch / "reprotest-hello"  # the tarball, as hermetic's input
        reprotest_source.mkdir()
        shutil.copy(tarball, reprotest_source / tarball.name)
        trivial_dir = _write_trivial(scratch / "trivial")
        for path in (spec_dir, trivial_dir, tarball):
            path.chmod(0o755 if path.is_dir() else 0o644)
        ratios: list[float] = []
        for pair in range(args.pairs):
            runs: dict[str, Run] = {}
            order = ["hermetic", "reprotest"] if pair % 2 == 0 else ["reprotest", "hermetic"]
            for tool in order:
                if tool == "hermetic":
                    runs[tool] = run_hermetic(spec_dir, scratch, args.user)
                else:
                    runs[tool] = run_reprotest(
                        reprotest_source, "hello-2.10/hello", HELLO_BUILD, scratch
                    )
            ratio = runs["hermetic"].seconds / runs["reprotest"].seconds
            ratios.append(ratio)
            print(f"hello, pair {pair + 1}: ratio hermetic/reprotest {ratio:.3f}", flush=True)
            for tool in ("hermetic", "reprotest"):
                print(_line(tool, runs[tool]), flush=True)
        trivial_h = run_hermetic(trivial_dir, scratch, args.user)
        trivial_r = run_reprotest(trivial_dir, "out.txt", TRIVIAL_BUILD, scratch)
        print("trivial build (fixed cost of a check):")
        print(_line("hermetic", trivial_h))
        print(_line("reprotest", trivial_r))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(
        f"median ratio hermetic/reprotest on hello: {statistics.median(ratios):.3f} "
        f"(median of {args.pairs}; target <= 0.5; tracing on)"
    )


if __name__ == "__main__":
    main()
