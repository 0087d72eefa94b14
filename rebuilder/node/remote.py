"""Scale-out: the node hands builds to Celery workers over a Redis broker.

The node keeps its queue, its leases and its key; a worker (``hermetic node worker``, on
any machine, with its own directory, input store and rules) builds and returns what it
found: the outcome, result.json, build.log, trace.json and the outputs. The node trusts
none of it blindly: it reads an answer only up to a cap, writes the returned files below
the job through no link (every name and link target checked before anything is written,
every link resolved inside once all are in place), and writes and signs the provenance
itself from facts it computed or checked (:mod:`rebuilder.node.worker_result`). Tasks are
acknowledged late: a worker killed mid-build leaves its task to another worker.

A worker takes its rules (input policy, request limits and ceilings, the longest job)
from its own configuration, never from a task: anyone who can write to the broker can
send it one. A task names only the job id (32 hex digits), the request, the attempt, the
trace level, the tenant's store key (64 hex digits) and the time left.

The broker is the workers' only channel: give it a password (``redis://:PASSWORD@host``)
or TLS (``rediss://``); anyone who can write to it can hand the node results to check.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import logging
import os
import re
import socket
import stat
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from celery import Celery

from rebuilder.attest.provenance import provenance_statement
from rebuilder.errors import InfrastructureError
from rebuilder.node.execute import Execution, execute
from rebuilder.node.jobs import Job, Outcome
from rebuilder.node.requests import RequestLimits
from rebuilder.node.worker_result import (
    WorkerResultError,
    job_facts,
    node_result,
    now_text,
)
from sandbox import connect_backend
from sandbox.beneath import (
    PATH_MAX,
    TreeLimits,
    TreeTooLarge,
    read_beneath,
    remove_tree,
    resolve_all_beneath,
    symlink_beneath,
    walk_beneath,
    write_beneath,
)
from sandbox.build import ARTIFACTS_DIR, RESULT_FILE
from sandbox.config import SandboxConfig
from sandbox.errors import BuildCancelled
from sandbox.input_policy import InputPolicy
from sandbox.trace.levels import TraceLevel
from sandbox.workspace import write_atomically

log = logging.getLogger(__name__)

TASK = "hermetic.rebuild.v2"  # v2: the worker returns facts, the node writes the statement
MAX_RETURNED_BYTES = 256 * 1024**2  # outputs sent back through the result backend
# the answer as stored in the result backend: base64 of the files and a little JSON
MAX_ANSWER_BYTES = MAX_RETURNED_BYTES * 4 // 3 + 16 * 1024**2
MAX_RETURNED_FILES = 100_000
MAX_REASON = 2000
_POLL_S = 0.2
JOB_ID = re.compile(r"[0-9a-f]{32}")
_TENANT = re.compile(r"[0-9a-f]{64}")


class RemoteError(InfrastructureError):
    """A remote worker failed (not the build), or its answer is refused: the node retries."""


@dataclass(frozen=True, kw_only=True)
class WorkerSettings:
    """A worker's own rules (``hermetic node worker`` options); a task cannot change them.

    Attributes:
        directory: the worker's own directory (stores, scratch).
        input_policy: what inputs may be fetched from (as ``node serve``).
        limits: what a request may unpack to and ask for (as ``node serve``).
        max_deadline_s: the most time a task may take, whatever it asks for.
        config: the worker's sandbox settings, read once when it starts (None: from the
            environment when a task runs); its stores and scratch are under ``directory``.
    """

    directory: Path
    input_policy: InputPolicy = field(default_factory=InputPolicy)
    limits: RequestLimits = field(default_factory=RequestLimits)
    max_deadline_s: float = 3600.0
    config: SandboxConfig | None = None


def tenant_key(tenant: str) -> str:
    """The name of a tenant's own input store on a worker (see sandbox.store)."""
    return hashlib.sha256(tenant.encode()).hexdigest()


