"""Rebuilder node queue: overhead per job beyond the build itself, and throughput with 1
and 2 workers.

Overhead: the same trivial build run directly (``run_build``) and through a node
(submit, queue, lease, build, sign, finish), alternating, N pairs; the difference of the
medians is what the queue costs. Throughput: M CPU-bound jobs through a node with 1, then
2 workers; jobs per minute and the speed-up.

Usage: python -m bench.node_queue [--pairs 10] [--jobs 6]   (as the build user)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from rebuilder.attest.keys import generate_keypair, load_signer
from rebuilder.node.jobs import JobState
from rebuilder.node.node import Node, NodeSettings
from rebuilder.node.requests import pack_source
from sandbox import connect_backend
from sandbox.build import BuildRequest, run_build
from sandbox.config import SandboxConfig
from sandbox.image_build import build_image
from sandbox.images import ImageCatalog
from sandbox.podman_api import PodmanService
from sandbox.spec import Spec

TRIVIAL = "echo hello > out.txt"
BUSY = "i=0; while [ $i -lt 400000 ]; do i=$((i+1)); done; echo $i > out.txt"


def write(directory: Path, script: str) -> Path:
    directory.mkdir(parents=True)
    (directory / "hermetic.toml").write_text(
        f'[build]\nimage = "hermetic-minimal"\ncommand = ["sh", "-c", "{script}"]\n'
        'outputs = ["out.txt"]\nsource_date_epoch = 1\n'
    )
    return directory


def wait(node: Node, job_ids: list[str]) -> None:
    while any(node.job(j).state is not JobState.FINISHED for j in job_ids):
        time.sleep(0.005)


def main() -> None:
    parser = argparse.ArgumentParser(description="node queue overhead and throughput")
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=6)
    args = parser.parse_args()
    base = SandboxConfig.from_env()
    with (
        tempfile.TemporaryDirectory(prefix="hermetic-bench-") as scratch,
        PodmanService(url=base.podman_url) as session,
    ):
        root = Path(scratch)
        build_image(
            ImageCatalog(base.images_dir).get("hermetic-minimal"),
            store=session,
            work_dir=base.work_dir,
        )
        config = base  # the default path: hermetic's shared podman service, as a node uses it
        generate_keypair(root / "key")
        signer = load_signer(str(root / "key"))
        trivial = write(root / "trivial", TRIVIAL)
        archive = pack_source(trivial, root / "pack")

        def node_with(workers: int, name: str) -> Node:
            settings = NodeSettings(
                directory=root / name,
                builder_id="bench",
                workers=workers,
                max_client_jobs=max(args.jobs, 4),  # one client submits them all
            )
            node = Node(settings, signer, config=config)
            node.start()
            return node

        node = node_with(1, "overhead")
        direct, queued = [], []
        try:
            for pair in range(args.pairs):
                for way in ("direct", "queued") if pair % 2 == 0 else ("queued", "direct"):
                    started = time.perf_counter()
                    if way == "direct":
                        spec = Spec.from_toml(trivial)
                        out = root / f"direct-{pair}"
                        with connect_backend(config) as backend:
                            run_build(
                                BuildRequest(spec=spec, out_dir=out), config=config, backend=backend
                            )
                        direct.append(time.perf_counter() - started)
                    else:
                        job = node.submit(archive, "bench")
                        wait(node, [job.id])
                        queued.append(time.perf_counter() - started)
        finally:
            node.close()
        overhead_ms = (statistics.median(queued) - statistics.median(direct)) * 1000
        print(
            f"trivial build: direct median {statistics.median(direct) * 1000:.0f} ms, "
            f"through the node median {statistics.median(queued) * 1000:.0f} ms "
            f"({args.pairs} pairs)"
        )
        print(f"queue overhead per job: {overhead_ms:.0f} ms (target <= 100 ms)")

        busy = pack_source(write(root / "busy", BUSY), root / "pack-busy")
        rates = {}
        for workers in (1, 2):
            node = node_with(workers, f"throughput-{workers}")
            try:
                started = time.perf_counter()
                ids = [node.submit(busy, "bench").id for _ in range(args.jobs)]
                wait(node, ids)
                elapsed = time.perf_counter() - started
            finally:
                node.close()
            rates[workers] = args.jobs / elapsed * 60
            rate = rates[workers]
            print(f"{workers} worker(s): {args.jobs} jobs in {elapsed:.1f} s, {rate:.1f} jobs/min")
        print(f"throughput 2 workers / 1 worker: {rates[2] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
