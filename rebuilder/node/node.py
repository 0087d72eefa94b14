"""A rebuilder node's work, apart from HTTP: accept requests, run them with leases on its
own workers, sign what it found, and co-sign agreements that match its own result."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import socket
import stat
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from securesystemslib.signer import Signer

from rebuilder.attest.attestor import signed_envelope
from rebuilder.attest.envelope import EnvelopeError, parse_envelope, sign_payload, write_envelope
from rebuilder.attest.provenance import PROVENANCE_FILE
from rebuilder.attest.statement import read_statement
from rebuilder.attest.untrusted_json import shown
from rebuilder.errors import Error, InfrastructureError, SigningError, UserError
from rebuilder.formats.fields import StatementError
from rebuilder.formats.provenance import Provenance
from rebuilder.formats.rebuild import Disagreement, Failure, Outputs
from rebuilder.node.execute import Connect, Execution, execute
from rebuilder.node.jobs import Job, JobState, JobStore, Outcome, new_job_id
from rebuilder.node.requests import REQUEST_SPEC, RequestError, RequestLimits, unpack_source
from rebuilder.node.statements import (
    cosign_refusal,
)
from sandbox import connect_backend
from sandbox.beneath import open_beneath, read_link_beneath
from sandbox.build import ARTIFACTS_DIR
from sandbox.config import SandboxConfig
from sandbox.digests import sha256_bytes
from sandbox.errors import InputRefused, SpecError
from sandbox.input_policy import InputPolicy
from sandbox.spec import Spec
from sandbox.trace.levels import TraceLevel
from sandbox.uris import AGREEMENT_PREDICATE
from sandbox.workspace import write_atomically

log = logging.getLogger(__name__)

Dispatch = Callable[[Job, bytes, Path], Execution]
REQUEST_FILE = "request.tar.gz"
FAILURE_FILE = "failure.intoto.json"
DISK_FULL = "node disk full"
INCOMING_DIR = "incoming"  # requests being checked at submission


class NodeBusy(InfrastructureError):
    """The node has as many jobs as it accepts; try later."""


class UnknownJob(UserError):
    """No job with that id on this node (or none this client may see)."""


@dataclass(frozen=True)
class Artifact:
    """An output as served: an open regular file, or the target text of a link."""

    fd: int | None = None
    link_target: bytes | None = None


@dataclass(frozen=True, kw_only=True)
class NodeSettings:
    """How a node runs; every path is the node's own (nodes never share one)."""

    directory: Path
    builder_id: str
    workers: int = 1
    lease_s: float = 60.0
    deadline_s: float = 3600.0
    max_attempts: int = 3
    max_active_jobs: int = 16
    backoff_s: float = 5.0
    trace: TraceLevel = TraceLevel.STANDARD
    input_policy: InputPolicy = field(default_factory=InputPolicy)
    request_limits: RequestLimits = field(default_factory=RequestLimits)
    min_free_bytes: int = 2 * 1024**3  # below this a worker claims no job (--min-free-disk)


