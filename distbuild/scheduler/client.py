"""A small client for our scheduler: submit, wait, get/list/cancel jobs, workers, status.

Actions run through REAPI's Execution service (``reapi.execution_client.ExecutionClient``,
reachable as ``SchedulerClient.execution``); jobs, workers and status are our own Scheduler
service. Everything returns plain dataclasses (``JobView``, ``WorkerView``). Network and
server errors come out as ``DistbuildError`` subclasses (``Unavailable``, ``AuthError``,
``NoSuitableWorker``, ``UnknownJob``...).

    with SchedulerClient("10.0.0.5:7000", cfg) as client:
        job = client.submit(action_digest)
        job = client.wait(job.job_id, timeout=600)
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from distbuild._proto.v1 import scheduler_pb2 as pb
from distbuild._proto.v1 import scheduler_pb2_grpc as pb_grpc
from distbuild.actions import ActionResult
from distbuild.cas.digest import BLAKE3, Digest, DigestFunction
from distbuild.config import Config
from distbuild.reapi import convert
from distbuild.reapi.execution_client import ExecutionClient
from distbuild.rpc.server import make_channel
from distbuild.rpc.status import error_from_rpc, failure_from_status

Properties = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class JobView:
    job_id: str
    action_digest: Digest
    client_id: str
    state: str  # QUEUED | RUNNING | COMPLETED | FAILED | CANCELLED
    worker_id: str
    attempts: int
    submitted_at: float
    started_at: float
    completed_at: float
    result: ActionResult | None
    error: str  # the failure's message
    error_kind: str  # its class name (ActionTimeout, NoSuitableWorker...), "" if none
    cached: bool
    platform: Properties
    digest_function: DigestFunction = BLAKE3

    @property
    def done(self) -> bool:
        return self.state in ("COMPLETED", "FAILED", "CANCELLED")


@dataclass(frozen=True)
class WorkerView:
    worker_id: str
    address: str
    capacity: int
    running: int
    state: str  # ALIVE | LOST | DRAINING
    platform: Properties
    last_heartbeat: float
    completed: int


def job_from_proto(msg: pb.Job) -> JobView:
    kind, message = failure_from_status(msg.error) if msg.HasField("error") else ("", "")
    return JobView(
        job_id=msg.job_id, action_digest=convert.digest_from_proto(msg.action_digest),
        client_id=msg.client_id, state=pb.JobState.Name(msg.state), worker_id=msg.worker_id,
        attempts=msg.attempts, submitted_at=msg.submitted_at, started_at=msg.started_at,
        completed_at=msg.completed_at,
        result=convert.result_from_proto(msg.result) if msg.HasField("result") else None,
        error=message, error_kind=kind, cached=msg.cached,
        platform=convert.platform_from_proto(msg.platform),
        digest_function=convert.function_from_proto(msg.digest_function or
                                                    convert.function_to_proto(BLAKE3)),
    )


def default_client_id() -> str:
    return f"{os.environ.get('USER', 'user')}@{socket.gethostname()}"


class SchedulerClient:
    def __init__(self, addr: str, cfg: Config, client_id: str = "",
                 channel: grpc.Channel | None = None, timeout: float = 30.0,
                 function: DigestFunction = BLAKE3):
        self.addr = addr
        self.client_id = client_id or default_client_id()
        self.channel = channel or make_channel(addr, cfg)
        self._owns = channel is None
        self.stub = pb_grpc.SchedulerStub(self.channel)
        self.execution = ExecutionClient(self.channel, function, client_id=self.client_id,
                                         where=f"scheduler at {addr}",
                                         first_reply_s=cfg.scheduler.unresponsive_timeout)
        self.timeout = timeout

    def __enter__(self) -> SchedulerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owns:
            self.channel.close()

    def _call(self, method: Callable[..., Any], request: Any) -> Any:
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as e:
            raise error_from_rpc(e, f"scheduler at {self.addr}") from e

    # -- jobs -------------------------------------------------------------------------------
    def submit(self, action_digest: Digest, skip_cache: bool = False) -> JobView:
        """Queue a job and return at once (the job keeps running without us)."""
        first = self.execution.submit(action_digest, skip_cache, timeout=self.timeout)
        return self.get_job(first.name)

    def wait(self, job_id: str, timeout: float = 3600.0, reconnect_for: float = 60.0) -> JobView:
        """Follow a job to its end (WaitExecution), reconnecting while the scheduler
        restarts; returns its full record."""
        self.execution.wait(job_id, timeout, reconnect_for)
        return self.get_job(job_id)

    def get_job(self, job_id: str) -> JobView:
        return job_from_proto(self._call(self.stub.GetJob, pb.GetJobRequest(job_id=job_id)))

    def list_jobs(self, states: tuple[str, ...] = (), limit: int = 0) -> list[JobView]:
        req = pb.ListJobsRequest(states=[pb.JobState.Value(s) for s in states], limit=limit)
        return [job_from_proto(j) for j in self._call(self.stub.ListJobs, req).jobs]

    def cancel(self, job_id: str) -> JobView:
        return job_from_proto(self._call(self.stub.CancelJob, pb.CancelJobRequest(job_id=job_id)))

    # -- cluster ----------------------------------------------------------------------------
    def list_workers(self) -> list[WorkerView]:
        resp = self._call(self.stub.ListWorkers, pb.ListWorkersRequest())
        return [WorkerView(w.worker_id, w.address, w.capacity, w.running,
                           pb.WorkerState.Name(w.state), convert.platform_from_proto(w.platform),
                           w.last_heartbeat, w.completed) for w in resp.workers]

    def status(self) -> dict[str, Any]:
        resp = self._call(self.stub.Status, pb.StatusRequest())
        return {f.name: getattr(resp, f.name) for f in resp.DESCRIPTOR.fields}
