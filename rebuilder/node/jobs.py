"""The node's persistent job queue (SQLite): leases, reclaim, deadlines, capped retries.

A worker claims a job by taking a lease and renews it while the build runs. A worker that
dies stops renewing; once the lease lapses the job is claimed again, until its attempts are
used up or its deadline passes. A job finishes once: only the lease holder can finish it.
Tenants (the names jobs were submitted under) take turns: the next job claimed is one of
the tenant with the fewest jobs running, and among those the one served longest ago.

Leases, deadlines and back-offs are kept on the monotonic clock, which every process of one
boot shares and no clock step (NTP, an operator, a VM resumed) moves: a step of the wall
clock neither expires every job nor keeps a dead worker's lease for hours. After a reboot
the monotonic clock starts again: leases of the old boot have lapsed (their workers are
gone), and what was left of each deadline is taken from the wall clock once.
"""

from __future__ import annotations

import enum
import hashlib
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sandbox.lifecycle import boot_id


def new_job_id() -> str:
    return uuid.uuid4().hex


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"


class Outcome(enum.StrEnum):
    """How a finished job ended; a mismatch is decided later, by whoever compares."""

    BUILT = "built"
    BUILD_FAILED = "build-failed"  # the build itself failed: the spec's fault
    INFRASTRUCTURE_FAILED = "infrastructure-failed"  # the node's fault: podman, disk, crash
    DEADLINE_EXCEEDED = "deadline-exceeded"


@dataclass(frozen=True, kw_only=True)
class Job:
    id: str
    state: JobState
    spec_sha256: str
    submitted_by: str
    created: float
    deadline: float
    attempts: int
    max_attempts: int
    outcome: Outcome | None
    reason: str
    digest: str | None  # the output-set digest when built
    lease_owner: str | None
    executor: str = ""  # which worker built it
    remaining_s: float = 0.0  # until the deadline, on the monotonic clock, when read

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "state": self.state.value,
            "outcome": self.outcome.value if self.outcome else None,
            "reason": self.reason,
            "digest": self.digest,
            "executor": _label(self.executor),
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "spec_sha256": self.spec_sha256,
            "submitted_by": self.submitted_by,
            "created": self.created,
            "deadline": self.deadline,
        }


def _label(executor: str) -> str:
    """The executor as stored: a label (Node.executor_label) since labels are keyed; a
    job of an older node stored the host and thread, which a client never reads."""
    if not executor or _LABEL.fullmatch(executor):
        return executor
    return hashlib.sha256(executor.encode()).hexdigest()[:16]


_LABEL = re.compile(r"[0-9a-f]{16}")


class Clock(Protocol):
    """The clocks the queue reads (a test steps them)."""

    def wall(self) -> float:
        """Seconds since the epoch (shown to users; moves with clock steps)."""

    def monotonic(self) -> float:
        """Seconds on this boot's monotonic clock (leases and deadlines)."""

    def boot(self) -> str:
        """This boot's id: monotonic readings of another boot mean nothing."""


