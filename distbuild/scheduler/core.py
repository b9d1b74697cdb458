"""The scheduler's logic: queue, placement, worker registry, retries, timeouts, cancellation.

No gRPC here: the servicer (``service.py``) calls these methods and the tests may too. One lock
guards all state.

Placement: jobs are taken from a ``FairQueue`` (round-robin across client ids) and given to the
least-loaded live worker that has a free slot and offers every platform property the action
requires (the rule is in ``placement.py``). A worker never holds more jobs than its capacity.

Persistence: changes are written to SQLite in batches (``GroupCommit``). A submission returns
only once its job is on disk; later transitions (running, finished) may be lost if the process
dies within ``FLUSH_INTERVAL``, which at worst re-runs a job.

Retries: a job whose worker is lost (missed heartbeats) or that failed for an infrastructure
reason goes back to the front of its client's queue, at most ``max_attempts`` runs in all. A
compile error is a completed job with a nonzero exit code and is never retried. An in-place
job (``execution=in-place``: the master's embedded worker compiling in its own files) is never
retried either: a "lost" attempt may still be writing those files, so it fails and the master
decides (``distbuild/inplace.py``); after a scheduler restart its submitter is gone, so it is
failed rather than run again.
"""

from __future__ import annotations

import copy
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from distbuild.actions import ActionResult
from distbuild.cas.digest import BLAKE3, Digest, DigestFunction
from distbuild.cas.storage import ContentStores
from distbuild.cas.store import LocalCAS
from distbuild.codec import decode_action, decode_command
from distbuild.config import SchedulerConfig
from distbuild.errors import (
    BlobNotFound,
    DistbuildError,
    MissingBlobs,
    NoSuitableWorker,
    UnknownJob,
)
from distbuild.inplace import IN_PLACE
from distbuild.reapi.resources import blob_subject
from distbuild.scheduler import affinity
from distbuild.scheduler.fair_queue import FairQueue
from distbuild.scheduler.model import (
    ALIVE,
    CANCELLED,
    COMPLETED,
    FAILED,
    LOST,
    QUEUED,
    RUNNING,
    Job,
    Outcome,
    Properties,
    WorkerInfo,
    matches,
)
from distbuild.scheduler.persistence import GroupCommit, StateDB
from distbuild.scheduler.placement import FreeWorkers

_KEEP_FINISHED = 20_000
FLUSH_INTERVAL = 0.01


@dataclass(frozen=True)
class Submission:
    """One action to queue (``Scheduler.submit_many``)."""

    action_digest: Digest
    client_id: str
    skip_cache: bool = False
    function: DigestFunction = BLAKE3  # of the action digest and every digest it names


