"""A queue that interleaves clients: round-robin over client ids, FIFO within a client.

One client's burst of 500 jobs waits behind at most one job of every other client per round,
so nobody starves.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterator


class FairQueue:
    def __init__(self) -> None:
        self._queues: OrderedDict[str, deque[str]] = OrderedDict()
        self._size = 0

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

    def pop_next(self, placeable: Callable[[str], bool]) -> str | None:
        """Pop the head job of the first client (in round-robin order) whose head is placeable.

        The chosen client moves to the back of the round, so the next pop serves another.
        """
        for client in list(self._queues):
            q = self._queues[client]
            if placeable(q[0]):
                job_id = q.popleft()
                self._size -= 1
                if q:
                    self._queues.move_to_end(client)
                else:
                    del self._queues[client]
                return job_id
        return None

    def __iter__(self) -> Iterator[str]:
        for q in self._queues.values():
            yield from q
