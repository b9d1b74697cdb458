"""SQLite persistence for jobs and workers: every change is written through.

A restarted scheduler reloads both tables: queued jobs are queued again, running jobs wait for
their worker to come back (or are re-queued when it is declared lost).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from distbuild._proto.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb
from distbuild.cas.digest import Digest, DigestFunction
from distbuild.reapi.convert import result_from_proto, result_to_proto
from distbuild.scheduler.model import FINISHED, Job, WorkerInfo

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY, seq INTEGER, action_digest TEXT, client_id TEXT, platform TEXT,
    timeout_s REAL, do_not_cache INTEGER, action_blob BLOB, state TEXT, worker_id TEXT,
    attempts INTEGER, submitted_at REAL, started_at REAL, completed_at REAL, result BLOB,
    error TEXT, error_kind TEXT, cached INTEGER, digest_function TEXT DEFAULT 'blake3'
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE TABLE IF NOT EXISTS workers (
    worker_id TEXT PRIMARY KEY, address TEXT, capacity INTEGER, platform TEXT, state TEXT,
    last_heartbeat REAL, registered_at REAL, completed INTEGER
);
"""

_JOB_COLS = ("job_id", "seq", "action_digest", "client_id", "platform", "timeout_s",
             "do_not_cache", "action_blob", "state", "worker_id", "attempts", "submitted_at",
             "started_at", "completed_at", "result", "error", "error_kind", "cached",
             "digest_function")
_WORKER_COLS = ("worker_id", "address", "capacity", "platform", "state", "last_heartbeat",
                "registered_at", "completed")


_INSERT_JOB = (f"INSERT OR REPLACE INTO jobs ({','.join(_JOB_COLS)}) VALUES "
               f"({','.join('?' * len(_JOB_COLS))})")


def job_row(job: Job) -> tuple[object, ...]:
    """A job as a row of the jobs table (a snapshot: take it while the job cannot change)."""
    return (job.job_id, job.seq, str(job.action_digest), job.client_id,
            json.dumps(job.platform), job.timeout_s, int(job.do_not_cache), job.action_blob,
            job.state, job.worker_id, job.attempts, job.submitted_at, job.started_at,
            job.completed_at, _result_blob(job), job.error,
            job.error_kind, int(job.cached), job.digest_function.value)


def _result_blob(job: Job) -> bytes | None:
    if job.result is None:
        return None
    if not job.result_blob:
        job.result_blob = result_to_proto(job.result).SerializeToString()
    return job.result_blob


