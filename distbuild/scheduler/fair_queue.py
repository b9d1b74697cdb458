"""A queue that interleaves clients: round-robin over client ids, FIFO within a client.

One client's burst of 500 jobs waits behind at most one job of every other client per round,
so nobody starves.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from typing import TypeVar

P = TypeVar("P")


class FairQueue:
    def __init__(self) -> None:
        self._queues: OrderedDict[str, deque[str]] = OrderedDict()
        self._size = 0
        # When each client was last served (a counter), remembered while its queue is empty
        # too: a client that just had a job does not jump ahead of one that is waiting.
        self._served: dict[str, int] = {}
        self._tick = 0

    def __len__(self) -> int:
        return self._size

    def push(self, client: str, job_id: str, front: bool = False) -> None:
        q = self._queues.get(client)
        if q is None:
            q = self._queues[client] = deque()
        if front:
            q.appendleft(job_id)
        else:
            q.append(job_id)
        self._size += 1

    def remove(self, client: str, job_id: str) -> bool:
        q = self._queues.get(client)
        if q is None or job_id not in q:
            return False
        q.remove(job_id)
        self._size -= 1
        if not q:
            del self._queues[client]
        return True

    def pop_next(self, place: Callable[[str], P | None]) -> tuple[str, P] | None:
        """Pop the head job of the first client (round-robin) for which ``place`` finds a spot.

        Returns (job id, what ``place`` returned). The chosen client moves to the back of the
        round, so the next pop serves another client.
        """
        for client in sorted(self._queues, key=lambda c: self._served.get(c, 0)):
            q = self._queues[client]
            spot = place(q[0])
            if spot is not None:
                job_id = q.popleft()
                self._size -= 1
                self._tick += 1
                self._served[client] = self._tick
                if not q:
                    del self._queues[client]
                if len(self._served) > 4 * len(self._queues) + 1000:
                    self._served = {c: t for c, t in self._served.items() if c in self._queues}
                return job_id, spot
        return None

    def __iter__(self) -> Iterator[str]:
        for q in self._queues.values():
            yield from q
