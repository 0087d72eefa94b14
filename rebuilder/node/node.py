"""A rebuilder node's work, apart from HTTP: accept requests, run them with leases on its
own workers, sign what it found, and co-sign agreements that match its own result.

Every file operation on a job's directory follows no link: the node reads its request,
results and signed files with :func:`sandbox.beneath.read_beneath`, removes scratch with
:func:`sandbox.beneath.remove_tree` (iteratively, at any depth), and serves artifacts
through ``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)``."""

from __future__ import annotations

import errno
import hashlib
import hmac
import logging
import os
import secrets
import shutil
import socket
import stat
import tempfile
import threading
import time
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
from rebuilder.node.remote import JOB_ID, tenant_key
from rebuilder.node.requests import REQUEST_SPEC, RequestError, RequestLimits, unpack_source
from rebuilder.node.statements import (
    cosign_refusal,
)
from sandbox import connect_backend
from sandbox.beneath import (
    TreeLimits,
    TreeTooLarge,
    open_beneath,
    read_beneath,
    read_link_beneath,
    remove_tree,
    walk_beneath,
)
from sandbox.build import ARTIFACTS_DIR
from sandbox.config import SandboxConfig
from sandbox.digests import sha256_bytes
from sandbox.errors import BuildCancelled, InputRefused, SpecError
from sandbox.input_policy import InputPolicy
from sandbox.spec import Spec
from sandbox.trace.levels import TraceLevel
from sandbox.uris import AGREEMENT_PREDICATE
from sandbox.workspace import write_atomically

log = logging.getLogger(__name__)

Dispatch = Callable[[Job, bytes, Path, threading.Event], Execution]
REQUEST_FILE = "request.tar.gz"
FAILURE_FILE = "failure.intoto.json"
DISK_FULL = "node disk full"
INCOMING_DIR = "incoming"  # requests being checked at submission
LABEL_KEY_FILE = "label.key"  # the node's secret for labels (executors) clients see
_STORED_LIMIT = 4 * 1024**3  # what the node reads back of its own job files, at most
_SIGNED_LIMIT = 64 * 1024**2  # a signed attestation of the node's


class NodeBusy(InfrastructureError):
    """The node has as many jobs as it accepts; try later."""


