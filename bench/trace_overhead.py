"""Tracing overhead: ``hermetic build`` of GNU hello traced (standard) vs untraced.

Runs N pairs side by side (alternating which goes first) and prints each pair's ratio,
the median, and one deep-traced build for scale. The digests must not change. Every build
is a fresh command with a user's defaults (hermetic's shared podman service).

Usage: python -m bench.trace_overhead [--pairs 5] [--tarball PATH] [--no-deep]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.common import find_tarball, hermetic_build, user_env, write_hello_spec


def main() -> None:
    parser = argparse.ArgumentParser(description="tracing overhead on GNU hello")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--tarball")
    parser.add_argument("--no-deep", action="store_true")
    args = parser.parse_args()
    tarball = find_tarball(args.tarball)
    scratch = Path(tempfile.mkdtemp(prefix="hermetic-bench-"))
    spec_dir = write_hello_spec(scratch / "spec", tarball)
    ratios: list[float] = []
    digests: set[object] = set()
    try:
        env = user_env()
        hermetic_build(spec_dir, scratch, env, ["--trace=off"])  # warm-up
        for pair in range(args.pairs):
            order = ["off", "standard"] if pair % 2 == 0 else ["standard", "off"]
            times: dict[str, float] = {}
            traced: dict[str, Any] = {}
            for level in order:
                times[level], result = hermetic_build(spec_dir, scratch, env, [f"--trace={level}"])
                digests.add(result["digest"])
                if level == "standard":
                    traced = dict(result["trace"])  # type: ignore[call-overload]
            ratio = times["standard"] / times["off"]
            ratios.append(ratio)
            print(
                f"pair {pair + 1}: untraced {times['off']:6.2f}s  "
                f"traced {times['standard']:6.2f}s  ratio {ratio:.3f}  "
                f"({traced.get('executions')} programs, "
                f"{traced.get('notifications', '?')} notifications)",
                flush=True,
            )
        if not args.no_deep:
            deep, result = hermetic_build(spec_dir, scratch, env, ["--trace=deep"])
            digests.add(result["digest"])
            print(f"deep: {deep:6.2f}s (one build, for scale)")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(
        f"median ratio traced/untraced: {statistics.median(ratios):.3f} "
        f"(median of {args.pairs} pairs, fresh commands; target <= 1.15); "
        f"output digests {'identical' if len(digests) == 1 else 'DIFFER: ' + str(digests)}"
    )


if __name__ == "__main__":
    main()
