"""The embedded default: an in-process scheduler and local worker behind a RemoteRunner.

With no scheduler configured, the master still runs every miss through the same path as a
cluster build (an Action, CAS, scheduling, a worker's executor, an ActionResult) by starting
this. Everything stays on 127.0.0.1 with a random per-process token, and the scheduler's CAS
and the worker's blob cache are the master's own local CAS, so no blob is stored twice and
none is sent over gRPC (each side finds the other's blobs already there).

The worker shares this machine's files, so by default it runs each action in place
(``execution=in-place``, see ``worker/job_runner.py``); ``sandboxed=True`` makes it
materialize every action's inputs into a sandbox as a cluster worker does, which proves the
actions self-contained at the price of a sandbox per compile.

    cluster = EmbeddedCluster(cfg, cas).start()
    runner = cluster.runner(fallback=LocalRunner(cfg.master.jobs))
    ...
    cluster.stop()
"""

from __future__ import annotations

import secrets
from dataclasses import replace
from pathlib import Path

from distbuild.cas.store import LocalCAS
from distbuild.config import AuthConfig, Config, cpu_count
from distbuild.master.remote_runner import RemoteRunner
from distbuild.master.runner import CompileRunner
from distbuild.scheduler.service import SchedulerServer
from distbuild.worker.agent import Worker


class EmbeddedCluster:
    def __init__(self, cfg: Config, cas: LocalCAS, capacity: int = 0, sandboxed: bool = False,
                 data_dir: Path | None = None):
        # A private token: nothing else on this machine may submit work to it.
        self.cfg = replace(cfg, auth=AuthConfig(token=secrets.token_hex(16)))
        self.cas = cas
        self.sandboxed = sandboxed
        data = data_dir or cfg.home / "embedded"
        self.scheduler = SchedulerServer(self.cfg, "127.0.0.1:0", data_dir=data, cas=cas)
        self.worker = Worker(self.cfg, "embedded", self.scheduler.addr, capacity=capacity or
                             cfg.master.jobs or cpu_count(), executor="local", toolchains=(),
                             work_dir=data / "worker", cache=cas, in_place=not sandboxed,
                             shared_cache=True)
        self.addr = self.scheduler.addr

    def start(self) -> EmbeddedCluster:
        self.scheduler.start()
        self.worker.start()
        return self

    def runner(self, fallback: CompileRunner | None = None) -> RemoteRunner:
        """A RemoteRunner bound to this cluster (toolchains are the local machine's own)."""
        return RemoteRunner(self.cfg, fallback=fallback, addr=self.addr, client_id="embedded",
                            match_toolchain=False, where="local", cache=self.cas,
                            in_place=not self.sandboxed, shared_cache=True)

    def stop(self) -> None:
        self.worker.stop()
        self.scheduler.stop()
