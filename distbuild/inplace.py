"""In-place runs: the platform property that marks them, and one run at a time per output.

An in-place action runs in its own working directory on this machine and writes its outputs
where they belong (the embedded worker's default, ``worker/job_runner.py``); the master's
local runner does the same for direct runs and fallbacks. Two runs of one compilation writing
the same files at once corrupt them (a linker mapping a file another rustc is truncating), so
every in-place run in this process holds its output paths in ``IN_PLACE_OUTPUTS`` while it
runs: a retry or a fallback waits until the earlier attempt has finished writing.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

IN_PLACE = ("execution", "in-place")


class OutputLocks:
    """Exclusive holds on sets of paths; a hold waits while any of its paths is held."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._held: set[str] = set()

    @contextmanager
    def hold(self, paths: Iterable[str]) -> Iterator[None]:
        wanted = {os.path.normpath(p) for p in paths}
        with self._cond:
            while wanted & self._held:  # all or nothing: no two holds can deadlock
                self._cond.wait()
            self._held |= wanted
        try:
            yield
        finally:
            with self._cond:
                self._held -= wanted
                self._cond.notify_all()

    def held(self) -> frozenset[str]:
        with self._cond:
            return frozenset(self._held)


# One per process: the master's local runner and its embedded worker meet here.
IN_PLACE_OUTPUTS = OutputLocks()
