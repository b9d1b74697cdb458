"""How the master executes a cache miss: the CompileRunner interface and the local runner.

The master decides *what* to run (argv with path remapping, environment, the outputs it must
find afterwards); a runner decides *where*. The local runner runs rustc in place. A remote
runner (see ``remote_runner.py``) ships the job to the scheduler and downloads the outputs
to the same paths; when it raises ``RemoteError`` the master falls back to the local runner
and counts the fallback.
"""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

from distbuild.config import Config, cpu_count


@dataclass
class CompileJob:
    argv: list[str]  # argv[0] is rustc; paths as Cargo gave them (absolute or cwd-relative)
    env: dict[str, str]  # complete environment for rustc (jobserver variables removed)
    cwd: str  # absolute working directory
    outputs: list[str]  # absolute paths of every file the compile produces
    inputs: list[str] | None = None  # absolute input paths when known (from a manifest)
    roots: dict[str, str] = field(default_factory=dict)  # placeholder -> absolute root path


@dataclass
class CompileRun:
    exit_code: int
    stdout: bytes
    stderr: bytes
    where: str  # "local" | "remote"
    worker: str = ""
    duration_s: float = 0.0


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
        with self._slots:
            start = time.monotonic()
            proc = subprocess.run(
                job.argv, cwd=job.cwd, env=job.env, stdin=subprocess.DEVNULL,
                capture_output=True, check=False,
            )
            return CompileRun(proc.returncode, proc.stdout, proc.stderr, "local",
                              duration_s=time.monotonic() - start)


def make_runner(cfg: Config) -> CompileRunner:
    """The runner for this configuration: remote when a scheduler is configured."""
    local = LocalRunner(cfg.master.jobs)
    if cfg.scheduler.addr:
        try:
            from distbuild.master.remote_runner import RemoteRunner
        except ImportError:
            return local
        return RemoteRunner(cfg, fallback=local,  # type: ignore[return-value]
                            executor=cfg.scheduler.executor)
    return local