class NodeFull(InfrastructureError):
    """The node's disk is too full to take a request; try later."""


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
    max_client_jobs: int = 4  # queued + running of one tenant (--max-client-jobs)
    client_quota_bytes: int = 20 * 1024**3  # what one tenant's jobs keep (--client-quota)
    retention_s: float = 7 * 86400.0  # finished jobs' results are kept this long (--retention)
    checks: int = 2  # requests unpacked and checked at once at submission
    check_wait_s: float = 60.0  # how long a request waits for its turn to be checked


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
        self._label_key = _secret(settings.directory / LABEL_KEY_FILE)
        # Where builds run: None here, in the node's own threads; else a remote executor.
        self.dispatch: Dispatch | None = None
        self._checks = threading.BoundedSemaphore(settings.checks)
        self._running: set[threading.Event] = set()  # the cancel events of builds in flight
        self._running_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- accepting work -------------------------------------------------------------

    def check_request(self, archive: bytes) -> None:
        """Refuse a request now if it can be refused without building: an unsafe or too
        large archive, a spec asking for more than the node allows, or an input URL the
        node's input policy does not allow. A few requests are checked at a time.

        Raises:
            RequestError: why, in words that name nothing of the node.
            NodeBusy: too many requests are being checked; try later.
            NodeFull: the node's disk is too full to unpack it.
        """
        if not self._checks.acquire(timeout=self.settings.check_wait_s):
            raise NodeBusy("the node is checking other requests; try again later")
        try:
            self._check(archive)
        finally:
            self._checks.release()

    def _check(self, archive: bytes) -> None:
        incoming = self.settings.directory / INCOMING_DIR
        incoming.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=incoming))
        try:
            unpack_source(archive, scratch / "src", self.settings.request_limits)
            try:
                spec = Spec.from_toml(scratch / "src" / REQUEST_SPEC)
            except SpecError:
                return  # a bad spec fails its build with a signed reason
            refusal = self.settings.request_limits.refusal(spec)
            if refusal is not None:
                raise RequestError(refusal)
            for item in spec.inputs:
                try:
                    self.settings.input_policy.check_url(item.url)
                except InputRefused as e:
                    raise RequestError(str(e)) from None
        except (RequestError, NodeBusy):
            raise
        except OSError as e:
            if _is_disk_full(e):
                raise NodeFull(f"{DISK_FULL}: try again later") from None
            log.warning("a request could not be checked: %r", e)
            raise RequestError("the request cannot be unpacked") from None
        except Exception as e:  # noqa: BLE001 - a stranger's bytes: any surprise is a 400
            log.warning("a request could not be checked: %r", e)
            raise RequestError("the request cannot be checked") from None
        finally:
            remove_tree(scratch)

    def submit(self, archive: bytes, submitted_by: str) -> Job:
        """Queue a rebuild of a source archive (its hermetic.toml at the root).

        Raises:
            NodeBusy: the node's or this tenant's concurrent-job limit is reached, or the
                tenant's storage quota is used up.
            NodeFull: the node's disk is too full.
        """
        full = self.disk_full()
        if full is not None:
            raise NodeFull(full)
        if self.store.active() >= self.settings.max_active_jobs:
            raise NodeBusy(
                f"{self.settings.max_active_jobs} jobs are queued or running; try again later"
            )
        if self.store.active(submitted_by) >= self.settings.max_client_jobs:
            raise NodeBusy(
                f"{self.settings.max_client_jobs} of your jobs are queued or running; "
                "try again when one has finished"
            )
        stored = self.store.stored_bytes(submitted_by)
        if stored + len(archive) > self.settings.client_quota_bytes:
            raise NodeBusy(
                f"your jobs keep {stored} bytes on this node, and its quota is "
                f"{self.settings.client_quota_bytes}; results are removed "
                f"{self.settings.retention_s / 86400:g} days after a job finishes"
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
        self.store.set_stored_bytes(job_id, len(archive))
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
        found = self.store.get(job_id) if JOB_ID.fullmatch(job_id) else None
        if found is None or (visible_to is not None and found.submitted_by != visible_to):
            raise UnknownJob(f"no job {job_id[:64]!r} on this node")
        return found

    def attestation(self, job_id: str) -> bytes | None:
        """The stored bytes of a finished job's signed attestation (None: not finished).

        Built: its provenance. Anything else: a signed failure, made now if the job ended
        without a worker to sign it (attempts used up, deadline passed). Read through no
        link: nothing a worker or a build left in the job's directory is followed.
        """
        job = self.job(job_id)
        if job.state is not JobState.FINISHED:
            return None
        directory = self.jobs_dir / job.id
        if job.outcome is Outcome.BUILT:
            return read_beneath(directory, f"out/{PROVENANCE_FILE}", limit=_SIGNED_LIMIT)
        try:
            return read_beneath(directory, FAILURE_FILE, limit=_SIGNED_LIMIT)
        except OSError as e:
            # missing, or not the node's own file (a link or other planted thing): the
            # failure is signed again, replacing whatever is there
            if not isinstance(e, FileNotFoundError):
                log.warning("job %s: %s is not the node's own file; signed again", job.id, e)
        assert job.outcome is not None
        self._sign_failure(job, job.outcome, job.reason)
        return read_beneath(directory, FAILURE_FILE, limit=_SIGNED_LIMIT)

    def artifact(self, job_id: str, relative: str, *, visible_to: str | None = None) -> Artifact:
        """An output of a built job, for comparison.

        No link is ever followed: a path through a link is refused, and an output that
        is itself a link is served as its target text (what its digest covers).

        Raises:
            UnknownJob: no such job or output (or its results were pruned), or it can only
                be reached through a link.
        """
        job = self.job(job_id, visible_to=visible_to)
        missing = UnknownJob(f"job {job_id} has no output {relative[:200]!r}")
        root = self.jobs_dir / job.id / "out" / ARTIFACTS_DIR
        if job.outcome is not Outcome.BUILT:
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

    def executor_label(self, executor: str) -> str:
        """What a client is told of the worker that ran its job: a label keyed with the
        node's secret (the same worker, the same label; its host name cannot be guessed
        back from it)."""
        if not executor:
            return ""
        return hmac.new(self._label_key, executor.encode(), hashlib.sha256).hexdigest()[:16]

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
        janitor = threading.Thread(target=self._janitor, name="hermetic-janitor", daemon=True)
        janitor.start()
        self._threads.append(janitor)

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
        request, the results and the signed attestation stay. Nothing is followed: a link
        is removed, not what it leads to."""
        directories = [self.jobs_dir / job_id] if job_id else list(self.jobs_dir.iterdir())
        for directory in directories:
            try:
                if not _is_directory(directory):
                    continue
                with os.scandir(directory) as entries:
                    leftovers = [e.name for e in entries if e.name.startswith(_SCRATCH)]
                for name in leftovers:
                    remove_tree(directory / name)
            except OSError as e:
                log.warning("could not clean %s: %s", directory, e)
        if job_id is None:
            try:
                remove_tree(self.settings.directory / INCOMING_DIR)
            except OSError as e:
                log.warning("could not clean the requests being checked: %s", e)

    def prune(self, now: float | None = None) -> list[str]:
        """Remove the results and request of jobs that finished more than the retention
        time ago (the signed attestation and the job's record stay), and inputs no job
        used for that long. Returns the jobs pruned."""
        before = (time.time() if now is None else now) - self.settings.retention_s
        pruned = []
        for job_id in self.store.to_prune(before):
            directory = self.jobs_dir / job_id
            try:
                _remove_all_but(directory, {FAILURE_FILE, "out"})
                if _is_directory(directory / "out"):
                    _remove_all_but(directory / "out", {PROVENANCE_FILE})
            except OSError as e:
                log.warning("could not prune job %s: %s", job_id, e)
                continue
            self.store.mark_pruned(job_id, _tree_bytes(directory))
            pruned.append(job_id)
        _prune_store(self.config.store_dir, before)
        return pruned

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

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the workers; builds in flight are stopped too (their containers killed)
        and their jobs given back, to run again when the node starts."""
        self._stop.set()
        self._wake.set()
        with self._running_lock:
            for cancel in self._running:
                cancel.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
        self._stop.clear()

    def close(self) -> None:
        """Stop the workers and close the queue."""
        self.stop()
        self.store.close()

    def _janitor(self) -> None:
        interval = min(max(self.settings.retention_s / 4, 1.0), 600.0)
        while not self._stop.wait(interval):
            try:
                self.prune()
            except Exception as e:  # noqa: BLE001 - housekeeping must not stop the node
                log.warning("pruning failed: %r", e)

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
        """Run one claimed job, renewing its lease, and record how it ended. A build still
        running when the job's deadline passes is stopped."""
        done = threading.Event()
        deadline = threading.Event()  # set when the build must stop: time up, or the node

        def heartbeat() -> None:
            while not done.wait(self.settings.lease_s / 3):
                if not self.store.renew(job.id, owner, self.settings.lease_s):
                    log.warning("job %s: lease lost", job.id)
                    return

        beat = threading.Thread(target=heartbeat, name=f"lease-{job.id[:8]}", daemon=True)
        beat.start()
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            deadline.set()

        timer = threading.Timer(max(job.remaining_s, 0.0), expire)
        timer.daemon = True
        timer.start()
        with self._running_lock:
            self._running.add(deadline)
        try:
            outcome, reason, digest, outputs, executor = self._execute(job, deadline)
        except BuildCancelled:
            if not expired.is_set():
                # the node is stopping, not the job's time up: it runs again after a start
                self.store.give_back(job.id, owner, delay_s=0, reason="the node was stopped")
                return
            outcome, reason, digest, outputs, executor = (
                Outcome.DEADLINE_EXCEEDED,
                "the job's deadline passed while it was building; the build was stopped",
                None,
                (),
                "",
            )
            self._sign_failure(job, outcome, reason)
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
            with self._running_lock:
                self._running.discard(deadline)
            done.set()
            timer.cancel()
            self.clean_scratch(job.id)
        if executor:
            log.info("job %s ran on %s", job.id, executor)
        if not self.store.finish(
            job.id,
            owner,
            outcome=outcome,
            reason=reason,
            digest=digest,
            subjects=outputs,
            executor=self.executor_label(executor),
        ):
            log.warning("job %s: finished elsewhere; this result is dropped", job.id)
            return
        self.store.set_stored_bytes(job.id, _tree_bytes(self.jobs_dir / job.id))

    def _execute(
        self, job: Job, deadline: threading.Event
    ) -> tuple[Outcome, str, str | None, Outputs, str]:
        directory = self.jobs_dir / job.id
        (directory / FAILURE_FILE).unlink(missing_ok=True)
        archive = read_beneath(directory, REQUEST_FILE, limit=_STORED_LIMIT)
        if self.dispatch is not None:
            execution = self.dispatch(job, archive, directory, deadline)
        else:
            execution = execute(
                archive,
                directory,
                attempt=job.attempts,
                # the tenant's own input store: nothing fetched for another tenant is used
                config=replace(
                    self.config, store_dir=self.config.store_dir / tenant_key(job.submitted_by)
                ),
                connect=self.connect,
                trace=self.settings.trace,
                builder_id=self.settings.builder_id,
                input_policy=self.settings.input_policy.for_job(job.remaining_s),
                limits=self.settings.request_limits,
                executor=f"{socket.gethostname()}:{threading.current_thread().name}",
                cancel=deadline,
            )
        if execution.outcome is not Outcome.BUILT or execution.statement is None:
            self._sign_failure(job, execution.outcome, execution.reason)
            return execution.outcome, execution.reason, None, (), execution.executor
        envelope, error = signed_envelope(execution.statement, [self.signer])
        if error:
            raise SigningError(error)  # unsigned is not a result: try again
        if not _is_directory(directory / "out"):  # the node's own directory, never a link
            raise InfrastructureError(f"job {job.id}: its results are not a directory")
        write_envelope(directory / "out" / PROVENANCE_FILE, envelope)
        return Outcome.BUILT, "", execution.digest, execution.outputs, execution.executor

    def _sign_failure(self, job: Job, outcome: Outcome, reason: str) -> None:
        payload = Failure(
            request_sha256=job.spec_sha256,  # the request's digest, taken at submission
            outcome=outcome.value,
            reason=reason,
            builder_id=self.settings.builder_id,
            job_id=job.id,
        ).payload()
        envelope, error = signed_envelope(payload, [self.signer])
        if error:
            raise SigningError(error)
        target = self.jobs_dir / job.id / FAILURE_FILE
        if target.is_symlink():  # planted: removed (never followed), then written anew
            target.unlink()
        write_envelope(target, envelope)

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


_SCRATCH = ("src-", ".out.partial")


def _secret(path: Path) -> bytes:
    """The node's own secret in ``path`` (made once, 0600)."""
    try:
        return read_beneath(path.parent, path.name, limit=1024)
    except FileNotFoundError:
        key = secrets.token_bytes(32)
        write_atomically(path, key, mode=0o600)
        return key


def _is_directory(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _remove_all_but(directory: Path, keep: set[str]) -> None:
    """Remove every entry of ``directory`` not named in ``keep`` (links, not their targets)."""
    with os.scandir(directory) as entries:
        doomed = [entry.name for entry in entries if entry.name not in keep]
    for name in doomed:
        remove_tree(directory / name)


def _tree_bytes(root: Path) -> int:
    """What a job keeps on disk (apparent sizes; a tree too large to walk counts fully)."""
    try:
        return sum(
            os.lstat(root / relative).st_size
            for relative, mode in walk_beneath(root, TreeLimits())
            if not stat.S_ISDIR(mode)
        )
    except (OSError, TreeTooLarge):
        return 1 << 62


def _prune_store(store: Path, before: float) -> None:
    """Remove inputs (and their origin records) no job used since ``before``."""
    try:
        tenants = [entry.path for entry in os.scandir(store) if entry.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return
    for tenant in tenants:
        for kind in ("sha256", "origins"):
            try:
                entries = list(os.scandir(Path(tenant) / kind))
            except FileNotFoundError:
                continue
            for entry in entries:
                try:
                    if entry.stat(follow_symlinks=False).st_mtime < before:
                        Path(entry.path).unlink()
                except OSError as e:
                    log.warning("could not prune %s: %s", entry.path, e)


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
