"""The scheduler process: REAPI (Execution, CAS, ByteStream, ActionCache, Capabilities) plus our
own Scheduler service (cluster administration and the worker-lease protocol).

``SchedulerServer`` assembles everything (state database, stores, reaper thread, gRPC server)
and is what ``cargo-distbuild scheduler run`` and the tests start.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import grpc

from distbuild import __version__
from distbuild._proto.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from distbuild._proto.v1 import scheduler_pb2 as pb
from distbuild._proto.v1 import scheduler_pb2_grpc as pb_grpc
from distbuild.cas.storage import ContentStores
from distbuild.cas.store import LocalCAS
from distbuild.config import Config
from distbuild.reapi import convert
from distbuild.reapi.capabilities import add_capabilities
from distbuild.reapi.cas_service import add_storage_services
from distbuild.rpc.server import bind, make_server
from distbuild.rpc.status import failure_from_status, failure_status, guarded
from distbuild.scheduler.core import Scheduler
from distbuild.scheduler.execution_service import ExecutionServicer
from distbuild.scheduler.model import Job, Outcome, WorkerInfo
from distbuild.scheduler.persistence import StateDB

log = logging.getLogger(__name__)

_USAGE_TTL = 10.0  # seconds a CAS size figure in Status may be old


def job_to_proto(job: Job) -> pb.Job:
    msg = pb.Job(
        job_id=job.job_id, action_digest=convert.digest_to_proto(job.action_digest),
        client_id=job.client_id, state=pb.JobState.Value(job.state), worker_id=job.worker_id,
        attempts=job.attempts, submitted_at=job.submitted_at, started_at=job.started_at,
        completed_at=job.completed_at, cached=job.cached,
        platform=convert.platform_to_proto(job.platform),
        digest_function=convert.function_to_proto(job.digest_function),
    )
    if job.result_blob:
        msg.result.ParseFromString(job.result_blob)
    elif job.result is not None:
        msg.result.CopyFrom(convert.result_to_proto(job.result))
    if job.error:
        msg.error.CopyFrom(failure_status(job.error_kind, job.error))
    return msg


def worker_to_proto(w: WorkerInfo) -> pb.Worker:
    return pb.Worker(
        worker_id=w.worker_id, address=w.address, capacity=w.capacity, running=len(w.running),
        platform=convert.platform_to_proto(w.platform), state=pb.WorkerState.Value(w.state),
        last_heartbeat=w.last_heartbeat, registered_at=w.registered_at, completed=w.completed,
    )


class SchedulerServicer(pb_grpc.SchedulerServicer):
    def __init__(self, core: Scheduler, stores: ContentStores, heartbeat_interval: float):
        self.core = core
        self.stores = stores
        self.heartbeat_interval = heartbeat_interval
        self._usage = (0.0, 0, 0)  # (when, blobs, bytes): a CAS walk is not free

    def _cas_usage(self) -> tuple[int, int]:
        when, count, size = self._usage
        if time.monotonic() - when > _USAGE_TTL:
            blobs = [b for cas in self.stores.all_cas() for b in cas.list()]
            count, size = len(blobs), sum(b.digest.size for b in blobs)
            self._usage = (time.monotonic(), count, size)
        return count, size

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
            item = resp.items.add(
                job_id=job.job_id, attempt=job.attempts,
                action_digest=convert.digest_to_proto(job.action_digest),
                digest_function=convert.function_to_proto(job.digest_function))
            item.action.ParseFromString(job.action_blob)
        return resp

    @guarded
    def ReportResult(self, request: pb.ReportResultRequest,
                     context: grpc.ServicerContext) -> pb.ReportResultResponse:
        self.core.report_many(request.worker_id, [_outcome(request)])
        return pb.ReportResultResponse()


def _outcome(request: pb.ReportResultRequest) -> Outcome:
    result = convert.result_from_proto(request.result) if request.HasField("result") else None
    kind, message = failure_from_status(request.error) if request.HasField("error") else ("", "")
    return Outcome(request.job_id, result, message, kind, request.retryable,
                   request.result.SerializeToString() if result is not None else b"")


class SchedulerServer:
    """A running scheduler: gRPC server + reaper thread. ``stop()`` to end it."""

    def __init__(self, cfg: Config, addr: str = "127.0.0.1:0", data_dir: Path | None = None,
                 cas: LocalCAS | None = None):
        """``cas``: an existing BLAKE3 store to serve (the master's own, embedded)."""
        self.cfg = cfg
        self.data_dir = data_dir or cfg.home / "scheduler"
        self.stores = ContentStores(self.data_dir, cfg.cache.max_size, cfg.cache.gc_target,
                                    blake3_cas=cas)
        self.cas = self.stores.cas()
        self.db = StateDB(self.data_dir / "state.db")
        self.core = Scheduler(cfg.scheduler, self.db, self.stores)
        # Every worker's lease long-poll and every followed job hold a thread while they wait.
        self.server = make_server(cfg, max_workers=1024)
        add_storage_services(self.server, self.stores)
        add_capabilities(self.server, exec_enabled=True)
        pb_grpc.add_SchedulerServicer_to_server(
            SchedulerServicer(self.core, self.stores, cfg.scheduler.heartbeat_interval),
            self.server)
        re_grpc.add_ExecutionServicer_to_server(ExecutionServicer(self.core), self.server)
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
