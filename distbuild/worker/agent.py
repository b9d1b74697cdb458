"""The worker process: register, heartbeat, lease jobs, run them, report.

Threads: one long-polls LeaseWork (jobs and cancellations), one heartbeats, and a pool of
``capacity`` threads runs jobs. A lost scheduler is retried with bounded backoff forever (the
worker is a daemon); results finished while the scheduler is down are re-sent for a while.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc

from distbuild._proto.v1 import scheduler_pb2 as pb
from distbuild._proto.v1 import scheduler_pb2_grpc as pb_grpc
from distbuild.cas.digest import BLAKE3, DigestFunction
from distbuild.cas.store import LocalCAS
from distbuild.codec import action_from_proto
from distbuild.config import Config, cpu_count
from distbuild.errors import DistbuildError
from distbuild.executors import make_executor
from distbuild.inplace import IN_PLACE
from distbuild.reapi import convert
from distbuild.reapi.cas_client import RemoteCAS
from distbuild.rpc.server import bind, make_channel, make_server
from distbuild.rpc.status import error_from_rpc, failure_status, guarded
from distbuild.worker.blob_cache import CachedStore, CachedStores
from distbuild.worker.job_runner import JobOutcome, JobRunner
from distbuild.worker.platform import host_platform, rustc_toolchain_id

log = logging.getLogger(__name__)

LEASE_WAIT = 5.0
REPORT_PATIENCE = 120.0


class Worker:
    def __init__(self, cfg: Config, worker_id: str, scheduler: str, port: int = 0,
                 capacity: int = 0, executor: str = "", host: str = "127.0.0.1",
                 toolchains: tuple[str, ...] = ("rustc",), work_dir: Path | None = None,
                 cache: LocalCAS | None = None, in_place: bool = False,
                 shared_cache: bool = False):
        self.cfg = cfg
        self.worker_id = worker_id
        self.scheduler_addr = scheduler
        self.capacity = capacity or cfg.worker.capacity or cpu_count()
        # One or more executor kinds ("local", "local,wasm"): an action picks one by its
        # "executor" platform property.
        self.kinds = [k.strip() for k in (executor or cfg.worker.executor).split(",") if k.strip()]
        self.kind = ",".join(self.kinds)
        base = work_dir or cfg.home / "workers" / worker_id
        self.channel = make_channel(scheduler, cfg)
        self.stub = pb_grpc.SchedulerStub(self.channel)
        cache = cache or LocalCAS(base / "cache", cfg.worker.cache_max_size, cfg.cache.gc_target)
        # shared_cache: ``cache`` is the scheduler's own CAS (the master's embedded worker)
        self.store = CachedStore(cache, RemoteCAS(scheduler, cfg, channel=self.channel),
                                 shared=shared_cache)

        def other_store(function: DigestFunction) -> CachedStore:
            # Actions of REAPI clients that hash with SHA-256 (Bazel before 6.4): a cache of
            # their own beside the BLAKE3 one.
            local = LocalCAS(base / f"cache-{function.value}", cfg.worker.cache_max_size,
                             cfg.cache.gc_target, function)
            return CachedStore(local, RemoteCAS(scheduler, cfg, channel=self.channel,
                                                function=function))

        self.stores = CachedStores(self.store, other_store)
        # Executors read toolchains and modules by their BLAKE3 digests.
        self.executors = {k: make_executor(k, cfg, self.store) for k in self.kinds}
        # in_place: the master's embedded worker only (see job_runner.py)
        self.runner = JobRunner(worker_id, self.stores, self.executors, base / "sandboxes",
                                in_place=in_place)
        props = [*(("executor", k) for k in self.kinds), *host_platform(),
                 *([IN_PLACE] if in_place else [])]
        if self.kind == "docker":  # runs whatever toolchain an action ships (by digest)
            props.append(("toolchain", "*"))
        else:
            props += [("toolchain", t) for t in dict.fromkeys(map(rustc_toolchain_id, toolchains))
                      if t]
        self.platform = tuple(sorted(props))
        self.heartbeat_interval = cfg.scheduler.heartbeat_interval
        self._pool = futures.ThreadPoolExecutor(self.capacity, thread_name_prefix="job")
        self._running: dict[str, threading.Event] = {}
        self._unreported: set[str] = set()  # finished, result not yet acknowledged
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.server = make_server(cfg, max_workers=8)
        pb_grpc.add_WorkerAgentServicer_to_server(_AgentServicer(self), self.server)
        self.port = bind(self.server, f"{host}:{port}", cfg)
        self.address = f"{host}:{self.port}"

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> Worker:
        self.server.start()
        self._register_until_ok()
        for target, name in ((self._lease_loop, "lease"), (self._heartbeat_loop, "heartbeat")):
            threading.Thread(target=target, name=name, daemon=True).start()
        log.info("worker %s serving on %s, %d slots, platform %s", self.worker_id, self.address,
                 self.capacity, self.platform)
        return self

    def stop(self) -> None:
        """Stop leasing, kill running jobs and hand them back to the scheduler for a retry."""
        self._stop.set()
        with self._lock:
            for ev in self._running.values():
                ev.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.runner.close()
        self.server.stop(0.5)
        for executor in self.executors.values():
            executor.close()
        self.channel.close()

    def wait(self) -> None:
        self._stop.wait()

    def running_ids(self) -> list[str]:
        with self._lock:
            return [*self._running, *self._unreported]

    # -- scheduler calls --------------------------------------------------------------------
    def _register(self) -> None:
        req = pb.RegisterWorkerRequest(
            worker_id=self.worker_id, address=self.address, capacity=self.capacity,
            platform=convert.platform_to_proto(self.platform), running_job_ids=self.running_ids())
        resp = self.stub.RegisterWorker(req, timeout=10)
        if resp.heartbeat_interval > 0:
            self.heartbeat_interval = resp.heartbeat_interval

    def _register_until_ok(self) -> None:
        delay = 0.2
        while not self._stop.is_set():
            try:
                self._register()
                return
            except grpc.RpcError as e:
                err = error_from_rpc(e, f"scheduler at {self.scheduler_addr}")
                log.warning("cannot register with the scheduler: %s", err)
                if e.code() == grpc.StatusCode.UNAUTHENTICATED:
                    raise err from e
            self._stop.wait(delay)
            delay = min(delay * 2, 5.0)

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_interval):
            try:
                resp = self.stub.Heartbeat(pb.HeartbeatRequest(
                    worker_id=self.worker_id, running_job_ids=self.running_ids()), timeout=10)
            except grpc.RpcError as e:
                log.info("heartbeat failed: %s", error_from_rpc(e))
                continue
            self._cancel(resp.cancel_job_ids)
            if resp.reregister:
                self._register_until_ok()

    def _lease_loop(self) -> None:
        delay = 0.2
        while not self._stop.is_set():
            with self._lock:
                free = self.capacity - len(self._running)
            try:
                resp = self.stub.LeaseWork(pb.LeaseWorkRequest(
                    worker_id=self.worker_id, free_slots=free, wait_seconds=LEASE_WAIT),
                    timeout=LEASE_WAIT + 10)
                delay = 0.2
            except grpc.RpcError as e:
                log.info("lease failed: %s", error_from_rpc(e))
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._accept(resp)

    def _accept(self, resp: pb.LeaseWorkResponse) -> None:
        """Start the jobs a lease handed us; apply its cancellations."""
        self._cancel(resp.cancel_job_ids)
        if resp.reregister:
            self._register_until_ok()
        for item in resp.items:
            cancel = threading.Event()
            with self._lock:
                self._running[item.job_id] = cancel
            try:
                self._pool.submit(self._run_job, item, cancel)
            except RuntimeError:  # shutting down: the scheduler re-queues it when we are lost
                with self._lock:
                    self._running.pop(item.job_id, None)

    def _cancel(self, job_ids: object) -> None:
        with self._lock:
            for jid in job_ids:  # type: ignore[attr-defined]
                ev = self._running.get(jid)
                if ev is not None:
                    ev.set()

    def _run_job(self, item: pb.WorkItem, cancel: threading.Event) -> None:
        try:
            try:
                action = action_from_proto(item.action)
                function = (convert.function_from_proto(item.digest_function)
                            if item.digest_function else BLAKE3)
                outcome = self.runner.run(item.job_id, action, cancel, function,
                                          convert.digest_from_proto(item.action_digest))
            except DistbuildError as e:
                outcome = JobOutcome(error=str(e), kind=type(e).__name__)
            except Exception as e:  # noqa: BLE001 - a bug in one job must not kill the worker
                log.exception("job %s crashed", item.job_id)
                outcome = JobOutcome(error=f"worker crashed: {e}", kind="ExecutionError",
                                     retryable=True)
            if self._stop.is_set() and outcome.result is None:
                # Killed because this worker is shutting down: another worker may run it.
                outcome = JobOutcome(error=f"worker {self.worker_id} shut down",
                                     kind="ExecutionError", retryable=True)
            self._report(item.job_id, outcome)
        finally:
            with self._lock:
                self._running.pop(item.job_id, None)

    def _report(self, job_id: str, outcome: JobOutcome) -> None:
        """Report a finished job, taking the next work in the same call when we can."""
        req = pb.ReportResultRequest(worker_id=self.worker_id, job_id=job_id,
                                     retryable=outcome.retryable)
        if outcome.result is not None:
            req.result.CopyFrom(convert.result_to_proto(outcome.result))
        else:
            req.error.CopyFrom(failure_status(outcome.kind, outcome.error))
        with self._lock:
            self._running.pop(job_id, None)  # its slot is free for what the lease brings
            self._unreported.add(job_id)  # still listed in heartbeats until reported
            free = self.capacity - len(self._running)
        try:
            self._send_report(req, free)
        finally:
            with self._lock:
                self._unreported.discard(job_id)

    def _send_report(self, req: pb.ReportResultRequest, free: int) -> None:
        if not self._stop.is_set():
            try:
                resp = self.stub.LeaseWork(pb.LeaseWorkRequest(
                    worker_id=self.worker_id, free_slots=free, wait_seconds=0,
                    reports=[req]), timeout=10)
                self._accept(resp)
                return
            except grpc.RpcError:
                pass  # retried below as a plain report
        # Keep trying while the scheduler restarts; only briefly when we are shutting down.
        patience = 2.0 if self._stop.is_set() else REPORT_PATIENCE
        deadline = time.monotonic() + patience
        while True:
            try:
                self.stub.ReportResult(req, timeout=5)
                return
            except grpc.RpcError as e:
                if time.monotonic() > deadline or (self._stop.is_set() and patience > 2.0):
                    log.error("giving up reporting job %s: %s", req.job_id, error_from_rpc(e))
                    return
                time.sleep(0.5)


class _AgentServicer(pb_grpc.WorkerAgentServicer):
    def __init__(self, worker: Worker):
        self.w = worker

    @guarded
    def GetStatus(self, request: pb.WorkerStatusRequest,
                  context: grpc.ServicerContext) -> pb.WorkerStatusResponse:
        w = self.w
        running = w.running_ids()
        return pb.WorkerStatusResponse(
            worker=pb.Worker(worker_id=w.worker_id, address=w.address, capacity=w.capacity,
                             running=len(running),
                             platform=convert.platform_to_proto(w.platform),
                             state=pb.ALIVE),
            running_job_ids=running, cache_bytes=w.store.local.total_size(),
            cache_max_bytes=w.store.local.max_size)