class StateDB:
    """Jobs and workers in one SQLite file (WAL; callers serialize writes)."""

    def __init__(self, path: str | Path, keep_finished: int = 50_000):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False,
                                   isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        if "digest_function" not in columns:  # a database from before SHA-256 support
            self._db.execute("ALTER TABLE jobs ADD COLUMN digest_function TEXT "
                             "DEFAULT 'blake3'")
        self._lock = threading.Lock()
        self.keep_finished = keep_finished

    def close(self) -> None:
        self._db.close()

    def save_job(self, job: Job) -> None:
        self.save_rows([job_row(job)])

    def save_rows(self, rows: list[tuple[object, ...]]) -> None:
        """Write job rows (from ``job_row``) in one transaction."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(_INSERT_JOB, rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def save_worker(self, w: WorkerInfo) -> None:
        row = (w.worker_id, w.address, w.capacity, json.dumps(w.platform), w.state,
               w.last_heartbeat, w.registered_at, w.completed)
        with self._lock:
            self._db.execute(f"INSERT OR REPLACE INTO workers ({','.join(_WORKER_COLS)}) "
                             f"VALUES ({','.join('?' * len(_WORKER_COLS))})", row)

    def load_jobs(self, finished_limit: int = 10_000) -> list[Job]:
        """Unfinished jobs, then the newest ``finished_limit`` finished ones, by seq."""
        done = tuple(FINISHED)
        marks = ",".join("?" * len(done))
        with self._lock:
            rows = self._db.execute(
                f"SELECT {','.join(_JOB_COLS)} FROM jobs WHERE state NOT IN ({marks})",
                done).fetchall()
            rows += self._db.execute(
                f"SELECT {','.join(_JOB_COLS)} FROM jobs WHERE state IN ({marks}) "
                "ORDER BY seq DESC LIMIT ?", (*done, finished_limit)).fetchall()
        jobs = [_job(dict(zip(_JOB_COLS, r, strict=True))) for r in rows]
        return sorted(jobs, key=lambda j: j.seq)

    def load_workers(self) -> list[WorkerInfo]:
        with self._lock:
            rows = self._db.execute(f"SELECT {','.join(_WORKER_COLS)} FROM workers").fetchall()
        out = []
        for r in rows:
            d = dict(zip(_WORKER_COLS, r, strict=True))
            d["platform"] = tuple(tuple(p) for p in json.loads(d["platform"]))
            out.append(WorkerInfo(**d))
        return out

    def max_seq(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT MAX(seq) FROM jobs").fetchone()
        return int(row[0] or 0)

    def prune(self) -> None:
        """Forget finished jobs beyond the newest ``keep_finished``."""
        with self._lock:
            self._db.execute(
                "DELETE FROM jobs WHERE state IN ('COMPLETED','FAILED','CANCELLED') AND seq < "
                "(SELECT COALESCE(MIN(seq), 0) FROM (SELECT seq FROM jobs WHERE state IN "
                "('COMPLETED','FAILED','CANCELLED') ORDER BY seq DESC LIMIT ?))",
                (self.keep_finished,))


def _job(d: dict[str, object]) -> Job:
    result = d.pop("result")
    d["action_digest"] = Digest.parse(str(d["action_digest"]))
    d["platform"] = tuple(tuple(p) for p in json.loads(str(d["platform"])))
    d["do_not_cache"] = bool(d["do_not_cache"])
    d["cached"] = bool(d["cached"])
    d["digest_function"] = DigestFunction(d["digest_function"] or "blake3")
    job = Job(**d)  # type: ignore[arg-type]
    if isinstance(result, bytes):
        job.result = result_from_proto(re_pb.ActionResult.FromString(result))
        job.result_blob = result
    return job


class GroupCommit:
    """Write-behind of job changes: a thread writes the changed jobs in one transaction every
    ``interval`` seconds (or at once when someone waits), and ``wait`` blocks until a given
    change is on disk.

    ``mark`` and the snapshot taken by ``flush`` run under ``lock``, the owner's state lock,
    so every row written is a consistent picture of its job.
    """

    def __init__(self, db: StateDB, lock: threading.RLock, interval: float):
        self.db = db
        self._lock = lock
        self._interval = interval
        self._dirty: dict[str, Job] = {}
        self._changes = 0  # changes marked so far
        self._durable = 0  # changes [0, _durable) are on disk
        self._cond = threading.Condition()
        self._flush_lock = threading.Lock()
        self._pending = threading.Event()  # something is marked: flush within the interval
        self._wake = threading.Event()  # someone waits for the disk: flush now
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="group-commit", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def mark(self, job: Job) -> int:
        """Record that ``job`` changed (caller holds the lock); returns the change number."""
        self._changes += 1
        self._dirty[job.job_id] = job
        self._pending.set()
        return self._changes

    def wait(self, change: int, timeout: float = 30.0) -> None:
        """Block until change number ``change`` is on disk (or we are closing)."""
        self._wake.set()
        with self._cond:
            self._cond.wait_for(lambda: self._durable >= change or self._closed.is_set(),
                                timeout)

    def flush(self) -> None:
        with self._flush_lock:
            with self._lock:
                rows = [job_row(j) for j in self._dirty.values()]
                self._dirty.clear()
                upto = self._changes
            if rows:
                self.db.save_rows(rows)
            with self._cond:
                self._durable = upto
                self._cond.notify_all()

    def _loop(self) -> None:
        while not self._closed.is_set():
            # Idle, sleep until a change (a fixed-interval poll cost ~1% of a core doing
            # nothing); then gather changes for one interval unless a waiter needs them now.
            self._pending.wait()
            self._wake.wait(self._interval)
            self._wake.clear()
            self._pending.clear()  # before flush: a change marked from here on is flushed next
            self.flush()

    def close(self) -> None:
        self._closed.set()
        self._pending.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self.flush()