def celery_app(
    broker: str, *, worker: WorkerSettings | None = None, visibility_timeout_s: float = 3600.0
) -> Celery:
    """The Celery app of nodes and workers (JSON only: no pickle from the network); a
    worker's app (``worker`` given) runs the rebuild task under the worker's own rules."""
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
    if worker is not None:
        settings = worker

        @app.task(name=TASK)  # type: ignore[untyped-decorator]
        def rebuild(
            job_id: object,
            archive_b64: object,
            attempt: object,
            trace: object,
            tenant: object,
            remaining_s: object,
        ) -> dict[str, Any]:
            return _rebuild_task(settings, job_id, archive_b64, attempt, trace, tenant, remaining_s)

    return app


def _task_arguments(
    job_id: object, archive_b64: object, attempt: object, trace: object, tenant: object
) -> tuple[str, bytes, int, TraceLevel, str]:
    """A task's arguments, checked: a broker writer chooses them."""
    if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
        raise RemoteError("a task's job id is not 32 hex digits")
    if not isinstance(tenant, str) or not _TENANT.fullmatch(tenant):
        raise RemoteError("a task's tenant is not 64 hex digits")
    if isinstance(attempt, bool) or not isinstance(attempt, int) or not 0 < attempt < 1000:
        raise RemoteError("a task's attempt is not a small number")
    if not isinstance(archive_b64, str) or not isinstance(trace, str):
        raise RemoteError("a task's request or trace level is malformed")
    try:
        return (
            job_id,
            base64.b64decode(archive_b64, validate=True),
            attempt,
            TraceLevel(trace),
            tenant,
        )
    except (binascii.Error, ValueError):
        raise RemoteError("a task's request or trace level is malformed") from None


def _rebuild_task(
    settings: WorkerSettings,
    job_id: object,
    archive_b64: object,
    attempt: object,
    trace: object,
    tenant: object,
    remaining_s: object,
) -> dict[str, Any]:
    """Runs on a worker: build in its own directory, return what the node needs."""
    job_id, archive, attempt, level, tenant = _task_arguments(
        job_id, archive_b64, attempt, trace, tenant
    )
    if isinstance(remaining_s, bool) or not isinstance(remaining_s, int | float):
        raise RemoteError("a task's time left is not a number")
    remaining = min(float(remaining_s), settings.max_deadline_s)
    root = settings.directory.resolve()
    directory = root / "jobs" / job_id
    directory.mkdir(parents=True, exist_ok=True)
    config = replace(
        settings.config or SandboxConfig.from_env(),
        store_dir=root / "store" / tenant,
        work_dir=root / "work",
    )
    executor = f"{socket.gethostname()}:{os.getpid()}"
    cancel = threading.Event()
    timer = threading.Timer(max(remaining, 0.0), cancel.set)
    timer.daemon = True
    timer.start()
    try:
        execution = execute(
            archive,
            directory,
            attempt=attempt,
            config=config,
            connect=connect_backend,
            trace=level,
            builder_id="",  # the node writes the statement; the worker's is not sent
            input_policy=settings.input_policy.for_job(remaining),
            limits=settings.limits,
            executor=executor,
            cancel=cancel,
        )
        return _answer(execution)
    except BuildCancelled:
        return {
            "outcome": Outcome.DEADLINE_EXCEEDED.value,
            "reason": "the job's deadline passed while it was building; the build was stopped",
            "files": {},
            "links": {},
            "modes": {},
            "executor": executor,
        }
    finally:
        timer.cancel()
        remove_tree(directory)  # the node keeps the results, not us


def _answer(execution: Execution) -> dict[str, Any]:
    files: dict[str, str] = {}
    links: dict[str, str] = {}
    modes: dict[str, int] = {}
    if execution.outcome is Outcome.BUILT and execution.out_dir is not None:
        total = 0
        for relative, mode in walk_beneath(execution.out_dir, TreeLimits()):
            if stat.S_ISLNK(mode):
                links[relative] = os.readlink(execution.out_dir / relative)
            elif stat.S_ISREG(mode):
                data = read_beneath(execution.out_dir, relative, limit=MAX_RETURNED_BYTES)
                total += len(data)
                if total > MAX_RETURNED_BYTES:
                    raise RemoteError(f"outputs exceed {MAX_RETURNED_BYTES} bytes to return")
                files[relative] = base64.b64encode(data).decode()
                modes[relative] = stat.S_IMODE(mode)
    return {
        "outcome": execution.outcome.value,
        "reason": execution.reason,
        "files": files,
        "links": links,
        "modes": modes,
        "executor": execution.executor,
    }


