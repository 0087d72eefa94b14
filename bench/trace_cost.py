"""What tracing costs per notification and per program, on two loops in hermetic-minimal:

- ``open``: one shell writes a file N times (``: > f``): one notification each, from one
  process (the supervisor and the build stay warm);
- ``exec``: one shell runs ``/bin/true`` M times: a new process each, whose exec and exit
  the supervisor sees, places (its pid, parent and namespace pid) and settles (did the
  exec replace the program?), and whose stdout and stderr it reads.

Each loop is built traced (``standard``) and untraced, pairs interleaved; the cost is the
difference of the container's run time (``duration_s`` of result.json: without the
command's fixed cost) divided by the count. Fresh commands, a user's defaults.

Usage: python -m bench.trace_cost [--pairs 3] [--opens 20000] [--execs 2000]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

from bench.common import hermetic_build, user_env

LOOP = """
[build]
image = "hermetic-minimal"
command = ["sh", "-c", "i=0; while [ $i -lt {count} ]; do {body}; i=$((i+1)); done; echo > out"]
outputs = ["out"]
source_date_epoch = 1
"""


def loop_spec(directory: Path, count: int, body: str) -> Path:
    directory.mkdir(parents=True)
    (directory / "hermetic.toml").write_text(LOOP.format(count=count, body=body))
    return directory


def cost(spec: Path, scratch: Path, count: int, pairs: int) -> tuple[float, float, float]:
    """Median run time untraced and traced (s), and the median cost per iteration (µs)."""
    env = user_env()
    off, traced, each = [], [], []
    for pair in range(pairs):
        levels = ["off", "standard"] if pair % 2 == 0 else ["standard", "off"]
        seconds = {}
        for level in levels:
            _, result = hermetic_build(spec, scratch, env, [f"--trace={level}"])
            seconds[level] = float(result["duration_s"])  # type: ignore[arg-type]
        off.append(seconds["off"])
        traced.append(seconds["standard"])
        each.append((seconds["standard"] - seconds["off"]) / count * 1e6)
    return statistics.median(off), statistics.median(traced), statistics.median(each)


def main() -> None:
    parser = argparse.ArgumentParser(description="tracing cost per notification and program")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--opens", type=int, default=20000)
    parser.add_argument("--execs", type=int, default=2000)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="hermetic-bench-"))
    try:
        opens = loop_spec(scratch / "open", args.opens, ": > f")
        execs = loop_spec(scratch / "exec", args.execs, "/bin/true")
        for name, spec, count, unit in (
            ("open", opens, args.opens, "notification"),
            ("exec", execs, args.execs, "program (exec + exit)"),
        ):
            off, traced, each = cost(spec, scratch, count, args.pairs)
            print(
                f"{name}: {count} iterations, untraced {off:.2f}s, traced {traced:.2f}s: "
                f"{each:.0f} µs per {unit} (median of {args.pairs} pairs, container run time)",
                flush=True,
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
