"""Input affinity: prefer, among equally loaded workers, the one that already holds an action's
large inputs (it keeps what it fetched and what it produced in its blob cache).

Cheap to know here: the scheduler has the input tree in its own CAS, and it sees which blobs
each worker fetched (its jobs' inputs) and produced (their outputs). Only blobs of at least
``AFFINITY_MIN`` bytes count (rlibs, not sources), and the walk of a tree is bounded.
"""

from __future__ import annotations

from collections.abc import Iterable

from distbuild.cas.digest import Digest
from distbuild.cas.store import LocalCAS
from distbuild.codec import decode_directory
from distbuild.errors import DistbuildError

AFFINITY_MIN = 64 << 10
MAX_DIRS = 2_000  # directories walked per action at most
HOLD_LIMIT = 200_000  # digests remembered per worker (then forgotten all at once)


def large_inputs(cas: LocalCAS, root: Digest) -> frozenset[Digest]:
    """Digests of the input files of at least AFFINITY_MIN bytes (empty if unknown)."""
    found: set[Digest] = set()
    pending, seen = [root], 0
    try:
        while pending and seen < MAX_DIRS:
            digest = pending.pop()
            seen += 1
            if digest.size == 0:
                continue
            d = decode_directory(cas.get_bytes(digest))
            found.update(f.digest for f in d.files if f.digest.size >= AFFINITY_MIN)
            pending.extend(n.digest for n in d.directories)
    except (DistbuildError, OSError):
        return frozenset()
    return frozenset(found)


def held_bytes(inputs: frozenset[Digest], holds: set[Digest]) -> int:
    return sum(d.size for d in inputs if d in holds)


def remember(holds: set[Digest], digests: Iterable[Digest]) -> None:
    holds.update(d for d in digests if d.size >= AFFINITY_MIN)
    if len(holds) > HOLD_LIMIT:
        holds.clear()
