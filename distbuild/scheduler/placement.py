"""Placement for one dispatch pass: which free worker takes a job.

The rule: the least-loaded live worker (running jobs / slots) that has a free slot and offers
every platform property the job requires; among equally loaded ones, the one already holding
most of the job's large inputs, then the one running fewest jobs, then the one that completed
fewest, then registration order.

A dispatch pass may place hundreds of jobs (a batch submission), so the candidates are worked
out once per pass and platform, and jobs without large inputs (where affinity cannot change
the choice) take the least-loaded worker from a heap instead of scanning every worker.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from distbuild.scheduler import affinity
from distbuild.scheduler.model import Job, Properties, WorkerInfo, matches

_Entry = tuple[float, int, int, int, WorkerInfo]  # (load, running, completed, order, worker)


def _key(w: WorkerInfo) -> tuple[float, int, int]:
    return w.load, len(w.running), w.completed


class FreeWorkers:
    """The workers with a free slot at the start of a dispatch pass.

    The caller holds the scheduler lock for the whole pass and calls ``took`` after adding a
    job to a worker. Within a pass a worker's load only grows, which keeps the lazily updated
    heaps right: an entry whose key is out of date is refreshed when it reaches the top.
    """

    def __init__(self, workers: Iterable[WorkerInfo]):
        self._free = [w for w in workers if w.free > 0]
        self.slots = sum(w.free for w in self._free)
        self._fitting: dict[Properties, list[WorkerInfo]] = {}
        self._heaps: dict[Properties, list[_Entry]] = {}

    def _fits(self, platform: Properties) -> list[WorkerInfo]:
        fits = self._fitting.get(platform)
        if fits is None:
            fits = self._fitting[platform] = [w for w in self._free
                                              if matches(platform, w.platform)]
        return fits

    def place(self, job: Job) -> WorkerInfo | None:
        """The worker the rule picks for ``job``, or None when no free worker fits."""
        if job.inputs:
            fits = [w for w in self._fits(job.platform) if w.free > 0]
            if not fits:
                return None
            return min(fits, key=lambda w: (w.load, -affinity.held_bytes(job.inputs, w.holds),
                                            len(w.running), w.completed))
        heap = self._heaps.get(job.platform)
        if heap is None:
            heap = [(*_key(w), i, w) for i, w in enumerate(self._fits(job.platform))]
            heapq.heapify(heap)
            self._heaps[job.platform] = heap
        while heap:
            load, running, completed, order, w = heap[0]
            if w.free <= 0:
                heapq.heappop(heap)
            elif (load, running, completed) != _key(w):
                heapq.heapreplace(heap, (*_key(w), order, w))
            else:
                return w
        return None

    def took(self) -> None:
        """A job went to one of the workers: one free slot fewer."""
        self.slots -= 1
