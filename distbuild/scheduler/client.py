"""A small client for the scheduler: submit, wait, get/list/cancel jobs, workers, status.

Everything returns plain dataclasses (``JobView``, ``WorkerView``). Network and server errors
come out as ``DistbuildError`` subclasses (``Unavailable``, ``AuthError``, ``NoSuitableWorker``,
``UnknownJob``...).

    with SchedulerClient("10.0.0.5:7000", cfg) as client:
        job = client.submit(action_digest)
        job = client.wait(job.job_id, timeout=600)
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from distbuild._proto.v1 import scheduler_pb2 as pb
from distbuild._proto.v1 import scheduler_pb2_grpc as pb_grpc
from distbuild.actions import ActionResult
from distbuild.cas.digest import Digest
from distbuild.config import Config
from distbuild.errors import Unavailable, Unresponsive
from distbuild.rpc import convert
from distbuild.rpc.server import make_channel
from distbuild.rpc.status import error_from_rpc
from distbuild.rpc.streams import first_within

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
    error: str
    cached: bool
    platform: Properties

    @property
    def done(self) -> bool:
        return self.state in ("COMPLETED", "FAILED", "CANCELLED")

    @property
    def error_kind(self) -> str:
        return self.error.partition(": ")[0] if ": " in self.error else ""


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
    return JobView(
        job_id=msg.job_id, action_digest=convert.digest_from_proto(msg.action_digest),
        client_id=msg.client_id, state=pb.JobState.Name(msg.state), worker_id=msg.worker_id,
        attempts=msg.attempts, submitted_at=msg.submitted_at, started_at=msg.started_at,
        completed_at=msg.completed_at,
        result=convert.result_from_proto(msg.result) if msg.HasField("result") else None,
        error=msg.error.message, cached=msg.cached,
        platform=convert.platform_from_proto(msg.platform),
    )


def default_client_id() -> str:
    return f"{os.environ.get('USER', 'user')}@{socket.gethostname()}"


class SchedulerClient:
    def __init__(self, addr: str, cfg: Config, client_id: str = "",
                 channel: grpc.Channel | None = None, timeout: float = 30.0):
        self.addr = addr
        self.client_id = client_id or default_client_id()
        self.channel = channel or make_channel(addr, cfg)
        self._owns = channel is None
        self.stub = pb_grpc.SchedulerStub(self.channel)
        self.timeout = timeout
        self.first_reply_s = cfg.scheduler.unresponsive_timeout  # see rpc/streams.py

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
    def execute(self, action_digest: Digest, skip_cache: bool = False,
                timeout: float | None = None) -> Iterator[JobView]:
        """Submit and yield every update until the job is done (first one: queued)."""
        req = pb.ExecuteRequest(action_digest=convert.digest_to_proto(action_digest),
                                client_id=self.client_id, skip_cache_lookup=skip_cache)
        yield from self._stream(self.stub.Execute, req, timeout)

    def execute_batch(self, action_digests: Sequence[Digest], skip_cache: bool = False,
                      timeout: float | None = None) -> Iterator[tuple[int, JobView]]:
        """Submit many actions in one call and yield (index, update) until all are done.

        ``index`` is the action's position in ``action_digests``. Every action gets a first
        update (queued, or already done) and a last one with ``done``; one the scheduler
        refused (e.g. no suitable worker) comes back FAILED with no job id, ``error_kind``
        naming the error.
        """
        req = pb.ExecuteBatchRequest(requests=[
            pb.ExecuteRequest(action_digest=convert.digest_to_proto(d), client_id=self.client_id,
                              skip_cache_lookup=skip_cache) for d in action_digests])
        try:
            for resp in first_within(self.stub.ExecuteBatch(req, timeout=timeout),
                                     self.first_reply_s, f"scheduler at {self.addr}"):
                for update in resp.updates:
                    yield update.request_index, job_from_proto(update.job)
        except grpc.RpcError as e:
            raise error_from_rpc(e, f"scheduler at {self.addr}") from e

    def follow(self, job_id: str, timeout: float | None = None) -> Iterator[JobView]:
        yield from self._stream(self.stub.WaitExecution, pb.WaitExecutionRequest(job_id=job_id),
                                timeout)

    def _stream(self, method: Callable[..., Any], req: Any,
                timeout: float | None) -> Iterator[JobView]:
        try:
            for update in first_within(method(req, timeout=timeout), self.first_reply_s,
                                       f"scheduler at {self.addr}"):
                yield job_from_proto(update.job)
        except grpc.RpcError as e:
            raise error_from_rpc(e, f"scheduler at {self.addr}") from e

    def submit(self, action_digest: Digest, skip_cache: bool = False) -> JobView:
        """Queue a job and return at once (the job keeps running without us)."""
        stream = self.stub.Execute(
            pb.ExecuteRequest(action_digest=convert.digest_to_proto(action_digest),
                              client_id=self.client_id, skip_cache_lookup=skip_cache),
            timeout=self.timeout)
        try:
            first = next(iter(stream))
        except grpc.RpcError as e:
            raise error_from_rpc(e, f"scheduler at {self.addr}") from e
        finally:
            stream.cancel()
        return job_from_proto(first.job)

    def wait(self, job_id: str, timeout: float = 3600.0, reconnect_for: float = 60.0) -> JobView:
        """Follow a job to its end, reconnecting while the scheduler restarts."""
        deadline = time.monotonic() + timeout
        down_since: float | None = None
        last: JobView | None = None
        while time.monotonic() < deadline:
            try:
                for view in self.follow(job_id, timeout=deadline - time.monotonic()):
                    last, down_since = view, None
                    if view.done:
                        return view
            except Unresponsive:
                raise  # frozen or cut off, not restarting: waiting for it is not worth it
            except Unavailable:
                now = time.monotonic()
                down_since = down_since or now
                if now - down_since > reconnect_for:
                    raise
                time.sleep(0.2)
        raise Unavailable(f"job {job_id} not done after {timeout:.0f}s "
                          f"(last state {last.state if last else 'unknown'})")

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