class Scheduler:
    def __init__(self, cfg: SchedulerConfig, db: StateDB, stores: ContentStores,
                 clock: Callable[[], float] = time.time):
        self.cfg = cfg
        self.db = db
        self.stores = stores
        self.clock = clock
        self.started_at = clock()
        self._lock = threading.RLock()
        self.jobs: dict[str, Job] = {}
        self.workers: dict[str, WorkerInfo] = {}
        self.queue = FairQueue()
        self._finished: deque[str] = deque()
        self._job_events: dict[str, threading.Event] = {}
        self._worker_events: dict[str, threading.Event] = {}
        self.counts = {"completed": 0, "failed": 0, "cache_hits": 0}
        self._seq = db.max_seq()
        self._commits = GroupCommit(db, self._lock, FLUSH_INTERVAL)
        self._load()
        self._commits.start()

    def flush(self) -> None:
        """Write every pending change to SQLite now."""
        self._commits.flush()

    def close(self) -> None:
        """Flush, stop the flusher and close the database."""
        self._commits.close()
        self.db.close()

    # -- startup ----------------------------------------------------------------------------
    def _load(self) -> None:
        now = self.clock()
        for w in self.db.load_workers():
            if w.state == ALIVE:
                w.last_heartbeat = now  # a grace period to come back after our restart
            self.workers[w.worker_id] = w
        for job in self.db.load_jobs():
            self.jobs[job.job_id] = job
            if not job.done and IN_PLACE in job.platform:
                self._finish(job, FAILED, kind="JobFailed",
                             error="an in-place job of a master that has since restarted")
            elif job.state == QUEUED:
                job.queued_since = now
                self.queue.push(job.client_id, job.job_id)
            elif job.state == RUNNING:
                owner = self.workers.get(job.worker_id)
                if owner is not None and owner.state == ALIVE:
                    owner.running.add(job.job_id)
                    owner.unconfirmed.add(job.job_id)
                else:
                    self._requeue(job, count_attempt=False)
            else:
                self._finished.append(job.job_id)
        with self._lock:
            self._dispatch()

    # -- client side ------------------------------------------------------------------------
    def submit(self, action_digest: Digest, client_id: str, skip_cache: bool = False,
               function: DigestFunction = BLAKE3) -> Job:
        """Queue an action already in the CAS of ``function``; a cache hit completes at once.

        Raises MissingBlobs (the action or its command is not in the CAS), NoSuitableWorker.
        """
        outcome = self.submit_many([Submission(action_digest, client_id, skip_cache,
                                               function)])[0]
        if isinstance(outcome, DistbuildError):
            raise outcome
        return outcome

    def submit_many(self, requests: Sequence[Submission]) -> list[Job | DistbuildError]:
        """Queue several actions at once: one dispatch pass and one wait for the disk.

        Returns, per request and in order: the job as queued (or finished, for a cache hit),
        or the error that refused it (a missing action blob, no suitable worker).
        """
        prepared: list[tuple[Job, ActionResult | None] | DistbuildError] = []
        for request in requests:
            try:
                prepared.append(self._prepare(request))
            except DistbuildError as e:
                prepared.append(e)
        outcomes: list[Job | DistbuildError] = []
        change = 0
        with self._lock:
            for item in prepared:
                if isinstance(item, DistbuildError):
                    outcomes.append(item)
                    continue
                job, cached = item
                self.jobs[job.job_id] = job
                if cached is not None:
                    job.cached = True
                    self.counts["cache_hits"] += 1
                    self._finish(job, COMPLETED, result=cached)
                    outcomes.append(job)
                    continue
                if not any(w.state == ALIVE and matches(job.platform, w.platform)
                           for w in self.workers.values()):
                    del self.jobs[job.job_id]
                    outcomes.append(NoSuitableWorker(
                        f"no live worker offers platform {_fmt(job.platform)}"))
                    continue
                self.queue.push(job.client_id, job.job_id)
                change = self._changed(job)
                outcomes.append(job)
            self._dispatch()
            outcomes = [o if isinstance(o, DistbuildError) else o.snapshot() for o in outcomes]
        if change:
            self._commits.wait(change)
        return outcomes

    def _prepare(self, request: Submission) -> tuple[Job, ActionResult | None]:
        """A new job for the action, and its cached result if any (reads the CAS, no lock)."""
        cas = self.stores.cas(request.function)
        blob = _read(cas, request.action_digest, "action")
        action = decode_action(blob)
        platform = action.platform
        if not platform:  # clients before REAPI v2.2 put it in the Command only
            platform = decode_command(_read(cas, action.command_digest, "command")).platform
        inputs = affinity.large_inputs(cas, action.input_root_digest)
        now = self.clock()
        with self._lock:
            self._seq += 1
            seq = self._seq
        job = Job(job_id=os.urandom(8).hex(), action_digest=request.action_digest,
                  client_id=request.client_id or "anonymous", platform=platform,
                  timeout_s=action.timeout_s or self.cfg.job_timeout,
                  do_not_cache=action.do_not_cache, action_blob=blob, seq=seq,
                  submitted_at=now, queued_since=now, inputs=inputs,
                  digest_function=request.function)
        cached = (None if (request.skip_cache or action.do_not_cache)
                  else self.stores.ac(request.function).get(request.action_digest))
        return job, cached

    def get(self, job_id: str) -> Job:
        with self._lock:
            return self._job(job_id).snapshot()

    def watch(self, job_id: str, seen_version: int, timeout: float) -> Job:
        """The job once its version is newer than ``seen_version`` (or after ``timeout``)."""
        with self._lock:
            job = self._job(job_id)
            if job.version > seen_version or job.done:
                return job.snapshot()
            event = self._job_events.setdefault(job_id, threading.Event())
        event.wait(timeout)
        return self.get(job_id)

    def cancel(self, job_id: str) -> Job:
        with self._lock:
            job = self._job(job_id)
            if job.state == QUEUED:
                self.queue.remove(job.client_id, job.job_id)
            elif job.state == RUNNING:
                self._tell_cancel(job)
            if not job.done:
                self._finish(job, CANCELLED, error="cancelled by request",
                             kind="ActionCancelled")
            return job.snapshot()

    def list_jobs(self, states: set[str] | None = None, limit: int = 0) -> list[Job]:
        with self._lock:
            jobs = [j.snapshot() for j in self.jobs.values() if not states or j.state in states]
        jobs.sort(key=lambda j: -j.seq)
        return jobs[:limit] if limit else jobs

    def list_workers(self) -> list[WorkerInfo]:
        with self._lock:
            return [copy.copy(w) for w in sorted(self.workers.values(),
                                                 key=lambda w: w.worker_id)]

    def status(self) -> dict[str, float]:
        with self._lock:
            alive = [w for w in self.workers.values() if w.state == ALIVE]
            return {
                "uptime_seconds": self.clock() - self.started_at,
                "workers_alive": len(alive),
                "workers_lost": sum(w.state == LOST for w in self.workers.values()),
                "total_slots": sum(w.capacity for w in alive),
                "busy_slots": sum(len(w.running) for w in alive),
                "jobs_queued": len(self.queue),
                "jobs_running": sum(j.state == RUNNING for j in self.jobs.values()),
                "jobs_completed": self.counts["completed"],
                "jobs_failed": self.counts["failed"],
                "action_cache_hits": self.counts["cache_hits"],
            }

    # -- worker side ------------------------------------------------------------------------
    def register(self, worker_id: str, address: str, capacity: int, platform: Properties,
                 running: list[str]) -> None:
        now = self.clock()
        with self._lock:
            w = self.workers.get(worker_id)
            if w is None:
                w = self.workers[worker_id] = WorkerInfo(worker_id, registered_at=now)
            w.address, w.capacity, w.platform = address, max(capacity, 1), tuple(sorted(platform))
            w.state, w.last_heartbeat = ALIVE, now
            self._reconcile(w, set(running), set(w.running))
            self.db.save_worker(w)
            self._dispatch()

    def heartbeat(self, worker_id: str, running: list[str]) -> tuple[bool, list[str]]:
        """Returns (must re-register, job ids to cancel)."""
        with self._lock:
            w = self.workers.get(worker_id)
            if w is None or w.state == LOST:
                return True, []
            now = w.last_heartbeat = self.clock()
            listed = set(running)
            # Jobs handed over long ago that the worker does not run (a lease reply that was
            # lost, or state from before our restart) are re-queued.
            stale = {jid for jid in w.running - listed - set(w.to_lease)
                     if jid in w.unconfirmed or (
                         jid in self.jobs
                         and now - self.jobs[jid].started_at > self.cfg.heartbeat_timeout)}
            if stale or w.unconfirmed:
                self._reconcile(w, listed, stale | w.unconfirmed)
                self._dispatch()
            cancels, w.to_cancel = w.to_cancel, []
            return False, cancels

    def lease(self, worker_id: str, wait_s: float) -> tuple[list[Job], list[str], bool]:
        """Jobs newly assigned to the worker and cancellations, waiting up to ``wait_s``."""
        with self._lock:
            w = self.workers.get(worker_id)
            if w is None or w.state == LOST:
                return [], [], True
            w.last_heartbeat = self.clock()
            event = self._worker_events.setdefault(worker_id, threading.Event())
            ready = bool(w.to_lease or w.to_cancel)
        if not ready:
            event.wait(wait_s)
        with self._lock:
            event.clear()
            items = [self.jobs[j].snapshot() for j in w.to_lease
                     if self.jobs[j].state == RUNNING and self.jobs[j].worker_id == worker_id]
            cancels = w.to_cancel
            w.to_lease, w.to_cancel = [], []
            return items, cancels, False

    def report(self, worker_id: str, job_id: str, result: ActionResult | None,
               error: str = "", kind: str = "", retryable: bool = False,
               result_blob: bytes = b"") -> None:
        """A worker's outcome: a result (any exit code) or an error, retryable or not.

        ``result_blob`` is the result's encoded message when the caller has it (saves
        encoding it again for the database).
        """
        self.report_many(worker_id, [Outcome(job_id, result, error, kind, retryable,
                                             result_blob)])

    def report_many(self, worker_id: str, outcomes: Sequence[Outcome]) -> None:
        """Several outcomes from one worker (``report`` each), with one dispatch pass."""
        cacheable: list[tuple[DigestFunction, Digest, ActionResult]] = []
        with self._lock:
            for outcome in outcomes:
                job = self._record(worker_id, outcome)
                result = outcome.result
                if (job is not None and result is not None and result.exit_code == 0
                        and not job.do_not_cache):
                    cacheable.append((job.digest_function, job.action_digest, result))
            self._dispatch()
        for function, action_digest, result in cacheable:
            try:
                self.stores.ac(function).put(action_digest, result)
            except Exception:  # noqa: BLE001 - caching is best effort, the job is done
                pass

    # -- maintenance ------------------------------------------------------------------------
    def reap(self) -> None:
        """Declare silent workers lost, time out stuck jobs, fail unplaceable ones."""
        now = self.clock()
        with self._lock:
            for w in self.workers.values():
                if w.state == ALIVE and now - w.last_heartbeat > self.cfg.heartbeat_timeout:
                    w.state = LOST
                    for jid in sorted(w.running):
                        job = self.jobs.get(jid)
                        if (job is not None and job.state == RUNNING
                                and job.worker_id == w.worker_id):
                            self._retry_or_fail(job, f"worker {w.worker_id} was lost")
                    w.running.clear()
                    w.unconfirmed.clear()
                    w.to_lease.clear()
                    self.db.save_worker(w)
            for job in list(self.jobs.values()):
                if (job.state == RUNNING and job.timeout_s > 0
                        and now - job.started_at > job.timeout_s + self.cfg.heartbeat_timeout):
                    self._tell_cancel(job)
                    self._finish(job, FAILED, error=f"timed out after {job.timeout_s:.0f}s",
                                 kind="ActionTimeout")
                elif job.state == QUEUED and now - job.queued_since > \
                        self.cfg.heartbeat_timeout and not any(
                            w.state == ALIVE and matches(job.platform, w.platform)
                            for w in self.workers.values()):
                    self.queue.remove(job.client_id, job.job_id)
                    self._finish(job, FAILED, kind="NoSuitableWorker",
                                 error=f"no live worker offers platform {_fmt(job.platform)}")
            self._dispatch()

    # -- internals (lock held) --------------------------------------------------------------
    def _job(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise UnknownJob(f"no job {job_id!r}")
        return job

    def _changed(self, job: Job) -> int:
        job.version += 1
        change = self._commits.mark(job)
        event = self._job_events.pop(job.job_id, None)
        if event is not None:
            event.set()
        return change

    def _record(self, worker_id: str, outcome: Outcome) -> Job | None:
        """Apply one worker outcome (see ``report``); returns the job if we know it."""
        w = self.workers.get(worker_id)
        job = self.jobs.get(outcome.job_id)
        result = outcome.result
        if w is not None:
            w.running.discard(outcome.job_id)
            w.unconfirmed.discard(outcome.job_id)
            w.completed += 1
            if job is not None and result is not None:
                # It fetched the inputs and produced the outputs: both are in its cache.
                if job.inputs:
                    affinity.remember(w.holds, job.inputs)
                if result.output_files:
                    affinity.remember(w.holds, (o.digest for o in result.output_files))
        if job is not None and not job.done:
            if job.worker_id != worker_id and job.state == RUNNING:
                self._tell_cancel(job)  # a duplicate run elsewhere: first result wins
            if result is not None:
                job.result_blob = outcome.result_blob
                self._finish(job, COMPLETED, result=result)
            elif outcome.retryable and self._may_retry(job):
                self._requeue(job)
            else:
                note = (f" (gave up after {job.attempts} attempts)"
                        if outcome.retryable else "")
                self._finish(job, FAILED, error=outcome.error + note,
                             kind=outcome.kind or "JobFailed")
        return job

    def _finish(self, job: Job, state: str, result: ActionResult | None = None,
                error: str = "", kind: str = "") -> None:
        job.state, job.result, job.error, job.error_kind = state, result, error, kind
        job.completed_at = self.clock()
        self.counts["completed" if state == COMPLETED else "failed"] += 1
        self._changed(job)
        self._finished.append(job.job_id)
        while len(self._finished) > _KEEP_FINISHED:
            self.jobs.pop(self._finished.popleft(), None)

    def _requeue(self, job: Job, count_attempt: bool = True) -> None:
        if not count_attempt:
            job.attempts = max(job.attempts - 1, 0)
        job.state, job.worker_id, job.started_at = QUEUED, "", 0.0
        job.queued_since = self.clock()
        self.queue.push(job.client_id, job.job_id, front=True)
        self._changed(job)

    def _may_retry(self, job: Job) -> bool:
        return job.attempts < self.cfg.max_attempts and IN_PLACE not in job.platform

    def _retry_or_fail(self, job: Job, why: str) -> None:
        if self._may_retry(job):
            self._requeue(job)
        elif IN_PLACE in job.platform:
            self._finish(job, FAILED, error=f"{why} (an in-place job is never retried)",
                         kind="JobFailed")
        else:
            self._finish(job, FAILED, error=f"{why}; gave up after {job.attempts} attempts",
                         kind="JobFailed")

    def _reconcile(self, w: WorkerInfo, still_running: set[str], suspects: set[str]) -> None:
        """Re-queue jobs we believed ``w`` ran but it does not (e.g. across a restart)."""
        for jid in suspects - still_running:
            job = self.jobs.get(jid)
            w.running.discard(jid)
            if job is not None and job.state == RUNNING and job.worker_id == w.worker_id:
                self._requeue(job, count_attempt=False)
        w.unconfirmed.clear()
        w.to_lease = [j for j in w.to_lease if j in w.running]

    def _tell_cancel(self, job: Job) -> None:
        w = self.workers.get(job.worker_id)
        if w is not None:
            w.to_cancel.append(job.job_id)
            self._wake(w.worker_id)

    def _wake(self, worker_id: str) -> None:
        event = self._worker_events.get(worker_id)
        if event is not None:
            event.set()

    def _dispatch(self) -> None:
        """Hand queued jobs to free workers (fair queue order, ``placement`` rule)."""
        if not len(self.queue):
            return
        free = FreeWorkers(self.workers.values())
        jobs = self.jobs
        while len(self.queue) and free.slots > 0:
            picked = self.queue.pop_next(lambda job_id: free.place(jobs[job_id]))
            if picked is None:
                return
            job_id, w = picked
            job = jobs[job_id]
            job.state, job.worker_id, job.started_at = RUNNING, w.worker_id, self.clock()
            job.attempts += 1
            w.running.add(job_id)
            w.to_lease.append(job_id)
            free.took()
            self._changed(job)
            self._wake(w.worker_id)


def _read(cas: LocalCAS, digest: Digest, what: str) -> bytes:
    """A blob the action needs; MissingBlobs (REAPI: FAILED_PRECONDITION, MISSING) if absent."""
    if digest.size == 0:
        return b""  # the empty blob is always there (REAPI), stored or not
    try:
        return cas.get_bytes(digest)
    except BlobNotFound:
        raise MissingBlobs(f"the {what} blob {digest} is not in the CAS ({cas.function}); "
                           "upload it first", (blob_subject(digest, cas.function),)) from None


def _fmt(props: Properties) -> str:
    return ", ".join(f"{k}={v}" for k, v in props) or "(any)"
