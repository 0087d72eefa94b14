"""Scale-out: the node hands builds to Celery workers over a Redis broker.

The node keeps its queue, its leases and its key; a worker (``hermetic node worker``, on
any machine, with its own directory and input store) builds and returns the unsigned
statement and the result files. The node trusts none of it blindly: before signing it
checks the statement against the job (the request's spec and source tree, the image the
node itself resolves, the builder id, the inputs) and the returned files against the
statement (outputs listed = files returned, their digests and the set's digest). Tasks are
acknowledged late: a worker killed mid-build leaves its task to another worker.

The broker is the workers' only channel: give it a password (``redis://:PASSWORD@host``)
or TLS (``rediss://``); anyone who can write to it can hand the node results to check.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import stat
import tempfile
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

from celery import Celery

from rebuilder.attest.statement import read_statement
from rebuilder.errors import Error, InfrastructureError
from rebuilder.formats.fields import PredicateError, StatementError
from rebuilder.formats.provenance import Provenance
from rebuilder.node.execute import Execution, execute
from rebuilder.node.jobs import Job, Outcome
from rebuilder.node.requests import REQUEST_SPEC, RequestError, RequestLimits, unpack_source
from sandbox import connect_backend
from sandbox.beneath import resolve_beneath
from sandbox.build import ARTIFACTS_DIR
from sandbox.config import SandboxConfig
from sandbox.digests import sha256_file
from sandbox.images import ImageCatalog
from sandbox.input_policy import InputPolicy
from sandbox.outputs import describe_outputs
from sandbox.source_tree import tree_digest
from sandbox.spec import Spec
from sandbox.trace.levels import TraceLevel
from sandbox.uris import SLSA_PROVENANCE

TASK = "hermetic.rebuild"
WORKER_DIR_ENV = "HERMETIC_WORKER_DIR"
MAX_RETURNED_BYTES = 256 * 1024**2  # outputs sent back through the result backend


class RemoteError(InfrastructureError):
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
    job_id: str,
    archive_b64: str,
    attempt: int,
    builder_id: str,
    trace: str,
    input_policy: dict[str, Any],
    limits: dict[str, int],
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
        input_policy=InputPolicy.from_json(input_policy),
        limits=RequestLimits(**limits),
        executor=f"{socket.gethostname()}:{os.getpid()}",
    )
    files: dict[str, str] = {}
    links: dict[str, str] = {}
    modes: dict[str, int] = {}
    try:
        if execution.out_dir is not None:
            total = 0
            for path in sorted(execution.out_dir.rglob("*")):
                relative = path.relative_to(execution.out_dir).as_posix()
                if path.is_symlink():
                    links[relative] = os.readlink(path)
                elif path.is_file():
                    total += path.stat().st_size
                    if total > MAX_RETURNED_BYTES:
                        raise RemoteError(f"outputs exceed {MAX_RETURNED_BYTES} bytes to return")
                    files[relative] = base64.b64encode(path.read_bytes()).decode()
                    modes[relative] = stat.S_IMODE(path.stat().st_mode)
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
        "links": links,
        "modes": modes,
        "executor": execution.executor,
    }


class CeleryDispatch:
    """The node's side: send a job to the workers and wait for its result."""

    def __init__(
        self,
        app: Celery,
        *,
        builder_id: str,
        trace: TraceLevel,
        config: SandboxConfig,
        input_policy: InputPolicy | None = None,
        limits: RequestLimits | None = None,
    ) -> None:
        self.app = app
        self.builder_id = builder_id
        self.trace = trace
        self.config = config  # the node's: its images resolve what a worker must have used
        self.input_policy = input_policy or InputPolicy()
        self.limits = limits or RequestLimits()

    def __call__(self, job: Job, archive: bytes, directory: Path) -> Execution:
        pending = self.app.send_task(
            TASK,
            args=[
                job.id,
                base64.b64encode(archive).decode(),
                job.attempts,
                self.builder_id,
                self.trace.value,
                self.input_policy.to_json(),
                {
                    "max_members": self.limits.max_members,
                    "max_unpacked_bytes": self.limits.max_unpacked_bytes,
                },
            ],
        )
        try:
            answer: dict[str, Any] = pending.get(timeout=max(job.remaining_s, 1), propagate=True)
        except Exception as e:  # noqa: BLE001 - Celery, kombu and redis raise many kinds
            raise RemoteError(f"remote worker: {e}") from None
        try:
            return self._checked(job, archive, directory, answer)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise RemoteError(f"a worker's answer is malformed: {e!r}") from None

    def _checked(
        self, job: Job, archive: bytes, directory: Path, answer: dict[str, Any]
    ) -> Execution:
        out = directory / "out"
        partial = directory / ".out.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        for relative, data in answer["files"].items():
            target = partial / _plain(relative)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.parent.is_symlink() or os.path.lexists(target):
                raise RemoteError(f"a worker returned {relative!r} twice or through a link")
            target.write_bytes(base64.b64decode(data, validate=True))
            target.chmod(int(answer["modes"][relative]) & 0o777)
        for relative, link in answer.get("links", {}).items():
            target = partial / _plain(relative)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(str(link), target)
        for relative in answer.get("links", {}):  # checked once all are in place
            if resolve_beneath(partial, _plain(relative)) is None:
                raise RemoteError(f"a worker returned a link leading out: {relative!r}")
        statement = answer.get("statement")
        execution = Execution(
            outcome=Outcome(answer["outcome"]),
            reason=str(answer["reason"]),
            digest=answer.get("digest"),
            outputs=tuple(sorted((str(p), str(d)) for p, d in answer["outputs"])),
            statement=base64.b64decode(statement, validate=True) if statement else None,
            out_dir=out,
            executor=str(answer.get("executor", "")),
        )
        if execution.outcome is Outcome.BUILT:
            check_worker_result(
                execution,
                archive=archive,
                results=partial,
                builder_id=self.builder_id,
                config=self.config,
                limits=self.limits,
            )
        shutil.rmtree(out, ignore_errors=True)
        partial.rename(out)
        return execution