class CeleryDispatch:
    """The node's side: send a job to the workers, wait for its answer, check it, and
    state what was built (the statement the node then signs)."""

    def __init__(
        self,
        app: Celery,
        *,
        builder_id: str,
        trace: TraceLevel,
        config: SandboxConfig,
        limits: RequestLimits | None = None,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        self.app = app
        self.builder_id = builder_id
        self.trace = trace
        self.config = config  # the node's: its images resolve what a worker must have used
        self.limits = limits or RequestLimits()
        self.max_answer_bytes = max_answer_bytes

    def __call__(
        self, job: Job, archive: bytes, directory: Path, cancel: threading.Event | None = None
    ) -> Execution:
        """Run a job on a worker (``cancel``: the job's time is up or the node stops).

        Raises:
            RemoteError: no usable answer (the node retries the job).
            BuildCancelled: ``cancel`` was set first (the task is revoked if not started;
                a worker that started it stops at the time it was given).
        """
        started = now_text()
        pending = self.app.send_task(
            TASK,
            args=[
                job.id,
                base64.b64encode(archive).decode(),
                job.attempts,
                self.trace.value,
                tenant_key(job.submitted_by),
                job.remaining_s,
            ],
        )
        answer = self._answer(pending.id, max(job.remaining_s, 1.0), cancel)
        try:
            return self._checked(archive, directory, answer, started)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise RemoteError(f"a worker's answer is malformed: {type(e).__name__}") from None
        except WorkerResultError as e:
            raise RemoteError(str(e)) from None

    def _answer(self, task_id: str, timeout_s: float, cancel: threading.Event | None) -> Any:
        """The task's answer once it is stored, read only if it is within the cap."""
        backend = self.app.backend
        key = backend.get_key_for_task(task_id)
        deadline = time.monotonic() + timeout_s
        try:
            while not (size := int(backend.client.strlen(key))):
                if time.monotonic() > deadline:
                    raise RemoteError("no worker answered before the job's deadline")
                if cancel is not None and cancel.wait(_POLL_S):
                    with contextlib.suppress(Exception):  # best effort: a broker may be down
                        self.app.control.revoke(task_id)
                    raise BuildCancelled("the job was stopped while a worker had it")
                if cancel is None:
                    time.sleep(_POLL_S)
            if size > self.max_answer_bytes:
                raise RemoteError(f"a worker's answer of {size} bytes is over the cap")
            meta = backend.get_task_meta(task_id)
        except (RemoteError, BuildCancelled):
            backend.client.delete(key)
            raise
        except Exception as e:  # noqa: BLE001 - redis and kombu raise many kinds
            raise RemoteError(f"the broker: {type(e).__name__}") from None
        backend.client.delete(key)
        if not isinstance(meta, dict) or meta.get("status") != "SUCCESS":
            shown = meta.get("status") if isinstance(meta, dict) else None
            raise RemoteError(f"the worker did not finish the task ({shown!r})")
        return meta.get("result")

    def _checked(self, archive: bytes, directory: Path, answer: Any, started: str) -> Execution:
        finished = now_text()
        if not isinstance(answer, dict):
            raise RemoteError("a worker's answer is not an object")
        outcome = Outcome(answer["outcome"])
        executor = str(answer.get("executor", ""))[:200]
        out = directory / "out"
        if outcome is not Outcome.BUILT:
            if outcome not in (Outcome.BUILD_FAILED, Outcome.DEADLINE_EXCEEDED):
                raise RemoteError("a worker's answer has an outcome only the node decides")
            reason = answer.get("reason")
            if not isinstance(reason, str) or not reason.isprintable():
                raise RemoteError("a worker's reason is not printable text")
            return Execution(outcome=outcome, reason=reason[:MAX_REASON], executor=executor)
        partial = directory / ".out.partial"
        remove_tree(partial)
        partial.mkdir()
        try:
            _write_results(partial, answer)
            facts = job_facts(archive, self.limits, self.config)
            result = node_result(
                partial,
                facts,
                trace=self.trace,
                out_dir=out,
                started_at=started,
                finished_at=finished,
            )
            result_json = result.to_json_text().encode()
            write_atomically(partial / RESULT_FILE, result_json)
            statement = provenance_statement(
                result,
                spec_document=facts.spec.document,
                result_json=result_json,
                builder_id=self.builder_id,
                spec_sha256=facts.spec_sha256,
            )
            remove_tree(out)
            partial.rename(out)
        finally:
            remove_tree(partial)
        return Execution(
            outcome=Outcome.BUILT,
            digest=f"sha256:{result.digest}",
            outputs=tuple(sorted((item.path, item.sha256) for item in result.outputs)),
            statement=statement,
            out_dir=out,
            executor=executor,
        )


def _plain(relative: object) -> str:
    """A returned file's name, if it is a plain relative path (else RemoteError)."""
    text = str(relative)
    if (
        not text
        or text.startswith("/")
        or "\0" in text
        or len(os.fsencode(text)) > PATH_MAX
        or any(p in ("..", ".", "") for p in text.split("/"))
    ):
        raise RemoteError(f"a worker returned a file outside the results: {text[:200]!r}")
    return text


def _write_results(partial: Path, answer: dict[str, Any]) -> None:
    """Write a worker's files and links below ``partial``, through no link.

    Every name and link target is checked before anything is written: plain relative
    names, each once, none inside another returned file or link, links only among the
    outputs, targets relative and short. Links are created last, through directory
    descriptors that follow none, and all must resolve inside once in place.

    Raises:
        RemoteError: naming what is refused.
    """
    files, links, modes = answer["files"], answer.get("links", {}), answer["modes"]
    if not (isinstance(files, dict) and isinstance(links, dict) and isinstance(modes, dict)):
        raise RemoteError("a worker's files, links or modes are not tables")
    if len(files) + len(links) > MAX_RETURNED_FILES:
        raise RemoteError(f"a worker returned more than {MAX_RETURNED_FILES} files")
    names = [_plain(name) for name in (*files, *links)]
    taken = set(names)
    if len(taken) != len(names):
        raise RemoteError("a worker returned a name twice")
    for name in names:
        parts = name.split("/")
        if any("/".join(parts[:i]) in taken for i in range(1, len(parts))):
            raise RemoteError(f"a worker returned {name[:200]!r} inside another file or link")
    for name, target in links.items():
        if not name.startswith(f"{ARTIFACTS_DIR}/"):
            raise RemoteError("a worker returned a link that is not an output")
        if (
            not isinstance(target, str)
            or not target
            or target.startswith("/")
            or "\0" in target
            or len(os.fsencode(target)) > PATH_MAX
        ):
            raise RemoteError(f"a worker returned a link leading out: {name[:200]!r}")
    total = 0
    decoded = {}
    for name, data in files.items():
        if not isinstance(data, str) or not isinstance(modes.get(name), int):
            raise RemoteError("a worker's file or its mode is malformed")
        try:
            decoded[name] = base64.b64decode(data, validate=True)
        except binascii.Error:
            raise RemoteError("a worker's file is not base64") from None
        total += len(decoded[name])
        if total > MAX_RETURNED_BYTES:
            raise RemoteError(f"a worker returned more than {MAX_RETURNED_BYTES} bytes")
    try:
        for name in sorted(decoded):
            write_beneath(partial, name, decoded[name], modes[name] & 0o777)
        for name in sorted(links):
            symlink_beneath(partial, name, links[name])
        resolved = resolve_all_beneath(partial, sorted(links))
    except (OSError, ValueError, TreeTooLarge) as e:
        raise RemoteError(f"a worker's results cannot be written safely ({e!r})") from None
    if any(where is None for where in resolved):
        raise RemoteError("a worker returned a link leading out once the links are followed")


def run_worker(broker: str, settings: WorkerSettings, *, concurrency: int = 1) -> None:
    """``hermetic node worker``: serve builds from the broker until interrupted."""
    settings.directory.mkdir(parents=True, exist_ok=True)
    app = celery_app(broker, worker=settings)
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
