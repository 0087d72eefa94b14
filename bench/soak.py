"""Soak: trivial jobs through one rebuilder node (``hermetic node serve`` with embedded
workers, on loopback) while a chaos loop SIGKILLs and restarts it, against the same jobs
without chaos. Counts jobs lost, finished twice and unsigned; reports jobs per minute and
the fraction of the run the node was down.

Usage: python -m bench.soak [--jobs 200] [--workers 2] [--chaos 20:40] [--seed 1]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from rebuilder.attest.keys import generate_keypair, load_public_key
from rebuilder.attest.verify import verify_attestation
from rebuilder.node.auth import token_digest
from rebuilder.node.requests import pack_source

TOKEN = "hmt_soak-token-for-one-node"
SPEC = """
[build]
image = "{image}"
command = ["sh", "-c", "{script}"]
outputs = ["out.txt"]
source_date_epoch = 1700000000
[limits]
timeout = "5m"
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class NodeProcess:
    """``hermetic node serve`` as a user runs it, which a test may kill and start again."""

    root: Path
    env: dict[str, str]
    workers: int = 2
    lease_s: float = 3.0
    deadline_s: float = 3600.0
    max_jobs: int = 256
    max_attempts: int = 5
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.key = self.root / "key"
        if not self.key.exists():
            generate_keypair(self.key)
        self.tokens = self.root / "tokens.json"
        entry = {"name": "soak", "sha256": token_digest(TOKEN), "scopes": ["submit", "read"]}
        self.tokens.write_text(json.dumps({"tokens": [entry]}))
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        )

    def argv(self) -> list[str]:
        hermetic = Path(sys.executable).parent / "hermetic"
        return [
            str(hermetic),
            "node",
            "serve",
            "--dir",
            str(self.root / "node"),
            "--key",
            str(self.key),
            "--tokens",
            str(self.tokens),
            "--listen",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(self.workers),
            "--lease",
            str(self.lease_s),
            "--deadline",
            str(self.deadline_s),
            "--max-jobs",
            str(self.max_jobs),
            "--max-client-jobs",  # one client submits every job of the soak
            str(self.max_jobs),
            "--max-attempts",
            str(self.max_attempts),
            "--rate",
            "1000000",  # the soak polls every job's status; it is not the attacker here
        ]

    def start(self, env: dict[str, str] | None = None) -> float:
        """Start it; the seconds until it answers."""
        started = time.monotonic()
        log = (self.root / f"node-{self.starts}.log").open("wb")
        self.process = subprocess.Popen(
            self.argv(),
            env=env or self.env,
            start_new_session=True,  # its own group: a kill takes the node and its helpers
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        log.close()
        self.starts += 1
        deadline = started + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the node exited at start; see {log.name}")
            try:
                self.client.get("/v1/node", timeout=1)
                return time.monotonic() - started
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("the node did not answer within 120s")

    def kill(self) -> None:
        """SIGKILL the node and every process of its group, as a power cut would."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()

    def submit(self, archive: bytes) -> str:
        response = self.client.post("/v1/rebuilds", content=archive)
        response.raise_for_status()
        return str(response.json()["id"])

    def status(self, job_id: str) -> dict[str, Any]:
        response = self.client.get(f"/v1/rebuilds/{job_id}")
        response.raise_for_status()
        answer: dict[str, Any] = response.json()
        return answer

    def attestation(self, job_id: str) -> bytes:
        response = self.client.get(f"/v1/rebuilds/{job_id}/attestation")
        response.raise_for_status()
        return response.content

    def listed(self, digest: str) -> list[str]:
        response = self.client.get("/v1/attestations", params={"subject": f"sha256:{digest}"})
        response.raise_for_status()
        return [job["id"] for job in response.json()["jobs"]]


def trivial_archives(root: Path, image: str, count: int, script: str) -> list[bytes]:
    """One request per job, each with its own output (so each has its own digest)."""
    archives = []
    for index in range(count):
        source = root / f"src-{index}"
        source.mkdir(parents=True, exist_ok=True)
        text = SPEC.format(image=image, script=script.format(n=index))
        (source / "hermetic.toml").write_text(text)
        archives.append(pack_source(source, root / f"pack-{index}"))
    return archives


@dataclass
class SoakReport:
    jobs: int
    seconds: float
    restarts: int
    down_seconds: float
    lost: list[str]  # not finished, or finished but not built
    twice: list[str]  # listed more than once, or whose attestation changed once served
    unsigned: list[str]  # attestation missing, not verifying, or not about the job's output
    attempts: dict[str, int]

    @property
    def jobs_per_minute(self) -> float:
        return 60 * self.jobs / self.seconds

    def to_json(self) -> dict[str, Any]:
        return {
            "jobs": self.jobs,
            "seconds": round(self.seconds, 1),
            "jobs_per_minute": round(self.jobs_per_minute, 1),
            "restarts": self.restarts,
            "down_seconds": round(self.down_seconds, 1),
            "down_fraction": round(self.down_seconds / self.seconds, 3),
            "lost": self.lost,
            "twice": self.twice,
            "unsigned": self.unsigned,
            "max_attempts_used": max(self.attempts.values(), default=0),
            "retried_jobs": sum(1 for n in self.attempts.values() if n > 1),
        }


class _Chaos:
    """Kills and restarts the node at random intervals until told to stop."""

    def __init__(self, node: NodeProcess, interval: tuple[float, float], seed: int) -> None:
        self.node = node
        self.interval = interval
        self.random = random.Random(seed)  # the kill times are repeatable
        self.stop = threading.Event()
        self.down_seconds = 0.0
        self.restarts = 0
        self.up = threading.Event()
        self.up.set()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.wait(self.random.uniform(*self.interval)):
                self.up.clear()
                down = time.monotonic()
                self.node.kill()
                self.node.start()
                self.down_seconds += time.monotonic() - down
                self.restarts += 1
                self.up.set()
        except BaseException as e:  # noqa: BLE001 - reported by the caller
            self.error = e
            self.up.set()


def soak(
    root: Path,
    *,
    env: dict[str, str],
    image: str,
    jobs: int,
    workers: int = 2,
    chaos: tuple[float, float] | None = None,
    seed: int = 1,
    script: str = "echo {n} > out.txt",  # out.txt must hold the job's number
    timeout_s: float = 3600,
) -> SoakReport:
    """Run ``jobs`` trivial jobs through one node, with a chaos loop when ``chaos`` is set."""
    node = NodeProcess(root / "node", env, workers=workers)
    archives = trivial_archives(root / "requests", image, jobs, script)
    chaos_loop = _Chaos(node, chaos, seed) if chaos else None
    served: dict[str, bytes] = {}
    node.start()
    try:
        ids = [node.submit(archive) for archive in archives]
        started = time.monotonic()
        thread = None
        if chaos_loop is not None:
            thread = threading.Thread(target=chaos_loop.run, daemon=True)
            thread.start()
        pending = set(ids)
        while pending:
            if time.monotonic() - started > timeout_s:
                raise RuntimeError(f"{len(pending)} jobs unfinished after {timeout_s}s")
            if chaos_loop is not None:
                if chaos_loop.error is not None:
                    raise RuntimeError(f"the chaos loop failed: {chaos_loop.error}")
                chaos_loop.up.wait()
            try:
                for job_id in sorted(pending):
                    if node.status(job_id)["state"] == "finished":
                        served[job_id] = node.attestation(job_id)
                        pending.discard(job_id)
            except httpx.HTTPError:
                continue  # killed under us: ask again once it is back
            time.sleep(0.5)
        seconds = time.monotonic() - started
        if chaos_loop is not None and thread is not None:
            chaos_loop.stop.set()
            thread.join()
            chaos_loop.up.wait()
        expected = expected_outputs(ids)
        return judge(
            node,
            ids,
            expected,
            served,
            seconds,
            restarts=chaos_loop.restarts if chaos_loop else 0,
            down_seconds=chaos_loop.down_seconds if chaos_loop else 0.0,
        )
    finally:
        if chaos_loop is not None:
            chaos_loop.stop.set()
        node.stop()
        node.client.close()


def expected_outputs(ids: list[str]) -> dict[str, str]:
    """The sha256 of each job's out.txt (job ``n`` of :func:`trivial_archives` writes n)."""
    return {job_id: hashlib.sha256(f"{n}\n".encode()).hexdigest() for n, job_id in enumerate(ids)}


def judge(
    node: NodeProcess,
    ids: list[str],
    expected: dict[str, str],
    served: dict[str, bytes],
    seconds: float,
    *,
    restarts: int = 0,
    down_seconds: float = 0.0,
) -> SoakReport:
    """What became of each job: lost, finished (and signed) twice, or signed wrongly.

    Args:
        served: each job's attestation as first served (it must never change).
    """
    key = load_public_key(node.key.with_name("key.pub"))
    lost, twice, unsigned, attempts = [], [], [], {}
    scratch = Path(tempfile.mkdtemp(prefix="hermetic-soak-"))
    for job_id in ids:
        status = node.status(job_id)
        attempts[job_id] = int(status["attempts"])
        if status["state"] != "finished" or status["outcome"] != "built":
            lost.append(job_id)
            continue
        envelope = node.attestation(job_id)
        if envelope != served[job_id]:
            twice.append(job_id)  # signed again after it was served
        path = scratch / f"{job_id}.json"
        path.write_bytes(envelope)
        checked = verify_attestation(path, [key])
        subjects = [s.sha256 for s in checked.statement.subjects] if checked.statement else []
        if not checked.ok or subjects != [expected[job_id]]:
            unsigned.append(job_id)  # unsigned, or signed for another output
            continue
        if node.listed(subjects[0]) != [job_id]:
            twice.append(job_id)
    return SoakReport(
        jobs=len(ids),
        seconds=seconds,
        restarts=restarts,
        down_seconds=down_seconds,
        lost=lost,
        twice=twice,
        unsigned=unsigned,
        attempts=attempts,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="node soak under chaos")
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chaos", default="20:40", help="seconds between kills, MIN:MAX")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--image", default="hermetic-minimal")
    args = parser.parse_args()
    low, high = (float(x) for x in args.chaos.split(":"))
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="hermetic-soak-") as scratch:
        calm = soak(
            Path(scratch) / "calm", env=env, image=args.image, jobs=args.jobs, workers=args.workers
        )
        print("without chaos:", json.dumps(calm.to_json()), flush=True)
        stormy = soak(
            Path(scratch) / "chaos",
            env=env,
            image=args.image,
            jobs=args.jobs,
            workers=args.workers,
            chaos=(low, high),
            seed=args.seed,
        )
        print("with chaos:   ", json.dumps(stormy.to_json()), flush=True)
    print(
        f"jobs/min: {calm.jobs_per_minute:.1f} without chaos, {stormy.jobs_per_minute:.1f} with "
        f"(kill every {low:g}-{high:g}s, {stormy.restarts} restarts, "
        f"{100 * stormy.down_seconds / stormy.seconds:.1f}% of the time down); "
        f"lost {len(stormy.lost)}, finished twice {len(stormy.twice)}, "
        f"unsigned {len(stormy.unsigned)}"
    )


if __name__ == "__main__":
    main()