def _plain(relative: object) -> str:
    """A returned file's name, if it is a plain relative path (else RemoteError)."""
    text = str(relative)
    parts = PurePosixPath(text).parts
    if not parts or text.startswith("/") or any(p in ("..", ".", "") for p in text.split("/")):
        raise RemoteError(f"a worker returned a file outside the results: {text!r}")
    return text


def check_worker_result(
    execution: Execution,
    *,
    archive: bytes,
    results: Path,
    builder_id: str,
    config: SandboxConfig,
    limits: RequestLimits,
) -> None:
    """Check a worker's built result against the job before the node signs it.

    The statement must be SLSA provenance by this node's builder id, of this request's
    spec and source tree, built in the image the node resolves for that spec with the
    spec's inputs; its subjects must be exactly the outputs the worker listed and the
    files it returned, with their digests, and the set digest must be theirs.

    Raises:
        RemoteError: naming the first thing that does not match.
    """

    def refuse(what: str) -> RemoteError:
        return RemoteError(f"a worker's result does not match the job: {what}; not signed")

    if execution.statement is None:
        raise refuse("no statement")
    try:
        statement = read_statement(execution.statement)
    except StatementError as e:
        raise refuse(f"the statement is invalid ({e})") from None
    if statement.predicate_type != SLSA_PROVENANCE:
        raise refuse("the statement is not SLSA provenance")
    try:
        provenance = Provenance.from_dict(statement.predicate)
        subjects = statement.outputs
    except PredicateError as e:
        raise refuse(f"the statement is invalid ({e})") from None
    if provenance.builder_id != builder_id:
        raise refuse("another builder id")
    with tempfile.TemporaryDirectory(prefix="hermetic-check-") as scratch:
        source = Path(scratch) / "src"
        try:
            unpack_source(archive, source, limits)
            spec = Spec.from_toml(source / REQUEST_SPEC)
            image = ImageCatalog(config.images_dir).resolve(spec.image)
        except (RequestError, Error) as e:
            raise refuse(f"the node cannot read the request or its image ({e})") from None
        source_digest = tree_digest(source)
        spec_digest = sha256_file(source / REQUEST_SPEC)[0]
    # the spec as the statement carries it, compared as JSON (the form it was signed in)
    if provenance.spec != json.loads(json.dumps(dict(spec.document))):
        raise refuse("another spec")
    if provenance.source is None or provenance.source.sha256 != source_digest:
        raise refuse("another source tree")
    if provenance.image_sha256 != image.digest:
        raise refuse("another image")
    if provenance.spec_sha256 is not None and provenance.spec_sha256 != spec_digest:
        raise refuse("another spec file")
    for item in spec.inputs:
        stated = provenance.dependency(str(item.dest))
        if stated is None or stated.uri != item.url or stated.sha256 != item.sha256:
            raise refuse(f"another input at {item.dest}")
    if subjects != execution.outputs:
        raise refuse("the statement's subjects are not the outputs the worker listed")
    artifacts = results / ARTIFACTS_DIR
    returned = (
        sorted(
            path.relative_to(artifacts).as_posix()
            for path in artifacts.rglob("*")
            if path.is_symlink() or path.is_file()
        )
        if artifacts.is_dir()
        else []
    )
    if returned != sorted(name for name, _ in subjects):
        raise refuse("the files returned are not the outputs listed")
    try:
        manifest = describe_outputs(artifacts, returned)
    except Error as e:
        raise refuse(f"an output returned is unsafe ({e})") from None
    if tuple(sorted((f.path, f.sha256) for f in manifest.files)) != subjects:
        raise refuse("an output's digest is not the one stated")
    if execution.digest != f"sha256:{manifest.digest}":
        raise refuse("the output set's digest is not the one stated")
    for name in ("result.json", "build.log", "trace.json"):
        digest = provenance.byproduct(name)
        if digest:
            path = results / name
            if not path.is_file() or sha256_file(path)[0] != digest:
                raise refuse(f"{name} is not the one stated")


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
