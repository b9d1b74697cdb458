"""Executables written while a child process is being started can come out "busy" (ETXTBSY).

Between ``fork`` and ``exec`` a child holds a copy of every descriptor of its parent, close-
on-exec ones included. If one thread is writing an executable (a build script or bin restored
from the cache) while another starts a child, the child briefly holds that file open for
writing, and Cargo, executing the file a moment later, fails with "Text file busy". Go guards
against this with a fork lock; so do we: starting a child (``spawning``) and holding a
writable descriptor to a file that will be executed (``writing_executable``) exclude each
other. Each side may run concurrently with itself. Writers go first: a spawn waits while a
write waits, so restores are never starved by a busy worker.

Every place in a process that restores executables and starts children uses these: the
master (its runners, its toolchain probes) and workers (their executors).
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any


class SpawnLock:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._spawns = 0
        self._writes = 0
        self._writers_waiting = 0

    @contextmanager
    def spawning(self) -> Iterator[None]:
        """Hold while starting a child (until ``Popen`` returns: the child has exec'd)."""
        with self._cond:
            while self._writes or self._writers_waiting:
                self._cond.wait()
            self._spawns += 1
        try:
            yield
        finally:
            with self._cond:
                self._spawns -= 1
                self._cond.notify_all()

    @contextmanager
    def writing_executable(self) -> Iterator[None]:
        """Hold while a descriptor open for writing to an executable-to-be exists."""
        with self._cond:
            self._writers_waiting += 1
            while self._spawns:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writes += 1
        try:
            yield
        finally:
            with self._cond:
                self._writes -= 1
                self._cond.notify_all()


SPAWN_LOCK = SpawnLock()  # one per process


def run(args: Sequence[str], *, capture_output: bool = False, timeout: float | None = None,
        check: bool = False, **kwargs: Any) -> subprocess.CompletedProcess[Any]:
    """``subprocess.run``, the child started under ``SPAWN_LOCK.spawning()`` (held only until
    it has exec'd, not while it runs)."""
    if capture_output:
        kwargs["stdout"] = kwargs["stderr"] = subprocess.PIPE
    with SPAWN_LOCK.spawning():
        proc = subprocess.Popen(args, **kwargs)
    with proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    if check and proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, args, out, err)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)
