"""Scheduler state as plain dataclasses: jobs, workers, and the platform match rule."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from distbuild.actions import ActionResult
from distbuild.cas.digest import BLAKE3, Digest, DigestFunction

Properties = tuple[tuple[str, str], ...]

# Job states (the proto's JobState names).
QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED = "QUEUED", "RUNNING", "COMPLETED", "FAILED", \
    "CANCELLED"
FINISHED = frozenset({COMPLETED, FAILED, CANCELLED})

# Worker states.
ALIVE, LOST, DRAINING = "ALIVE", "LOST", "DRAINING"


@dataclass
class Job:
    job_id: str
    action_digest: Digest
    client_id: str
    platform: Properties = ()
    timeout_s: float = 0.0
    do_not_cache: bool = False
    action_blob: bytes = b""  # the encoded Action, handed to the worker
    state: str = QUEUED
    worker_id: str = ""
    attempts: int = 0
    seq: int = 0  # submission order
    submitted_at: float = 0.0
    started_at: float = 0.0
    completed_at: float = 0.0
    result: ActionResult | None = None
    result_blob: bytes = b""  # ``result`` as an encoded ActionResult message, when known
    error: str = ""
    error_kind: str = ""  # the DistbuildError class name behind ``error``
    cached: bool = False
    version: int = 0  # bumped on every change; watchers wait for a newer one
    queued_since: float = 0.0  # in memory only: when it last entered the queue
    inputs: frozenset[Digest] = frozenset()  # in memory only: its large input blobs
    digest_function: DigestFunction = BLAKE3  # of the action digest and all it names

    @property
    def done(self) -> bool:
        return self.state in FINISHED

    def snapshot(self) -> Job:
        """A shallow copy; several times cheaper than ``copy.copy`` on the dispatch path."""
        clone = object.__new__(Job)
        clone.__dict__.update(self.__dict__)
        return clone


@dataclass(frozen=True)
class Outcome:
    """What a worker reports for one job: a result (any exit code) or an error."""

    job_id: str
    result: ActionResult | None = None
    error: str = ""
    kind: str = ""  # the DistbuildError class name behind ``error``
    retryable: bool = False  # an infrastructure failure: may run again elsewhere
    result_blob: bytes = b""  # ``result`` encoded, when the caller has it


@dataclass
class WorkerInfo:
    worker_id: str
    address: str = ""
    capacity: int = 1
    platform: Properties = ()
    state: str = ALIVE
    last_heartbeat: float = 0.0
    registered_at: float = 0.0
    completed: int = 0
    running: set[str] = field(default_factory=set)  # job ids assigned and not yet reported
    to_lease: list[str] = field(default_factory=list)  # assigned, not yet handed over
    to_cancel: list[str] = field(default_factory=list)
    unconfirmed: set[str] = field(default_factory=set)  # loaded from disk, not yet re-seen
    holds: set[Digest] = field(default_factory=set)  # large blobs in its cache (affinity)

    @property
    def free(self) -> int:
        return self.capacity - len(self.running) if self.state == ALIVE else 0

    @property
    def load(self) -> float:
        return len(self.running) / max(self.capacity, 1)


@functools.lru_cache(maxsize=4096)
def matches(required: Properties, offered: Properties) -> bool:
    """A worker fits when it offers every required (name, value) pair.

    An offered value ``*`` accepts any value of that name (a docker worker runs any toolchain
    the action ships).
    """
    have = set(offered)
    return all(pair in have or (pair[0], "*") in have for pair in required)
