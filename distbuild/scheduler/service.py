"""The scheduler process: the Scheduler servicer plus the CAS and action cache it serves.

``SchedulerServer`` assembles everything (state database, CAS, action cache, reaper thread,
gRPC server) and is what ``cargo-distbuild scheduler run`` and the tests start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc

from distbuild import __version__
from distbuild._proto.v1 import remote_execution_pb2 as re_pb
from distbuild._proto.v1 import scheduler_pb2 as pb
from distbuild._proto.v1 import scheduler_pb2_grpc as pb_grpc
from distbuild.cas.action_cache import ActionCache
from distbuild.cas.service import add_storage_services
from distbuild.cas.store import LocalCAS
from distbuild.config import Config
from distbuild.rpc import convert
from distbuild.rpc.server import bind, make_server
from distbuild.rpc.status import guarded
from distbuild.scheduler.core import JobWatch, Scheduler
from distbuild.scheduler.model import Job, Outcome, WorkerInfo
from distbuild.scheduler.persistence import StateDB

log = logging.getLogger(__name__)

_WATCH_SLICE = 5.0  # a streaming call re-checks its context this often
_USAGE_TTL = 10.0  # seconds a CAS size figure in Status may be old
_SETTLE = 0.2  # an intermediate state is reported once it has lasted this long
_COALESCE = 0.01  # ExecuteBatch: changes within this long after one go in one message


def job_to_proto(job: Job) -> pb.Job:
    msg = pb.Job(
        job_id=job.job_id, action_digest=convert.digest_to_proto(job.action_digest),
        client_id=job.client_id, state=pb.JobState.Value(job.state), worker_id=job.worker_id,
        attempts=job.attempts, submitted_at=job.submitted_at, started_at=job.started_at,
        completed_at=job.completed_at, cached=job.cached,
        platform=convert.platform_to_proto(job.platform),
    )
    if job.result is not None:
        msg.result.CopyFrom(convert.result_to_proto(job.result))
    if job.error:
        msg.error.CopyFrom(re_pb.Status(code=0, message=f"{job.error_kind}: {job.error}"))
    return msg


def worker_to_proto(w: WorkerInfo) -> pb.Worker:
    return pb.Worker(
        worker_id=w.worker_id, address=w.address, capacity=w.capacity, running=len(w.running),
        platform=convert.platform_to_proto(w.platform), state=pb.WorkerState.Value(w.state),
        last_heartbeat=w.last_heartbeat, registered_at=w.registered_at, completed=w.completed,
    )


class SchedulerServicer(pb_grpc.SchedulerServicer):
    def __init__(self, core: Scheduler, cas: LocalCAS, heartbeat_interval: float):
        self.core = core
        self.cas = cas
        self.heartbeat_interval = heartbeat_interval
        self._usage = (0.0, 0, 0)  # (when, blobs, bytes): a CAS walk is not free

    def _cas_usage(self) -> tuple[int, int]:
        when, count, size = self._usage
        if time.monotonic() - when > _USAGE_TTL:
            blobs = list(self.cas.list())
            count, size = len(blobs), sum(b.digest.size for b in blobs)
            self._usage = (time.monotonic(), count, size)
        return count, size

    def _follow(self, job: Job, context: grpc.ServicerContext) -> Iterator[pb.JobUpdate]:
        """The job now, then its changes until it is done.

        A change is sent once it has lasted ``_SETTLE`` seconds: a job that starts and
        finishes quickly produces two updates (queued, done), not three.
        """
        yield pb.JobUpdate(job=job_to_proto(job), done=job.done)
        sent = job.version
        while not job.done and context.is_active():
            newer = self.core.watch(job.job_id, job.version, _WATCH_SLICE)
            if newer.version != job.version and not newer.done:
                newer = self.core.watch(job.job_id, newer.version, _SETTLE)
            if newer.version != sent:
                yield pb.JobUpdate(job=job_to_proto(newer), done=newer.done)
                sent = newer.version
            job = newer

    @guarded
    def Execute(self, request: pb.ExecuteRequest,
                context: grpc.ServicerContext) -> Iterator[pb.JobUpdate]:
        job = self.core.submit(convert.digest_from_proto(request.action_digest),
                               request.client_id, request.skip_cache_lookup)
        yield from self._follow(job, context)

    @guarded
    def ExecuteBatch(self, request: pb.ExecuteBatchRequest,
                     context: grpc.ServicerContext) -> Iterator[pb.ExecuteBatchResponse]:
        outcomes = self.core.submit_many(
            [(convert.digest_from_proto(r.action_digest), r.client_id, r.skip_cache_lookup)
             for r in request.requests])
        first = pb.ExecuteBatchResponse()
        index: dict[str, int] = {}
        sent: dict[str, str] = {}  # job id -> state last sent
        for i, out in enumerate(outcomes):
            if isinstance(out, Job):
                first.updates.add(job=job_to_proto(out), done=out.done, request_index=i)
                if not out.done:
                    index[out.job_id] = i
                    sent[out.job_id] = out.state
            else:
                refused = pb.Job(action_digest=request.requests[i].action_digest,
                                 client_id=request.requests[i].client_id, state=pb.FAILED,
                                 error=re_pb.Status(message=f"{type(out).__name__}: {out}"))
                first.updates.add(job=refused, done=True, request_index=i)
        watch = self.core.watch_jobs(index)
        try:
            yield first
            yield from self._follow_many(watch, index, sent, context)
        finally:
            self.core.unwatch(watch)

    def _follow_many(self, watch: JobWatch, index: dict[str, int], sent: dict[str, str],
                     context: grpc.ServicerContext) -> Iterator[pb.ExecuteBatchResponse]:
        """Updates of the watched jobs until all are done, several per message.

        A job's end is sent at once; an intermediate state (running, re-queued) only once it
        has lasted ``_SETTLE`` seconds, as in ``_follow``.
        """
        unsettled: dict[str, float] = {}  # job id -> when it entered its new state
        while index and context.is_active():
            now = time.monotonic()
            wait = min([_WATCH_SLICE] + [t + _SETTLE - now for t in unsettled.values()])
            changed = self.core.changes(watch, max(wait, 0.0))
            if changed and len(index) > 1:
                # Others of the batch are likely to end within a few ms: one message for all.
                time.sleep(_COALESCE)
                changed += self.core.changes(watch, 0.0)
            resp = pb.ExecuteBatchResponse()
            ended = []
            for job in changed:
                if job.done and job.job_id in index:
                    resp.updates.add(job=job_to_proto(job), done=True,
                                     request_index=index.pop(job.job_id))
                    unsettled.pop(job.job_id, None)
                    ended.append(job.job_id)
                elif job.job_id in index and job.state != sent[job.job_id]:
                    unsettled.setdefault(job.job_id, time.monotonic())
            now = time.monotonic()
            for jid in [j for j, t in unsettled.items() if now - t >= _SETTLE]:
                del unsettled[jid]
                job = self.core.get(jid)
                if not job.done and job.state != sent[jid]:
                    sent[jid] = job.state
                    resp.updates.add(job=job_to_proto(job), request_index=index[jid])
            if ended:
                self.core.unwatch(watch, ended)
            if resp.updates:
                yield resp

    @guarded
    def WaitExecution(self, request: pb.WaitExecutionRequest,
                      context: grpc.ServicerContext) -> Iterator[pb.JobUpdate]:
        yield from self._follow(self.core.get(request.job_id), context)

    @guarded
    def GetJob(self, request: pb.GetJobRequest, context: grpc.ServicerContext) -> pb.Job:
        return job_to_proto(self.core.get(request.job_id))

    @guarded
    def ListJobs(self, request: pb.ListJobsRequest,
                 context: grpc.ServicerContext) -> pb.ListJobsResponse:
        states = {pb.JobState.Name(s) for s in request.states}
        jobs = self.core.list_jobs(states or None, request.limit)
        return pb.ListJobsResponse(jobs=[job_to_proto(j) for j in jobs])

    @guarded
    def CancelJob(self, request: pb.CancelJobRequest, context: grpc.ServicerContext) -> pb.Job:
        return job_to_proto(self.core.cancel(request.job_id))

    @guarded
    def ListWorkers(self, request: pb.ListWorkersRequest,
                    context: grpc.ServicerContext) -> pb.ListWorkersResponse:
        return pb.ListWorkersResponse(
            workers=[worker_to_proto(w) for w in self.core.list_workers()])

    @guarded
    def Status(self, request: pb.StatusRequest,
               context: grpc.ServicerContext) -> pb.StatusResponse:
        s = self.core.status()
        count, size = self._cas_usage()
        return pb.StatusResponse(version=__version__, cas_blobs=count, cas_bytes=size,
                                 **{k: type(getattr(pb.StatusResponse(), k))(v)
                                    for k, v in s.items()})

    @guarded
    def RegisterWorker(self, request: pb.RegisterWorkerRequest,
                       context: grpc.ServicerContext) -> pb.RegisterWorkerResponse:
        self.core.register(request.worker_id, request.address, request.capacity,
                           convert.platform_from_proto(request.platform),
                           list(request.running_job_ids))
        return pb.RegisterWorkerResponse(heartbeat_interval=self.heartbeat_interval)

    @guarded
    def Heartbeat(self, request: pb.HeartbeatRequest,
                  context: grpc.ServicerContext) -> pb.HeartbeatResponse:
        rereg, cancels = self.core.heartbeat(request.worker_id, list(request.running_job_ids))
        return pb.HeartbeatResponse(reregister=rereg, cancel_job_ids=cancels)

    @guarded
    def LeaseWork(self, request: pb.LeaseWorkRequest,
                  context: grpc.ServicerContext) -> pb.LeaseWorkResponse:
        if request.reports:
            self.core.report_many(request.worker_id,
                                  [_outcome(r) for r in request.reports])
        wait = min(max(request.wait_seconds, 0.0), 30.0)
        items, cancels, rereg = self.core.lease(request.worker_id, wait)
        resp = pb.LeaseWorkResponse(cancel_job_ids=cancels, reregister=rereg)
        for job in items:
            item = resp.items.add(job_id=job.job_id, attempt=job.attempts,
                                  action_digest=convert.digest_to_proto(job.action_digest))
            item.action.ParseFromString(job.action_blob)
        return resp

    @guarded
    def ReportResult(self, request: pb.ReportResultRequest,
                     context: grpc.ServicerContext) -> pb.ReportResultResponse:
        self.core.report_many(request.worker_id, [_outcome(request)])
        return pb.ReportResultResponse()


def _outcome(request: pb.ReportResultRequest) -> Outcome:
    result = convert.result_from_proto(request.result) if request.HasField("result") else None
    kind, _, message = request.error.message.partition(": ")
    if not message:
        kind, message = "", request.error.message
    return Outcome(request.job_id, result, message, kind, request.retryable,
                   request.result.SerializeToString() if result is not None else b"")


class SchedulerServer:
    """A running scheduler: gRPC server + reaper thread. ``stop()`` to end it."""

    def __init__(self, cfg: Config, addr: str = "127.0.0.1:0", data_dir: Path | None = None,
                 cas: LocalCAS | None = None):
        self.cfg = cfg
        self.data_dir = data_dir or cfg.home / "scheduler"
        self.cas = cas or LocalCAS(self.data_dir / "cas", cfg.cache.max_size, cfg.cache.gc_target)
        self.ac = ActionCache(self.data_dir / "ac", self.cas)
        self.db = StateDB(self.data_dir / "state.db")
        self.core = Scheduler(cfg.scheduler, self.db, self.cas, self.ac)
        # Every worker's lease long-poll and every followed job hold a thread while they wait.
        self.server = make_server(cfg, max_workers=1024)
        add_storage_services(self.server, self.cas, self.ac)
        pb_grpc.add_SchedulerServicer_to_server(
            SchedulerServicer(self.core, self.cas, cfg.scheduler.heartbeat_interval), self.server)
        self.port = bind(self.server, addr, cfg)
        self.addr = f"{addr.rsplit(':', 1)[0]}:{self.port}"
        self._stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap_loop, name="reaper", daemon=True)

    def start(self) -> SchedulerServer:
        self.server.start()
        self._reaper.start()
        log.info("scheduler listening on %s (data in %s)", self.addr, self.data_dir)
        return self

    def _reap_loop(self) -> None:
        period = max(min(self.cfg.scheduler.heartbeat_interval, 1.0), 0.05)
        passes = 0
        while not self._stop.wait(period):
            passes += 1
            try:
                self.core.reap()
                if passes % int(600 / period) == 0:
                    self.db.prune()  # forget old finished jobs on disk too
            except Exception:  # noqa: BLE001 - the reaper must survive any one bad pass
                log.exception("reaper pass failed")

    def wait(self) -> None:
        self.server.wait_for_termination()

    def stop(self, grace: float = 1.0) -> None:
        self._stop.set()
        self.server.stop(grace).wait(grace + 1)
        self.core.close()