class SystemClock:
    def wall(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()  # CLOCK_MONOTONIC: shared by every process of this boot

    def boot(self) -> str:
        return boot_id()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    spec_sha256 TEXT NOT NULL,
    submitted_by TEXT NOT NULL,
    created REAL NOT NULL,
    deadline REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    next_try REAL NOT NULL,
    lease_owner TEXT,
    lease_until REAL,
    outcome TEXT,
    reason TEXT NOT NULL DEFAULT '',
    digest TEXT,
    executor TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS subjects (
    job_id TEXT NOT NULL REFERENCES jobs(id),
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS subjects_digest ON subjects (sha256);
CREATE TABLE IF NOT EXISTS tenants (
    name TEXT PRIMARY KEY,
    last_claim INTEGER NOT NULL DEFAULT 0
);
"""
# Added later (a queue of an older node gains them, then rebased from the wall clock):
# the boot whose monotonic clock the three readings below are on.
_MONOTONIC_COLUMNS = {
    "clock_boot": "TEXT NOT NULL DEFAULT ''",
    "deadline_mono": "REAL NOT NULL DEFAULT 0",
    "next_try_mono": "REAL NOT NULL DEFAULT 0",
    "lease_mono": "REAL",
    # what a finished job keeps on disk (request and results), and when it finished
    "stored_bytes": "INTEGER NOT NULL DEFAULT 0",
    "finished_at": "REAL",
    "pruned": "INTEGER NOT NULL DEFAULT 0",
}


class JobStore:
    """Jobs in one SQLite file; safe for the node's threads (one connection, one lock)."""

    def __init__(self, path: Path, *, clock: Clock | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.clock = clock or SystemClock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a finished job survives a power cut
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        for name, declaration in _MONOTONIC_COLUMNS.items():
            if name not in columns:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {declaration}")
        self._db.execute("CREATE INDEX IF NOT EXISTS jobs_due ON jobs (state, next_try_mono)")
        self._lock = threading.Lock()
        self._rebase()

    def _rebase(self) -> None:
        """Carry jobs of another boot onto this boot's monotonic clock (see the module)."""
        boot, now, wall = self.clock.boot(), self.clock.monotonic(), self.clock.wall()
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET clock_boot = ?, deadline_mono = ? + MAX(deadline - ?, 0),"
                " next_try_mono = ?, lease_mono = NULL WHERE clock_boot != ? AND state != ?",
                (boot, now, wall, now, boot, JobState.FINISHED),
            )

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def submit(
        self,
        *,
        spec_sha256: str,
        submitted_by: str,
        deadline_s: float,
        max_attempts: int,
        job_id: str | None = None,
    ) -> str:
        job_id = job_id or new_job_id()
        wall, now = self.clock.wall(), self.clock.monotonic()
        with self._transaction() as db:
            db.execute(
                "INSERT INTO jobs (id, state, spec_sha256, submitted_by, created, deadline,"
                " max_attempts, next_try, clock_boot, deadline_mono, next_try_mono)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    JobState.QUEUED,
                    spec_sha256,
                    submitted_by,
                    wall,
                    wall + deadline_s,  # shown to users; the queue goes by deadline_mono
                    max_attempts,
                    wall,
                    self.clock.boot(),
                    now + deadline_s,
                    now,
                ),
            )
        return job_id

    def active(self, submitted_by: str | None = None) -> int:
        """Jobs queued or running (the concurrent-job limits count these), of every tenant
        or of one."""
        query = "SELECT COUNT(*) FROM jobs WHERE state != ?"
        args: tuple[str, ...] = (JobState.FINISHED,)
        if submitted_by is not None:
            query += " AND submitted_by = ?"
            args += (submitted_by,)
        with self._lock:
            row = self._db.execute(query, args).fetchone()
        return int(row[0])

    def stored_bytes(self, submitted_by: str) -> int:
        """What a tenant's jobs keep on the node's disk (its quota counts this)."""
        with self._lock:
            row = self._db.execute(
                "SELECT COALESCE(SUM(stored_bytes), 0) FROM jobs WHERE submitted_by = ?",
                (submitted_by,),
            ).fetchone()
        return int(row[0])

    def set_stored_bytes(self, job_id: str, size: int) -> None:
        with self._transaction() as db:
            db.execute("UPDATE jobs SET stored_bytes = ? WHERE id = ?", (size, job_id))

    def to_prune(self, finished_before: float) -> list[str]:
        """Finished jobs, not yet pruned, that finished before a wall-clock time."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM jobs WHERE state = ? AND pruned = 0 AND finished_at IS NOT NULL"
                " AND finished_at < ?",
                (JobState.FINISHED, finished_before),
            ).fetchall()
        return [row[0] for row in rows]

    def mark_pruned(self, job_id: str, stored_bytes: int) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET pruned = 1, stored_bytes = ? WHERE id = ?",
                (stored_bytes, job_id),
            )

    def pruned(self, job_id: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT pruned FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bool(row and row[0])

    def claim(self, owner: str, lease_s: float) -> Job | None:
        """The next job to run: queued and due, or running with a lapsed lease.

        Jobs past their deadline, or whose attempts are used up, are finished instead.
        """
        now = self.clock.monotonic()
        with self._transaction() as db:
            self._expire(db, now)
            # Tenants take turns: fewest jobs running first, then the one served longest
            # ago, then the oldest job (one tenant's many jobs never starve another's).
            row = db.execute(
                "SELECT j.id, j.submitted_by FROM jobs j LEFT JOIN tenants t"
                " ON t.name = j.submitted_by"
                " WHERE (j.state = ? AND j.next_try_mono <= ?)"
                " OR (j.state = ? AND COALESCE(j.lease_mono, 0) < ?)"
                " ORDER BY (SELECT COUNT(*) FROM jobs r WHERE r.state = ?"
                " AND r.submitted_by = j.submitted_by AND COALESCE(r.lease_mono, 0) >= ?),"
                " COALESCE(t.last_claim, 0), j.rowid LIMIT 1",
                (JobState.QUEUED, now, JobState.RUNNING, now, JobState.RUNNING, now),
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE jobs SET state = ?, lease_owner = ?, lease_until = ?, lease_mono = ?,"
                " attempts = attempts + 1 WHERE id = ?",
                (JobState.RUNNING, owner, self.clock.wall() + lease_s, now + lease_s, row[0]),
            )
            db.execute(
                "INSERT INTO tenants (name, last_claim) VALUES"
                " (?, (SELECT COALESCE(MAX(last_claim), 0) + 1 FROM tenants))"
                " ON CONFLICT (name) DO UPDATE SET last_claim = excluded.last_claim",
                (row[1],),
            )
        return self.get(row[0])

    def _expire(self, db: sqlite3.Connection, now: float) -> None:
        wall = self.clock.wall()
        db.execute(
            "UPDATE jobs SET state = ?, outcome = ?, reason = ?, lease_owner = NULL,"
            " finished_at = ? WHERE state != ? AND deadline_mono < ?",
            (
                JobState.FINISHED,
                Outcome.DEADLINE_EXCEEDED,
                "the job's deadline passed",
                wall,
                JobState.FINISHED,
                now,
            ),
        )
        db.execute(
            "UPDATE jobs SET state = ?, outcome = ?, lease_owner = NULL, finished_at = ?,"
            " reason = 'a worker was lost ' || attempts || ' time(s); attempts used up'"
            " WHERE state = ? AND COALESCE(lease_mono, 0) < ? AND attempts >= max_attempts",
            (JobState.FINISHED, Outcome.INFRASTRUCTURE_FAILED, wall, JobState.RUNNING, now),
        )

    def renew(self, job_id: str, owner: str, lease_s: float) -> bool:
        """Extend a lease; False when the job is no longer this worker's."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE jobs SET lease_until = ?, lease_mono = ?"
                " WHERE id = ? AND lease_owner = ? AND state = ?",
                (
                    self.clock.wall() + lease_s,
                    self.clock.monotonic() + lease_s,
                    job_id,
                    owner,
                    JobState.RUNNING,
                ),
            )
        return cursor.rowcount == 1

    def finish(
        self,
        job_id: str,
        owner: str,
        *,
        outcome: Outcome,
        reason: str = "",
        digest: str | None = None,
        subjects: tuple[tuple[str, str], ...] = (),
        executor: str = "",
    ) -> bool:
        """Record the outcome, once: False when another worker holds (or finished) it."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE jobs SET state = ?, outcome = ?, reason = ?, digest = ?, executor = ?,"
                " lease_owner = NULL, finished_at = ? WHERE id = ? AND lease_owner = ?"
                " AND state = ?",
                (
                    JobState.FINISHED,
                    outcome,
                    reason,
                    digest,
                    executor,
                    self.clock.wall(),
                    job_id,
                    owner,
                    JobState.RUNNING,
                ),
            )
            if cursor.rowcount != 1:
                return False
            db.executemany(
                "INSERT INTO subjects (job_id, name, sha256) VALUES (?, ?, ?)",
                [(job_id, name, sha256) for name, sha256 in subjects],
            )
        return True

    def retry_later(self, job_id: str, owner: str, *, backoff_s: float, reason: str) -> None:
        """Give a job back after an infrastructure failure; finished when attempts run out."""
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET state = CASE WHEN attempts >= max_attempts THEN ? ELSE ? END,"
                " outcome = CASE WHEN attempts >= max_attempts THEN ? ELSE NULL END,"
                " reason = ?, next_try = ?, next_try_mono = ?, lease_owner = NULL,"
                " finished_at = ? WHERE id = ? AND lease_owner = ? AND state = ?",
                (
                    JobState.FINISHED,
                    JobState.QUEUED,
                    Outcome.INFRASTRUCTURE_FAILED,
                    reason,
                    self.clock.wall() + backoff_s,
                    self.clock.monotonic() + backoff_s,
                    self.clock.wall(),
                    job_id,
                    owner,
                    JobState.RUNNING,
                ),
            )

    def note_waiting(self, reason: str) -> bool:
        """Say why queued jobs are not started (the node's disk); True when it is news."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE jobs SET reason = ? WHERE state = ? AND reason != ?",
                (reason, JobState.QUEUED, reason),
            )
        return cursor.rowcount > 0

    def give_back(self, job_id: str, owner: str, *, delay_s: float, reason: str) -> None:
        """Requeue a job the node could not run for a reason of its own that is not the
        job's (its disk filled up): the attempt does not count."""
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET state = ?, reason = ?, next_try = ?, next_try_mono = ?,"
                " lease_owner = NULL, attempts = MAX(attempts - 1, 0)"
                " WHERE id = ? AND lease_owner = ? AND state = ?",
                (
                    JobState.QUEUED,
                    reason,
                    self.clock.wall() + delay_s,
                    self.clock.monotonic() + delay_s,
                    job_id,
                    owner,
                    JobState.RUNNING,
                ),
            )

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, state, spec_sha256, submitted_by, created, deadline, attempts,"
                " max_attempts, outcome, reason, digest, lease_owner, executor, deadline_mono"
                " FROM jobs WHERE id = ?",
                (job_id,),
            ).fetchone()
        if row is None:
            return None
        return Job(
            id=row[0],
            state=JobState(row[1]),
            spec_sha256=row[2],
            submitted_by=row[3],
            created=row[4],
            deadline=row[5],
            attempts=row[6],
            max_attempts=row[7],
            outcome=Outcome(row[8]) if row[8] else None,
            reason=row[9],
            digest=row[10],
            lease_owner=row[11],
            executor=row[12],
            remaining_s=row[13] - self.clock.monotonic(),
        )

    def by_subject(self, sha256: str, *, submitted_by: str | None = None) -> list[str]:
        """Ids of finished jobs with an output of that digest (only those submitted under
        ``submitted_by`` when given: a tenant sees its own)."""
        query = "SELECT DISTINCT job_id FROM subjects WHERE sha256 = ?"
        args: tuple[str, ...] = (sha256,)
        if submitted_by is not None:
            query = (
                "SELECT DISTINCT s.job_id FROM subjects s JOIN jobs j ON j.id = s.job_id"
                " WHERE s.sha256 = ? AND j.submitted_by = ?"
            )
            args = (sha256, submitted_by)
        with self._lock:
            rows = self._db.execute(query, args).fetchall()
        return [row[0] for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
