"""A command's fixed cost, side by side with its floor, as a user runs it:

- a trivial ``hermetic build`` (``echo hi > out.txt`` in hermetic-minimal, default options)
  against ``podman run --rm --network=none`` of the same image: the median of N pairs of
  fresh commands, alternating which goes first; once with hermetic's shared podman service
  running (every command but a user's first), once with it stopped before each build (a
  user's first command, which starts it);
- ``hermetic --help`` (and ``--version``, when the CLI has it) against
  ``python3 -c "import typer"``;
- what each further build costs inside one command (a check's builds, a node's jobs): one
  process connects once and builds N times; the first build against the median of the rest.

Usage: python -m bench.startup [--pairs 10] [--builds 6]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import stop_shared_service, user_env
from sandbox import connect_backend
from sandbox.build import BuildRequest, run_build
from sandbox.config import SandboxConfig
from sandbox.images import ImageCatalog
from sandbox.spec import ImageReference, Spec

TRIVIAL = """
[build]
image = "hermetic-minimal"
command = ["sh", "-c", "echo hi > out.txt"]
outputs = ["out.txt"]
source_date_epoch = 1
"""
HERMETIC = str(Path(sys.executable).parent / "hermetic")


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    started = time.monotonic()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, timeout=600)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"{argv[0]} failed ({done.returncode}):\n{done.stderr.decode()[-2000:]}")
    return elapsed


def pairs(
    count: int, ours: Callable[[], float], floor: Callable[[], float]
) -> tuple[list[float], list[float]]:
    """Run ``count`` pairs, alternating which goes first; the two lists of seconds."""
    mine, theirs = [], []
    for index in range(count):
        if index % 2 == 0:
            mine.append(ours())
            theirs.append(floor())
        else:
            theirs.append(floor())
            mine.append(ours())
    return mine, theirs


def line(label: str, mine: list[float], theirs: list[float], floor: str, target: str) -> str:
    ratios = [a / b for a, b in zip(mine, theirs, strict=True)]
    return (
        f"{label}: {statistics.median(mine):.3f}s vs {floor} {statistics.median(theirs):.3f}s, "
        f"ratio {statistics.median(ratios):.2f} (median of {len(ratios)} pairs; target {target})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="fixed cost of hermetic's commands")
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--builds", type=int, default=6)
    args = parser.parse_args()
    env = user_env()
    config = SandboxConfig.from_env()
    image = ImageCatalog(config.images_dir).resolve(ImageReference(name="hermetic-minimal"))
    with tempfile.TemporaryDirectory(prefix="hermetic-bench-") as scratch:
        root = Path(scratch)
        (root / "hermetic.toml").write_text(TRIVIAL)
        build = [HERMETIC, "build", str(root), "--out", str(root / "out")]
        podman = ["podman", "run", "--rm", "--network=none", image.reference]
        podman += ["sh", "-c", "echo hi > /tmp/out.txt"]
        timed(build, env, root)  # warm-up: the page cache, the shared service
        timed(podman, env, root)

        mine, theirs = pairs(
            args.pairs, lambda: timed(build, env, root), lambda: timed(podman, env, root)
        )
        print(line("trivial hermetic build", mine, theirs, "podman run --rm", "<= 3"), flush=True)

        def cold() -> float:
            stop_shared_service()
            return timed(build, env, root)

        mine, theirs = pairs(args.pairs, cold, lambda: timed(podman, env, root))
        print(
            line(
                "trivial hermetic build, service cold (a first command)",
                mine,
                theirs,
                "podman run --rm",
                "-",
            ),
            flush=True,
        )

        typer = [sys.executable, "-c", "import typer"]
        for option in ("--help", "--version"):
            probe = subprocess.run([HERMETIC, option], env=env, capture_output=True, timeout=60)
            if probe.returncode != 0:
                print(f"hermetic {option}: not available ({probe.returncode})")
                continue
            mine, theirs = pairs(
                args.pairs,
                lambda option=option: timed([HERMETIC, option], env, root),  # type: ignore[misc]
                lambda: timed(typer, env, root),
            )
            print(line(f"hermetic {option}", mine, theirs, "import typer", "<= 2"), flush=True)

        spec = Spec.from_toml(root / "hermetic.toml")
        times = []
        with connect_backend(config) as backend:
            for index in range(args.builds):
                started = time.monotonic()
                run_build(
                    BuildRequest(spec=spec, out_dir=root / f"in-{index}"),
                    config=config,
                    backend=backend,
                )
                times.append(time.monotonic() - started)
        print(
            f"builds in one process: first {times[0]:.3f}s, then median "
            f"{statistics.median(times[1:]):.3f}s per build ({args.builds} builds; the library "
            "path a check or a node takes, no import or service start after the first)"
        )


if __name__ == "__main__":
    main()