class Node:
    """Jobs, workers and signatures of one rebuilder node."""

    def __init__(
        self,
        settings: NodeSettings,
        signer: Signer,
        *,
        connect: Connect = connect_backend,
        config: SandboxConfig | None = None,
    ) -> None:
        self.settings = settings
        self.signer = signer
        self.connect = connect
        self.jobs_dir = settings.directory / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.store = JobStore(settings.directory / "node.sqlite")
        # Its own input store and scratch space: a node trusts no other node's cache.
        self.config = replace(
            config or SandboxConfig.from_env(),
            store_dir=settings.directory / "store",
            work_dir=settings.directory / "work",
        )
        # Where builds run: None here, in the node's own threads; else a remote executor.
        self.dispatch: Dispatch | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- accepting work -------------------------------------------------------------

    def check_request(self, archive: bytes) -> None:
        """Refuse a request now if it can be refused without building: an unsafe or too
        large archive, or an input URL the node's input policy does not allow.

        Raises:
            RequestError: why, in words that name nothing of the node.
        """
        incoming = self.settings.directory / INCOMING_DIR
        incoming.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=incoming))
        try:
            unpack_source(archive, scratch / "src", self.settings.request_limits)
            try:
                spec = Spec.from_toml(scratch / "src" / REQUEST_SPEC)
            except SpecError:
                return  # a bad spec fails its build with a signed reason
            for item in spec.inputs:
                try:
                    self.settings.input_policy.check_url(item.url)
                except InputRefused as e:
                    raise RequestError(str(e)) from None
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def submit(self, archive: bytes, submitted_by: str) -> Job:
        """Queue a rebuild of a source archive (its hermetic.toml at the root).

        Raises:
            NodeBusy: the concurrent-job limit is reached.
        """
        if self.store.active() >= self.settings.max_active_jobs:
            raise NodeBusy(
                f"{self.settings.max_active_jobs} jobs are queued or running; try again later"
            )
        job_id = new_job_id()
        directory = self.jobs_dir / job_id
        directory.mkdir()
        write_atomically(directory / REQUEST_FILE, archive)
        self.store.submit(
            spec_sha256=sha256_bytes(archive),
            submitted_by=submitted_by,
            deadline_s=self.settings.deadline_s,
            max_attempts=self.settings.max_attempts,
            job_id=job_id,
        )
        self._wake.set()
        job = self.store.get(job_id)
        assert job is not None
        return job

    def job(self, job_id: str, *, visible_to: str | None = None) -> Job:
        """A job by id; with ``visible_to``, only one submitted under that name.

        Raises:
            UnknownJob: no such job, or another tenant's (the answer is the same, so an
                id says nothing about jobs a client may not see).
        """
        found = self.store.get(job_id) if job_id.isalnum() else None
        if found is None or (visible_to is not None and found.submitted_by != visible_to):
            raise UnknownJob(f"no job {job_id!r} on this node")
        return found

    def attestation(self, job_id: str) -> bytes | None:
        """The stored bytes of a finished job's signed attestation (None: not finished).

        Built: its provenance. Anything else: a signed failure, made now if the job ended
        without a worker to sign it (attempts used up, deadline passed).
        """
        job = self.job(job_id)
        if job.state is not JobState.FINISHED:
            return None
        directory = self.jobs_dir / job_id
        if job.outcome is Outcome.BUILT:
            return (directory / "out" / PROVENANCE_FILE).read_bytes()
        failure = directory / FAILURE_FILE
        if not failure.is_file():
            assert job.outcome is not None
            archive = (directory / REQUEST_FILE).read_bytes()
            self._sign_failure(job, archive, job.outcome, job.reason)
        return failure.read_bytes()

    def artifact(self, job_id: str, relative: str, *, visible_to: str | None = None) -> Artifact:
        """An output of a built job, for comparison.

        No link is ever followed: a path through a link is refused, and an output that
        is itself a link is served as its target text (what its digest covers).

        Raises:
            UnknownJob: no such job or output, or it can only be reached through a link.
        """
        job = self.job(job_id, visible_to=visible_to)
        missing = UnknownJob(f"job {job_id} has no output {relative!r}")
        root = self.jobs_dir / job.id / "out" / ARTIFACTS_DIR
        if job.outcome is not Outcome.BUILT or not root.is_dir():
            raise missing
        try:
            target = read_link_beneath(root, relative)
            if target is not None:
                return Artifact(link_target=os.fsencode(target))
            fd = open_beneath(root, relative)
        except (OSError, ValueError):
            raise missing from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise missing
        return Artifact(fd=fd)

    # --- workers --------------------------------------------------------------------

    def start(self) -> None:
        self.reap_orphans()
        self.clean_scratch()
        for index in range(self.settings.workers):
            thread = threading.Thread(
                target=self._work, name=f"hermetic-worker-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def reap_orphans(self) -> None:
        """Remove what builds of a killed node left: its build containers and scratch
        directories (each stamped with the process that made it; see sandbox.lifecycle)."""
        try:
            with self.connect(self.config) as backend:
                backend.reap_orphans(self.config.work_dir)
        except Error as e:
            log.warning("could not look for orphaned build containers: %s", e)

    def clean_scratch(self, job_id: str | None = None) -> None:
        """Remove what a finished job (or, with no id, any job of a restarted node) no
        longer needs: unpacked sources, partial results, requests being checked. The
        request, the results and the signed attestation stay."""
        directories = [self.jobs_dir / job_id] if job_id else list(self.jobs_dir.iterdir())
        for directory in directories:
            if not directory.is_dir():
                continue
            for leftover in directory.iterdir():
                if leftover.name.startswith(("src-", ".out.partial")):
                    shutil.rmtree(leftover, ignore_errors=True)
        if job_id is None:
            shutil.rmtree(self.settings.directory / INCOMING_DIR, ignore_errors=True)

    def disk_full(self) -> str | None:
        """Why the node must not start a build now (None: enough free disk)."""
        where = [self.settings.directory, self.config.work_dir, self.config.store_dir]
        for path in where:
            existing = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
            free = shutil.disk_usage(existing).free
            if free < self.settings.min_free_bytes:
                return (
                    f"{DISK_FULL}: waiting for free space on the node (infrastructure; "
                    "no attempt is used)"
                )
        return None

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
        self._stop.clear()

    def close(self) -> None:
        """Stop the workers and close the queue."""
        self.stop()
        self.store.close()

    def _work(self) -> None:
        owner = f"{self.settings.builder_id}/{threading.current_thread().name}/{new_job_id()}"
        while not self._stop.is_set():
            job = self.claim_next(owner)
            if job is None:
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            self.run_job(job, owner)

    def claim_next(self, owner: str) -> Job | None:
        """The next job to run, unless the node's disk is too full to start one: then no
        job is claimed (no attempt used) and the waiting jobs say why."""
        full = self.disk_full()
        if full is not None:
            if self.store.note_waiting(full):
                log.warning("%s; no job is started until space is freed", full)
            return None
        return self.store.claim(owner, self.settings.lease_s)

    def run_job(self, job: Job, owner: str) -> None:
        """Run one claimed job, renewing its lease, and record how it ended."""
        done = threading.Event()

        def heartbeat() -> None:
            while not done.wait(self.settings.lease_s / 3):
                if not self.store.renew(job.id, owner, self.settings.lease_s):
                    log.warning("job %s: lease lost", job.id)
                    return

        beat = threading.Thread(target=heartbeat, name=f"lease-{job.id[:8]}", daemon=True)
        beat.start()
        try:
            outcome, reason, digest, outputs, executor = self._execute(job)
        except Exception as e:  # noqa: BLE001 - the node's fault: retry with backoff
            backoff = self.settings.backoff_s * 2 ** max(job.attempts - 1, 0)
            # the details are the operator's (paths, podman's words); the client reads a
            # reason that names nothing of the node
            log.warning("job %s attempt %d: %s; retry in %.0fs", job.id, job.attempts, e, backoff)
            if _is_disk_full(e):
                self.store.give_back(
                    job.id, owner, delay_s=backoff, reason=f"{DISK_FULL} (infrastructure)"
                )
            else:
                reason = f"infrastructure failure on attempt {job.attempts} ({type(e).__name__})"
                self.store.retry_later(job.id, owner, backoff_s=backoff, reason=reason)
            return
        finally:
            done.set()
            self.clean_scratch(job.id)
        if not self.store.finish(
            job.id,
            owner,
            outcome=outcome,
            reason=reason,
            digest=digest,
            subjects=outputs,
            executor=executor,
        ):
            log.warning("job %s: finished elsewhere; this result is dropped", job.id)

    def _execute(self, job: Job) -> tuple[Outcome, str, str | None, Outputs, str]:
        directory = self.jobs_dir / job.id
        (directory / FAILURE_FILE).unlink(missing_ok=True)
        archive = (directory / REQUEST_FILE).read_bytes()
        if self.dispatch is not None:
            execution = self.dispatch(job, archive, directory)
        else:
            execution = execute(
                archive,
                directory,
                attempt=job.attempts,
                config=self.config,
                connect=self.connect,
                trace=self.settings.trace,
                builder_id=self.settings.builder_id,
                input_policy=self.settings.input_policy,
                limits=self.settings.request_limits,
                executor=f"{socket.gethostname()}:{threading.current_thread().name}",
            )
        if execution.outcome is not Outcome.BUILT or execution.statement is None:
            self._sign_failure(job, archive, execution.outcome, execution.reason)
            return execution.outcome, execution.reason, None, (), execution.executor
        envelope, error = signed_envelope(execution.statement, [self.signer])
        if error:
            raise SigningError(error)  # unsigned is not a result: try again
        write_envelope(directory / "out" / PROVENANCE_FILE, envelope)
        return Outcome.BUILT, "", execution.digest, execution.outputs, execution.executor

    def _sign_failure(self, job: Job, archive: bytes, outcome: Outcome, reason: str) -> None:
        payload = Failure(
            request_sha256=sha256_bytes(archive),
            outcome=outcome.value,
            reason=reason,
            builder_id=self.settings.builder_id,
            job_id=job.id,
        ).payload()
        envelope, error = signed_envelope(payload, [self.signer])
        if error:
            raise SigningError(error)
        write_envelope(self.jobs_dir / job.id / FAILURE_FILE, envelope)

    # --- co-signing -----------------------------------------------------------------

    def own_outputs(self, job_id: str) -> Outputs | None:
        """The job's outputs as its own signed provenance states them (None: not built)."""
        job = self.job(job_id)
        if job.outcome is not Outcome.BUILT:
            return None
        stored = self.attestation(job_id)
        if stored is None:
            return None
        envelope = parse_envelope(stored, f"job {job_id}'s attestation")
        return read_statement(envelope.payload).outputs

    def cosign(
        self, job_id: str, payload: bytes, *, now: datetime | None = None
    ) -> tuple[bool, dict[str, Any]]:
        """Sign a combined agreement only if it is exactly the agreement this node would
        write, describes this node's job, key, outputs, source and spec as they are, and
        is dated within the clock skew of this node's clock (``now``, default the system
        clock); see :func:`rebuilder.node.statements.cosign_refusal`.

        Returns:
            (True, the signature entry) or (False, a signed disagreement envelope, dated by
            this node's clock and saying why).

        Raises:
            StatementError: the payload is not a valid in-toto Statement, not an
                agreement, or the job built nothing this node could vouch for.
        """
        now = now or datetime.now(tz=UTC)
        statement = read_statement(payload)
        if statement.predicate_type != AGREEMENT_PREDICATE:
            # A node vouches with its own provenance; it co-signs agreements and nothing else.
            raise StatementError(
                f"this node co-signs only {AGREEMENT_PREDICATE} statements, "
                f"not {shown(statement.predicate_type)}"
            )
        own = self.own_outputs(job_id) or ()
        if not own:
            raise StatementError(f"job {job_id} built nothing this node could vouch for")
        stored = self.attestation(job_id) or b""
        try:
            provenance = read_statement(parse_envelope(stored, f"job {job_id}").payload)
            built: Provenance | None = Provenance.from_dict(provenance.predicate)
        except (EnvelopeError, StatementError):
            built = None  # its own provenance unreadable: it vouches for nothing
        refusal = cosign_refusal(
            statement,
            payload=payload,
            own=own,
            built=built,
            job_id=job_id,
            keyid=self.signer.public_key.keyid,
            now=now,
        )
        if not refusal:
            (signature,) = sign_payload(payload, [self.signer])["signatures"]
            return True, dict(signature)
        disagreement = Disagreement(  # dated by this node's clock
            own=own,
            proposed_sha256=sha256_bytes(payload),
            builder_id=self.settings.builder_id,
            job_id=job_id,
            reason=refusal,
            created_on=now,
            source=built.source if built is not None else None,
            spec_sha256=built.spec_sha256 if built is not None else None,
        ).payload()
        return False, sign_payload(disagreement, [self.signer])


def _is_disk_full(error: BaseException) -> bool:
    """Whether an error, or one it was raised from, is the disk running out."""
    seen: BaseException | None = error
    for _ in range(16):  # a chain is short; never loop on a strange one
        if seen is None:
            break
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
