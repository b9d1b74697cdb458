"""Round-robin fairness across clients."""

from __future__ import annotations

from distbuild.scheduler.fair_queue import FairQueue


def _take(q: FairQueue, n: int) -> list[str]:
    out = []
    for _ in range(n):
        picked = q.pop_next(lambda job_id: True)
        if picked is None:
            break
        out.append(picked[0])
    return out


def test_burst_does_not_starve_another_client() -> None:
    """500 jobs from A then 5 from B: B's jobs are interleaved right away, not after A's."""
    q = FairQueue()
    for i in range(500):
        q.push("A", f"a{i}")
    for i in range(5):
        q.push("B", f"b{i}")
    first = _take(q, 10)
    assert first == ["a0", "b0", "a1", "b1", "a2", "b2", "a3", "b3", "a4", "b4"]
    assert len(q) == 495


def test_unplaceable_head_lets_other_clients_through() -> None:
    """A client whose head job cannot be placed does not block the others."""
    q = FairQueue()
    q.push("A", "a0")
    q.push("B", "b0")
    picked = q.pop_next(lambda job_id: "ok" if job_id.startswith("b") else None)
    assert picked == ("b0", "ok")
    assert list(q) == ["a0"]


def test_requeue_goes_first() -> None:
    """A retried job goes back to the front of its client's queue; remove() drops jobs."""
    q = FairQueue()
    q.push("A", "a1")
    q.push("A", "a0", front=True)
    assert q.remove("A", "a1")
    assert _take(q, 5) == ["a0"]
    assert len(q) == 0
