"""How the master executes a cache miss: the CompileRunner interface and the local runner.

The master decides *what* to run (argv with path remapping, environment, the outputs it must
find afterwards); a runner decides *where*. The local runner runs rustc in place. A remote
runner (see ``remote_runner.py``) ships the job to the scheduler and downloads the outputs
to the same paths; when it raises ``RemoteError`` (or ``LocalError``) the master falls back to
the local runner and counts the fallback with its reason.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from distbuild import spawnlock
from distbuild.cas.digest import Digest
from distbuild.cas.store import LocalCAS
from distbuild.config import EXECUTION_MODES, Config, cpu_count
from distbuild.errors import ConfigError
from distbuild.inplace import IN_PLACE_OUTPUTS

log = logging.getLogger(__name__)


@dataclass
class CompileJob:
    argv: list[str]  # argv[0] is rustc; paths as Cargo gave them (absolute or cwd-relative)
    env: dict[str, str]  # complete environment for rustc (jobserver variables removed)
    cwd: str  # absolute working directory
    outputs: list[str]  # absolute paths of every file the compile produces
    roots: dict[str, str] = field(default_factory=dict)  # placeholder -> absolute root path


@dataclass
class CompileRun:
    exit_code: int
    stdout: bytes
    stderr: bytes
    where: str  # "local" | "remote"
    worker: str = ""
    duration_s: float = 0.0
    # Outputs the runner wrote from verified CAS blobs (absolute path -> digest): the master
    # records them without hashing them again.
    output_digests: dict[str, Digest] = field(default_factory=dict)


class CompileRunner(Protocol):
    def run(self, job: CompileJob) -> CompileRun: ...


class LocalRunner:
    """Runs rustc in place, at most ``jobs`` at a time.

    A rustc started by the daemon cannot reach Cargo's jobserver, so the daemon bounds its
    own parallelism instead.
    """

    def __init__(self, jobs: int = 0):
        self._slots = threading.BoundedSemaphore(jobs or cpu_count())

    def run(self, job: CompileJob) -> CompileRun:
        outputs = (os.path.join(job.cwd, o) for o in job.outputs)
        # A fallback waits for an earlier in-place attempt of the same compile to finish
        # writing (distbuild/inplace.py); the hold comes first so a wait takes no slot.
        with IN_PLACE_OUTPUTS.hold(outputs), self._slots:
            start = time.monotonic()
            proc = spawnlock.run(job.argv, cwd=job.cwd, env=job.env,
                                 stdin=subprocess.DEVNULL, capture_output=True)
            return CompileRun(proc.returncode, proc.stdout, proc.stderr, "local",
                              duration_s=time.monotonic() - start)


@dataclass
class Runners:
    """The runner for misses, the local runner to fall back on, and how to shut them down."""

    primary: CompileRunner
    local: LocalRunner
    close: Callable[[], None] = lambda: None


def make_runners(cfg: Config, cas: LocalCAS, embedded_dir: Path | None = None) -> Runners:
    """On the farm ``[remote]`` names, if any; remote with a scheduler configured; otherwise
    as ``master.execution`` says: embedded (in place, through the in-process scheduler and
    worker), sandboxed (the same, each compile in a sandbox) or direct (rustc in place, no
    scheduler). ``cas`` is the master's store, which remote runs fetch through and embedded
    ones share; the embedded cluster keeps its state in ``embedded_dir`` (default
    ``<home>/embedded``)."""
    local = LocalRunner(cfg.master.jobs)
    if cfg.remote.endpoint:
        # An existing REAPI farm: asked for its capabilities off the master's start-up path.
        def start_farm() -> tuple[CompileRunner, Callable[[], None]]:
            from distbuild.master.farm_runner import FarmRunner

            farm = FarmRunner(cfg, fallback=local, cache=cas)
            return farm, farm.close

        starting = StartingRunner(start_farm, local)
        return Runners(starting, local, starting.close)
    if cfg.scheduler.addr:
        from distbuild.master.remote_runner import RemoteRunner

        return Runners(RemoteRunner(cfg, fallback=local, executor=cfg.scheduler.executor,
                                    cache=cas), local)
    if cfg.master.execution == "direct":
        return Runners(local, local)
    if cfg.master.execution not in EXECUTION_MODES:
        raise ConfigError(f"master.execution must be one of {', '.join(EXECUTION_MODES)}, "
                          f"not {cfg.master.execution!r}")
    sandboxed = cfg.master.execution == "sandboxed"

    def start() -> tuple[CompileRunner, Callable[[], None]]:
        from distbuild.scheduler.embedded import EmbeddedCluster

        cluster = EmbeddedCluster(cfg, cas, sandboxed=sandboxed, data_dir=embedded_dir).start()
        runner: CompileRunner = cluster.runner(fallback=local)
        return (IncrementalInPlace(runner, local) if sandboxed else runner), cluster.stop

    starting = StartingRunner(start, local)
    return Runners(starting, local, starting.close)


class StartingRunner:
    """A runner started in the background (the embedded cluster: gRPC imports and two servers,
    about 0.3 s), so the master answers hits and queries at once; a miss waits for it. If it
    cannot start, misses run on ``fallback`` (a cache problem never fails a build)."""

    def __init__(self, start: Callable[[], tuple[CompileRunner, Callable[[], None]]],
                 fallback: CompileRunner):
        self._runner = fallback
        self._stop: Callable[[], None] = lambda: None
        self._ready = threading.Event()
        threading.Thread(target=self._start, args=(start,), name="runner-start",
                         daemon=True).start()

    def _start(self, start: Callable[[], tuple[CompileRunner, Callable[[], None]]]) -> None:
        try:
            self._runner, self._stop = start()
        except Exception:  # noqa: BLE001 - logged; misses then compile in place
            log.exception("the runner for misses (embedded scheduler or farm) did not start; "
                          "compiling in place instead")
        finally:
            self._ready.set()

    def run(self, job: CompileJob) -> CompileRun:
        self._ready.wait()
        return self._runner.run(job)

    def close(self) -> None:
        self._ready.wait()
        self._stop()


class IncrementalInPlace:
    """Sandboxed mode: a compile carrying ``-C incremental`` runs in place, the rest embedded.

    Cargo asks for incremental compilation of workspace members in the dev profile. Their
    incremental state lives in target/ and only helps in place: a sandbox would have to drop
    it and recompile the crate from scratch, making the edit-rebuild loop slower than plain
    Cargo. On one machine there is nothing to gain from the sandbox for them.
    """

    def __init__(self, embedded: CompileRunner, local: LocalRunner):
        self.embedded = embedded
        self.local = local

    def run(self, job: CompileJob) -> CompileRun:
        incremental = any(a.startswith(("incremental=", "-Cincremental=")) for a in job.argv)
        return (self.local if incremental else self.embedded).run(job)
