"""Where a ``hermetic check``'s time goes: every build's timeline, by stage.

Runs ``run_check`` in this process (the library path the CLI takes after its imports and
the podman connection, which ``bench/startup.py`` times) on each spec directory given,
and prints for every build when it started (from the check's start), how long it spent
before its container (image, inputs, staging, tracer set-up), in its container, and
after it (hashing, copying the outputs, writing the trace), then what the check did
after its last build (waiting for diffoscope, hints, check.json). The fixed cost of one
build is its wall time minus its container's.

Usage: python -m bench.check_profile [--vary=-user_group] [--jobs 2] [--trace standard]
       SPEC_DIR...
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from rebuilder.check import CheckRequest, prepare_report_dir, run_check
from rebuilder.variations import parse_vary
from sandbox import connect_backend
from sandbox.config import SandboxConfig
from sandbox.observer import BuildObserver, NullObserver
from sandbox.result import BuildResult
from sandbox.spec import Spec
from sandbox.trace.levels import TraceLevel


@dataclass
class _Timeline:
    role: str
    started: float
    stages: dict[str, float] = field(default_factory=dict)
    finished: float | None = None


class _Stages(NullObserver):
    def __init__(self, timeline: _Timeline) -> None:
        self.timeline = timeline

    def stage(self, name: str, detail: str = "") -> None:
        self.timeline.stages.setdefault(name, time.monotonic())


class Recorder:
    """A CheckObserver that notes when each build starts, changes stage and ends."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.builds: dict[str, _Timeline] = {}

    def build_started(self, name: str, role: str, variations: tuple[str, ...]) -> None:
        with self.lock:
            self.builds[name] = _Timeline(role=role, started=time.monotonic())

    def build_finished(self, name: str, result: BuildResult) -> None:
        with self.lock:
            self.builds[name].finished = time.monotonic()

    def build_observer(self, name: str) -> BuildObserver:
        with self.lock:
            return _Stages(self.builds[name])


def profile(spec_dir: Path, args: argparse.Namespace, config: SandboxConfig) -> float:
    """Check one spec and print its timeline; the median fixed cost of its builds."""
    spec = Spec.from_toml(spec_dir)
    recorder = Recorder()
    with tempfile.TemporaryDirectory(prefix="hermetic-profile-") as scratch:
        request = CheckRequest(
            spec=spec,
            report_dir=prepare_report_dir(Path(scratch) / "report", Path(scratch)),
            variations=parse_vary(args.vary),
            seed=args.seed,
            jobs=args.jobs,
            trace=TraceLevel(args.trace),
        )
        with connect_backend(config) as backend:
            started = time.monotonic()
            result = run_check(request, config=config, backend=backend, observer=recorder)
            total = time.monotonic() - started
    verdict = "reproducible" if result.reproducible else "culprits " + ", ".join(result.culprits)
    print(f"{spec_dir}: {verdict}; {len(result.builds)} builds, {total:.2f}s in run_check")
    print("  build                 start   before  container  after   wall  (seconds)")
    fixed = []
    last = started
    for build in result.builds:
        line = recorder.builds[build.name]
        end = line.finished or line.started
        in_container = line.stages.get("build", end)
        after = line.stages.get("hash", end)
        wall = end - line.started
        fixed.append(wall - build.result.duration_s)
        last = max(last, end)
        print(
            f"  {build.name:<20} {line.started - started:6.2f} {in_container - line.started:8.2f}"
            f" {after - in_container:10.2f} {end - after:6.2f} {wall:6.2f}"
        )
    print(
        f"  after the last build: {started + total - last:.2f}s (diffoscope still running, "
        f"hints, check.json); fixed cost per build (wall - container run): median "
        f"{statistics.median(fixed):.2f}s"
    )
    return statistics.median(fixed)


def main() -> None:
    parser = argparse.ArgumentParser(description="where a check's time goes")
    parser.add_argument("specs", nargs="+", type=Path)
    parser.add_argument("--vary", default="-user_group")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--trace", default=TraceLevel.STANDARD.value)
    args = parser.parse_args()
    config = SandboxConfig.from_env()
    for spec_dir in args.specs:
        profile(spec_dir, args, config)


if __name__ == "__main__":
    main()
