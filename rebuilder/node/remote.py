"""Scale-out: the node hands builds to Celery workers over a Redis broker.

The node keeps its queue, its leases and its key; a worker (``hermetic node worker``, on
any machine, with its own directory and input store) builds and returns the unsigned
statement and the result files, which the node signs and publishes. Tasks are acknowledged
late: a worker killed mid-build leaves its task to be redelivered to another worker.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

from celery import Celery

from rebuilder.errors import Error
from rebuilder.node.execute import Execution, execute
from rebuilder.node.jobs import Job, Outcome
from sandbox.backend import connect_backend
from sandbox.config import SandboxConfig
from sandbox.trace.levels import TraceLevel

TASK = "hermetic.rebuild"
WORKER_DIR_ENV = "HERMETIC_WORKER_DIR"
MAX_RETURNED_BYTES = 256 * 1024**2  # outputs sent back through the result backend


class RemoteError(Error):
    """A remote worker failed (not the build): the node retries the job."""


def celery_app(broker: str, *, visibility_timeout_s: float = 3600.0) -> Celery:
    """The Celery app of nodes and workers (JSON only: no pickle from the network)."""
    app = Celery("hermetic", broker=broker, backend=broker)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={"visibility_timeout": visibility_timeout_s},
        result_expires=24 * 3600,
        broker_connection_retry_on_startup=True,
    )
    app.task(name=TASK)(_rebuild_task)
    return app


def _rebuild_task(
    job_id: str, archive_b64: str, attempt: int, builder_id: str, trace: str
) -> dict[str, Any]:
    """Runs on a worker: build in its own directory, return what the node needs."""
    root = Path(os.environ.get(WORKER_DIR_ENV) or Path.cwd() / "hermetic-worker").resolve()
    directory = root / "jobs" / job_id
    directory.mkdir(parents=True, exist_ok=True)
    config = replace(SandboxConfig.from_env(), store_dir=root / "store", work_dir=root / "work")
    execution = execute(
        base64.b64decode(archive_b64),
        directory,
        attempt=attempt,
        config=config,
        connect=connect_backend,
        trace=TraceLevel(trace),
        builder_id=builder_id,
        executor=f"{socket.gethostname()}:{os.getpid()}",
    )
    files: dict[str, str] = {}
    try:
        if execution.out_dir is not None:
            total = 0
            for path in sorted(execution.out_dir.rglob("*")):
                if path.is_file() and not path.is_symlink():
                    total += path.stat().st_size
                    if total > MAX_RETURNED_BYTES:
                        raise RemoteError(f"outputs exceed {MAX_RETURNED_BYTES} bytes to return")
                    relative = path.relative_to(execution.out_dir).as_posix()
                    files[relative] = base64.b64encode(path.read_bytes()).decode()
    finally:
        shutil.rmtree(directory, ignore_errors=True)  # the node keeps the results, not us
    return {
        "outcome": execution.outcome.value,
        "reason": execution.reason,
        "digest": execution.digest,
        "outputs": [list(item) for item in execution.outputs],
        "statement": base64.b64encode(execution.statement).decode()
        if execution.statement
        else None,
        "files": files,
        "executor": execution.executor,
    }


class CeleryDispatch:
    """The node's side: send a job to the workers and wait for its result."""

    def __init__(self, app: Celery, *, builder_id: str, trace: TraceLevel) -> None:
        self.app = app
        self.builder_id = builder_id
        self.trace = trace

    def __call__(self, job: Job, archive: bytes, directory: Path) -> Execution:
        pending = self.app.send_task(
            TASK,
            args=[
                job.id,
                base64.b64encode(archive).decode(),
                job.attempts,
                self.builder_id,
                self.trace.value,
            ],
        )
        try:
            answer: dict[str, Any] = pending.get(timeout=max(job.remaining_s, 1), propagate=True)
        except Exception as e:  # noqa: BLE001 - Celery, kombu and redis raise many kinds
            raise RemoteError(f"remote worker: {e}") from None
        out = directory / "out"
        partial = directory / ".out.partial"
        shutil.rmtree(partial, ignore_errors=True)
        for relative, data in answer["files"].items():
            target = (partial / relative).resolve()
            if not target.is_relative_to(partial.resolve()):
                raise RemoteError(f"a worker returned a file outside the results: {relative}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(base64.b64decode(data))
        shutil.rmtree(out, ignore_errors=True)
        if partial.exists():
            partial.rename(out)
        statement = answer.get("statement")
        return Execution(
            outcome=Outcome(answer["outcome"]),
            reason=str(answer["reason"]),
            digest=answer.get("digest"),
            outputs=tuple((str(p), str(d)) for p, d in answer["outputs"]),
            statement=base64.b64decode(statement) if statement else None,
            out_dir=out if out.exists() else None,
            executor=str(answer.get("executor", "")),
        )


def run_worker(broker: str, directory: Path, *, concurrency: int = 1) -> None:
    """``hermetic node worker``: serve builds from the broker until interrupted."""
    os.environ[WORKER_DIR_ENV] = str(directory.resolve())
    directory.mkdir(parents=True, exist_ok=True)
    app = celery_app(broker)
    pool = (
        ["--pool=solo"] if concurrency == 1 else ["--pool=threads", f"--concurrency={concurrency}"]
    )
    app.worker_main(
        [
            "worker",
            "--loglevel=WARNING",
            "--without-gossip",
            "--without-mingle",
            f"--hostname=hermetic-{os.getpid()}@{socket.gethostname()}",
            *pool,
        ]
    )
