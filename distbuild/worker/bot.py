"""A cargo-distbuild worker joined to an existing REAPI farm as one of its bots.

BuildGrid hands work to its bots through the Remote Workers API (``reapi/
bots_client.py``). ``FarmBot`` keeps one bot session open and runs each lease the farm hands
it through the worker's own job path (``JobRunner``: materialize the input tree from the
farm's CAS into a sandbox, run it with one of our executors, upload the outputs), with the
farm's digest function (SHA-256 for BuildGrid; BLAKE3 where the farm offers it). The result
goes back on the lease; the farm answers the client and fills its action cache.

The loop: one ``UpdateBotSession`` call at a time, reporting every lease held (ACTIVE while it
runs, COMPLETED with its result once done). The farm may hold a call open until it has work;
a lease that finishes meanwhile cancels the pending call, so its result is reported at once
rather than when the call returns. A lease the farm drops (cancelled, or given to another bot)
is killed here. A farm that cannot be reached is retried with bounded backoff, forever (a bot
is a daemon); a farm that no longer knows the session (it expired, the farm restarted) gets a
new one, and whatever ran under the old one is stopped: the farm has re-queued it.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Collection
from concurrent import futures
from dataclasses import dataclass, replace
from pathlib import Path

from distbuild.cas.digest import BLAKE3, SHA256, DigestFunction
from distbuild.cas.store import LocalCAS
from distbuild.codec import decode_action
from distbuild.config import Config, cpu_count
from distbuild.errors import DistbuildError, RemoteError, Unavailable
from distbuild.executors import Executor, make_executor
from distbuild.reapi.bots_client import (
    ACTIVE,
    COMPLETED,
    BotIdentity,
    BotsClient,
    LeaseReport,
    LeaseWork,
    SessionReply,
)
from distbuild.reapi.capabilities import fetch_capabilities
from distbuild.reapi.cas_client import RemoteCAS
from distbuild.rpc.server import BATCH_LIMIT, make_channel
from distbuild.worker.blob_cache import CachedStore, CachedStores
from distbuild.worker.job_runner import JobOutcome, JobRunner
from distbuild.worker.platform import farm_platform

log = logging.getLogger(__name__)

POLL_S = 10.0  # the longest one UpdateBotSession call may wait for work
CREATE_TIMEOUT_S = 30.0
MAX_BACKOFF_S = 5.0
# A farm failing this long has most likely dropped the session (BuildGrid forgets a bot after
# its keepalive timeout): open a new one.
LOST_AFTER_S = 60.0
PREFERRED = (BLAKE3, SHA256)  # the farm's CAS decides; BLAKE3 when it offers it


@dataclass
class _Held:
    """A lease this bot holds: running (``report`` None) or done and not yet acknowledged."""

    cancel: threading.Event
    report: LeaseReport | None = None


class FarmBot:
    """One bot session on the farm at ``farm`` (host:port), instance ``instance``."""

    def __init__(self, cfg: Config, bot_id: str, farm: str, instance: str = "",
                 capacity: int = 0, executor: str = "", toolchains: tuple[str, ...] = ("rustc",),
                 work_dir: Path | None = None):
        self.cfg = cfg
        self.farm = farm
        self.instance = instance
        self.bot_id = bot_id or f"{socket.gethostname()}-distbuild"
        self.capacity = capacity or cfg.worker.capacity or cpu_count()
        self.kinds = [k.strip() for k in (executor or cfg.worker.executor).split(",") if k.strip()]
        self.base = work_dir or cfg.home / "bots" / self.bot_id
        self.channel = make_channel(farm, cfg)
        self.platform = farm_platform(self.kinds, toolchains)
        self.client = BotsClient(self.channel, instance,
                                 BotIdentity(self.bot_id, self.platform, self.capacity))
        self.function: DigestFunction = SHA256
        self.runner: JobRunner | None = None
        self._held: dict[str, _Held] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()  # a lease finished, or we are stopping
        self._stop = threading.Event()
        self._drained = threading.Event()  # stopping, and every lease has its report
        self._pool = futures.ThreadPoolExecutor(self.capacity, thread_name_prefix="lease")
        self._thread: threading.Thread | None = None
        self._current: object = None  # the UpdateBotSession call in flight
        self._executors: dict[str, Executor] = {}

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> FarmBot:
        """Ask the farm what it offers, set up the stores and executors, start the session."""
        caps = fetch_capabilities(self.channel, self.instance)
        function = caps.choose(PREFERRED)
        if function is None:
            raise RemoteError(f"the farm at {self.farm} offers none of our digest functions "
                              f"({', '.join(f.name for f in PREFERRED)}); it offers "
                              f"{', '.join(caps.cache_functions) or 'none'}")
        self.function = function
        batch = min(BATCH_LIMIT, caps.max_batch_bytes or BATCH_LIMIT)
        stores = self._stores(batch)
        # Docker toolchains and Wasm modules are blobs of the farm's CAS like any other input.
        self._executors = {k: make_executor(k, self.cfg, stores.get(function))
                           for k in self.kinds}
        self.runner = JobRunner(self.bot_id, stores, self._executors, self.base / "sandboxes")
        self._thread = threading.Thread(target=self._loop, name="bot-session", daemon=True)
        self._thread.start()
        log.info("bot %s joined %s (instance %r, %s), %d slots, platform %s", self.bot_id,
                 self.farm, self.instance, function, self.capacity, self.platform)
        return self

    def _stores(self, batch: int) -> CachedStores:
        """A local cache in front of the farm's CAS, per digest function."""

        def store(f: DigestFunction) -> CachedStore:
            local = LocalCAS(self.base / f"cache-{f.value}", self.cfg.worker.cache_max_size,
                             self.cfg.cache.gc_target, f)
            return CachedStore(local, RemoteCAS(self.farm, self.cfg, channel=self.channel,
                                                function=f, instance=self.instance,
                                                batch_limit=batch))

        return CachedStores(store(BLAKE3), store)

    def stop(self) -> None:
        """Kill running leases, report them (the farm re-queues them at once) and tell the
        farm this bot is terminating, so it hands it nothing more."""
        self._stop.set()
        with self._lock:
            for held in self._held.values():
                held.cancel.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:  # leases never started (still queued in the pool)
            for lease_id, held in self._held.items():
                if held.report is None:
                    held.report = _shut_down(lease_id, self.bot_id)
        self._drained.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=POLL_S + 5)
        if self.runner is not None:
            self.runner.close()
        for executor in self._executors.values():
            executor.close()
        self.channel.close()

    def wait(self) -> None:
        self._stop.wait()

    def held_ids(self) -> list[str]:
        with self._lock:
            return list(self._held)

    # -- the session ------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            reply = self._create_until_ok()
            if reply is None:
                return
            try:
                self._serve(reply)
            except DistbuildError as e:  # the farm lost the session: open a new one
                log.warning("bot session %s lost (%s); opening a new one", reply.name, e)
                self._drop_all()
            except Exception:  # a bug here must not leave a bot that takes no work
                log.exception("bot session %s failed; opening a new one", reply.name)
                self._drop_all()
                self._stop.wait(MAX_BACKOFF_S)

    def _create_until_ok(self) -> SessionReply | None:
        delay = 0.2
        while not self._stop.is_set():
            try:
                reply = self.client.create(timeout=CREATE_TIMEOUT_S)
                log.info("bot session %s open", reply.name)
                return reply
            except DistbuildError as e:
                log.warning("cannot open a bot session on %s: %s", self.farm, e)
            self._stop.wait(delay)
            delay = min(delay * 2, MAX_BACKOFF_S)
        return None

    def _serve(self, reply: SessionReply) -> None:
        """Keep the session ``reply`` opened until we stop (RemoteError: the farm lost it)."""
        name, version = reply.name, reply.version
        self._sync(reply)
        delay, failing_since = 0.2, 0.0
        while True:
            stopping = self._stop.is_set()
            if stopping:  # the last update: wait for the killed leases' reports
                self._drained.wait(POLL_S)
            with self._lock:
                reports = [h.report or LeaseReport(lid, ACTIVE) for lid, h in self._held.items()]
            self._wake.clear()
            future = self.client.update(name, version, reports, timeout=POLL_S,
                                        terminating=stopping)
            # Only this call's end may wake the loop: the late callback of a call cancelled
            # earlier must not cancel its successor (a storm of calls the farm must serve).
            self._current = future
            future.add_done_callback(lambda f: self._wake.set() if f is self._current else None)
            self._wake.wait(POLL_S + 5)
            if not future.done():  # a lease finished or we stop: report it now
                future.cancel()
            try:
                answer = BotsClient.finish(future)
            except Unavailable as e:
                log.info("bot session update failed: %s", e)
                if stopping:
                    return
                failing_since = failing_since or time.monotonic()
                if time.monotonic() - failing_since > LOST_AFTER_S:
                    raise RemoteError(f"the farm has not answered for {LOST_AFTER_S:.0f} s: "
                                      f"{e}") from e
                self._stop.wait(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)
                continue
            delay, failing_since = 0.2, 0.0
            if answer is None:
                if stopping:
                    return
                continue
            version = answer.version or version
            acknowledged = {r.lease_id for r in reports if r.state == COMPLETED}
            self._sync(answer, acknowledged)
            if stopping:
                return

    def _sync(self, reply: SessionReply, acknowledged: Collection[str] = ()) -> None:
        """Start the leases that are new, kill those the farm no longer gives us, forget the
        completed ones it has acknowledged."""
        with self._lock:
            for lease_id in list(self._held):
                held = self._held[lease_id]
                if held.report is not None:
                    if lease_id in acknowledged:
                        del self._held[lease_id]
                elif lease_id not in reply.active or lease_id in reply.cancelled:
                    log.info("lease %s withdrawn by the farm; killing it", lease_id)
                    held.cancel.set()
                    del self._held[lease_id]
            for lease_id, work in reply.active.items():
                if lease_id in self._held or self._stop.is_set():
                    continue
                held = _Held(threading.Event())
                self._held[lease_id] = held
                try:
                    self._pool.submit(self._run, work, held)
                except RuntimeError:  # shutting down: the farm re-queues it
                    del self._held[lease_id]

    def _drop_all(self) -> None:
        with self._lock:
            for held in self._held.values():
                held.cancel.set()
            self._held.clear()

    # -- one lease --------------------------------------------------------------------------
    def _run(self, work: LeaseWork, held: _Held) -> None:
        outcome = self._outcome(work, held.cancel)
        report = LeaseReport(work.lease_id, COMPLETED, result=outcome.result,
                             failure_kind=outcome.kind, failure=outcome.error,
                             retryable=outcome.retryable)
        if outcome.result is not None:
            report = replace(report, failure_kind="", failure="")
            log.info("lease %s done: exit code %d", work.lease_id, outcome.result.exit_code)
        else:
            log.info("lease %s failed (%s%s): %s", work.lease_id, outcome.kind,
                     ", retryable" if outcome.retryable else "", outcome.error)
        with self._lock:
            if self._held.get(work.lease_id) is held:
                held.report = report
        self._wake.set()

    def _outcome(self, work: LeaseWork, cancel: threading.Event) -> JobOutcome:
        assert self.runner is not None
        if work.error:
            return JobOutcome(error=work.error, kind="InvalidRequest")
        try:
            action = work.action
            if action is None:
                assert work.action_digest is not None
                data = self.runner.stores.get(self.function).get_bytes(work.action_digest)
                action = decode_action(data)
            outcome = self.runner.run(work.lease_id, action, cancel, self.function,
                                      work.action_digest)
        except DistbuildError as e:
            outcome = JobOutcome(error=str(e), kind=type(e).__name__)
        except Exception as e:  # noqa: BLE001 - a bug in one lease must not kill the bot
            log.exception("lease %s crashed", work.lease_id)
            outcome = JobOutcome(error=f"bot crashed: {e}", kind="ExecutionError",
                                 retryable=True)
        if self._stop.is_set() and outcome.result is None:
            return JobOutcome(error=f"bot {self.bot_id} shut down", kind="ExecutionError",
                              retryable=True)
        return outcome


def _shut_down(lease_id: str, bot_id: str) -> LeaseReport:
    """A lease killed because the bot stops: another bot may run it."""
    return LeaseReport(lease_id, COMPLETED, failure_kind="ExecutionError",
                       failure=f"bot {bot_id} shut down", retryable=True)
