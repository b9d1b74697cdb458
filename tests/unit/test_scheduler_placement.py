"""Placement within one dispatch pass: the heap gives the same worker as scanning them all."""

from __future__ import annotations

import random

from distbuild.cas.digest import digest_bytes
from distbuild.scheduler.model import Job, WorkerInfo, matches
from distbuild.scheduler.placement import FreeWorkers

LOCAL = (("executor", "local"),)
DOCKER = (("executor", "docker"),)


def _naive(job: Job, workers: list[WorkerInfo]) -> WorkerInfo | None:
    fits = [w for w in workers if w.free > 0 and matches(job.platform, w.platform)]
    return min(fits, key=lambda w: (w.load, len(w.running), w.completed), default=None)


def test_heap_placement_matches_a_full_scan() -> None:
    """Placing many jobs in one pass picks, job after job, the worker a full scan would pick,
    and never fills a worker beyond its capacity."""
    rng = random.Random(7)
    workers = [WorkerInfo(f"w{i}", capacity=rng.randint(1, 4),
                          platform=rng.choice([LOCAL, DOCKER, LOCAL + DOCKER]),
                          completed=rng.randint(0, 3)) for i in range(40)]
    for w in workers:
        w.running = {f"{w.worker_id}-old{k}" for k in range(rng.randint(0, w.capacity))}
    free = FreeWorkers(workers)
    for n in range(200):
        job = Job(f"j{n}", digest_bytes(str(n).encode()), "c",
                  platform=rng.choice([LOCAL, DOCKER]))
        expected = _naive(job, workers)
        picked = free.place(job)
        assert picked is expected
        if picked is not None:
            picked.running.add(job.job_id)
            free.took()
    assert all(len(w.running) <= w.capacity for w in workers)
    assert free.slots == 0 and all(w.free == 0 for w in workers)
