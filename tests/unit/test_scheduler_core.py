"""Scheduler logic without gRPC: placement, capacity, retries, restart, timeouts, cancel."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from distbuild.actions import Action, ActionResult, OutputFile
from distbuild.cas.digest import Digest, digest_bytes
from distbuild.cas.storage import ContentStores
from distbuild.codec import encode_action
from distbuild.config import SchedulerConfig
from distbuild.errors import NoSuitableWorker
from distbuild.scheduler.core import Scheduler, Submission
from distbuild.scheduler.persistence import StateDB

LOCAL = (("executor", "local"), ("os", "linux"))
CFG = SchedulerConfig(heartbeat_timeout=10.0, max_attempts=2, job_timeout=100.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Env:
    def __init__(self, root: Path):
        self.root = root
        self.stores = ContentStores(root)
        self.cas = self.stores.cas()
        self.clock = Clock()
        self.sched = self.new()
        self._n = 0

    def new(self) -> Scheduler:
        return Scheduler(CFG, StateDB(self.root / "state.db"), self.stores, clock=self.clock)

    def action(self, platform: tuple[tuple[str, str], ...] = LOCAL, timeout: float = 0.0,
               do_not_cache: bool = False) -> Digest:
        self._n += 1
        seed = digest_bytes(str(self._n).encode())
        return self.cas.put_bytes(encode_action(Action(seed, seed, timeout_s=timeout,
                                                       platform=platform,
                                                       do_not_cache=do_not_cache)))

    def worker(self, wid: str, capacity: int = 1,
               platform: tuple[tuple[str, str], ...] = LOCAL) -> None:
        self.sched.register(wid, f"{wid}:1", capacity, platform, [])

    def leased(self, wid: str) -> list[str]:
        items, _, _ = self.sched.lease(wid, 0)
        return [j.job_id for j in items]


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


OK = ActionResult(exit_code=0)
FAILED_COMPILE = ActionResult(exit_code=1)


def test_capacity_and_least_loaded(env: Env) -> None:
    """Jobs go to the least-loaded worker and never beyond a worker's slots."""
    env.worker("a", capacity=2)
    env.worker("b", capacity=1)
    jobs = [env.sched.submit(env.action(), "c1").job_id for _ in range(5)]
    placed = {w.worker_id: len(w.running) for w in env.sched.list_workers()}
    assert placed == {"a": 2, "b": 1}
    assert [env.sched.get(j).state for j in jobs].count("QUEUED") == 2
    assert len(env.leased("a")) == 2


def test_platform_matching(env: Env) -> None:
    """A job only goes to a worker offering its platform; none at all is refused at once."""
    env.worker("docker", platform=(("executor", "docker"), ("os", "linux")))
    with pytest.raises(NoSuitableWorker, match="executor=local"):
        env.sched.submit(env.action(), "c1")
    env.worker("local")
    job = env.sched.submit(env.action(), "c1")
    assert env.sched.get(job.job_id).worker_id == "local"


def test_fair_dispatch_between_clients(env: Env) -> None:
    """A burst of 500 from one client does not delay another client's first job."""
    env.worker("w", capacity=1)
    burst = [env.sched.submit(env.action(), "burst").job_id for _ in range(500)]
    other = env.sched.submit(env.action(), "other").job_id
    env.sched.report("w", burst[0], OK)  # frees the slot: the next job must be "other"
    assert env.sched.get(other).state == "RUNNING"


def test_lost_worker_jobs_retried_then_given_up(env: Env) -> None:
    """A silent worker is declared lost; its job is re-queued, at most max_attempts runs."""
    env.worker("a")
    job = env.sched.submit(env.action(), "c1").job_id
    env.clock.now += 11
    env.sched.reap()
    assert [w.state for w in env.sched.list_workers()] == ["LOST"]
    assert env.sched.get(job).state == "QUEUED"
    env.worker("b")
    assert env.sched.get(job).worker_id == "b"
    env.clock.now += 11
    env.sched.reap()
    final = env.sched.get(job)
    assert (final.state, final.attempts) == ("FAILED", 2)
    assert "gave up after 2 attempts" in final.error


def test_compile_error_never_retried(env: Env) -> None:
    """A nonzero exit code completes the job; it is not re-run and not cached."""
    env.worker("a")
    digest = env.action()
    job = env.sched.submit(digest, "c1").job_id
    env.sched.report("a", job, FAILED_COMPILE)
    done = env.sched.get(job)
    assert (done.state, done.attempts, done.result) == ("COMPLETED", 1, FAILED_COMPILE)
    assert env.sched.stores.ac().get(digest) is None


def test_infrastructure_failure_retried(env: Env) -> None:
    """A retryable worker error re-queues the job (bounded); a non-retryable one fails it."""
    env.worker("a")
    job = env.sched.submit(env.action(), "c1").job_id
    env.sched.report("a", job, None, "disk full", "ExecutionError", retryable=True)
    assert env.sched.get(job).state == "RUNNING"  # re-placed on the free worker at once
    env.sched.report("a", job, None, "disk full", "ExecutionError", retryable=True)
    assert env.sched.get(job).state == "FAILED"
    job2 = env.sched.submit(env.action(), "c1").job_id
    env.sched.report("a", job2, None, "bad path", "PathEscape", retryable=False)
    assert env.sched.get(job2).state == "FAILED"
    assert env.sched.get(job2).attempts == 1


def test_success_is_cached(env: Env) -> None:
    """A successful result goes to the action cache; resubmitting answers from it."""
    env.worker("a")
    digest = env.action()
    env.sched.report("a", env.sched.submit(digest, "c1").job_id, OK)
    again = env.sched.submit(digest, "c2")
    assert (again.state, again.cached) == ("COMPLETED", True)


def test_restart_keeps_queue_and_requeues_orphans(env: Env) -> None:
    """After a restart queued jobs are still queued; jobs on a worker that does not come back
    are re-queued once it is declared lost; jobs its heartbeat no longer lists are re-queued."""
    env.worker("a", capacity=1)
    env.worker("b", capacity=1)
    running_a = env.sched.submit(env.action(), "c1").job_id
    running_b = env.sched.submit(env.action(), "c1").job_id
    queued = env.sched.submit(env.action(), "c1").job_id
    env.sched.close()
    env.sched = env.new()
    assert env.sched.get(queued).state == "QUEUED"
    assert env.sched.get(running_a).state == "RUNNING"
    env.sched.heartbeat("b", [])  # b came back but no longer runs its job
    assert env.sched.get(running_b).state == "RUNNING"  # re-placed on b right away
    assert env.sched.get(running_b).attempts == 1
    env.clock.now += 11  # a never comes back
    env.sched.heartbeat("b", [running_b])
    env.sched.reap()
    assert env.sched.get(running_a).state == "QUEUED"


def test_unawaited_changes_reach_disk_without_a_restart(env: Env) -> None:
    """The group-commit thread sleeps while idle, but a change nobody waits for (a job taken
    by a worker) is still written within its interval."""
    env.worker("a")
    job_id = env.sched.submit(env.action(), "c1").job_id
    assert env.leased("a") == [job_id]
    reader = StateDB(env.root / "state.db")
    deadline = time.monotonic() + 5
    states: list[str] = []
    while time.monotonic() < deadline:
        states = [j.state for j in reader.load_jobs() if j.job_id == job_id]
        if states == ["RUNNING"]:
            break
        time.sleep(0.01)
    reader.close()
    assert states == ["RUNNING"]


def test_cancel_and_timeout(env: Env) -> None:
    """Cancelling a running job tells its worker; an overdue job is failed and cancelled."""
    env.worker("a", capacity=2)
    job = env.sched.submit(env.action(), "c1").job_id
    assert env.leased("a") == [job]
    assert env.sched.cancel(job).state == "CANCELLED"
    _, cancels, _ = env.sched.lease("a", 0)
    assert cancels == [job]
    slow = env.sched.submit(env.action(timeout=5.0), "c1").job_id
    env.clock.now += 16
    env.sched.heartbeat("a", [slow])
    env.sched.reap()
    assert env.sched.get(slow).state == "FAILED"
    assert "timed out" in env.sched.get(slow).error


def test_lost_handover_requeued(env: Env) -> None:
    """A job handed to a worker that never shows up in its heartbeats is re-queued."""
    env.worker("a")
    job = env.sched.submit(env.action(), "c1").job_id
    assert env.leased("a") == [job]  # the reply is "lost": the worker never runs it
    env.sched.heartbeat("a", [])
    assert env.sched.get(job).state == "RUNNING"  # too early to tell
    env.clock.now += 11
    env.sched.heartbeat("a", [])
    requeued = env.sched.get(job)
    assert (requeued.state, requeued.worker_id, requeued.attempts) == ("RUNNING", "a", 1)


def test_equally_loaded_workers_prefer_the_one_holding_inputs(env: Env) -> None:
    """Between two idle workers, a job goes to the one that produced its large input."""
    from distbuild.scheduler.action_builder import InputFile, build_tree

    env.worker("a")
    env.worker("b")
    big = InputFile.of(b"r" * 100_000)  # e.g. an rlib built earlier
    first = env.sched.submit(env.action(), "c1").job_id
    holder = env.sched.get(first).worker_id
    env.sched.report(holder, first, ActionResult(output_files=(
        OutputFile("target/libdep.rlib", big.digest),), exit_code=0))
    root, blobs = build_tree({"target/libdep.rlib": big, "src/lib.rs": InputFile.of(b"x")})
    for data in blobs.values():
        env.cas.put_bytes(data if isinstance(data, bytes) else data.read_bytes())
    action = env.cas.put_bytes(encode_action(Action(root, root, platform=LOCAL)))
    job = env.sched.submit(action, "c1")
    assert job.worker_id == holder


def test_submit_many_reports_each_outcome_in_order(env: Env) -> None:
    """A batch submission queues what it can and returns a per-request error for the rest."""
    env.worker("a", capacity=1)
    good = env.action()
    docker = env.action(platform=(("executor", "docker"),))
    missing = digest_bytes(b"never uploaded")
    outcomes = env.sched.submit_many([Submission(good, "c1"), Submission(docker, "c1"),
                                      Submission(missing, "c1"),
                                      Submission(env.action(), "c1")])
    assert [type(o).__name__ for o in outcomes] == ["Job", "NoSuitableWorker", "MissingBlobs",
                                                    "Job"]
    first, _, _, second = outcomes
    assert [env.sched.get(first.job_id).state,  # type: ignore[union-attr]
            env.sched.get(second.job_id).state] == ["RUNNING", "QUEUED"]  # type: ignore[union-attr]


def test_submit_many_keeps_capacity_and_fairness(env: Env) -> None:
    """A batch of 50 from one client fills the slots and no more; a later client's job runs
    on the next free slot, ahead of the rest of the batch."""
    env.worker("a", capacity=2)
    env.worker("b", capacity=1)
    burst = env.sched.submit_many([Submission(env.action(), "burst") for _ in range(50)])
    assert {w.worker_id: len(w.running) for w in env.sched.list_workers()} == {"a": 2, "b": 1}
    other = env.sched.submit(env.action(), "other").job_id
    (on_b,) = [o.job_id for o in burst  # type: ignore[union-attr]
               if env.sched.get(o.job_id).worker_id == "b"]  # type: ignore[union-attr]
    env.sched.report("b", on_b, OK)
    assert (env.sched.get(other).state, env.sched.get(other).worker_id) == ("RUNNING", "b")


IN_PLACE_PLATFORM = (("executor", "local"), ("execution", "in-place"), ("os", "linux"))


def test_in_place_job_is_never_retried(env: Env) -> None:
    """An in-place job whose worker is declared lost, or that reports a retryable error,
    fails at once: the "lost" attempt may still be writing its files in place."""
    env.worker("embedded", capacity=2, platform=IN_PLACE_PLATFORM)
    lost = env.sched.submit(env.action(IN_PLACE_PLATFORM), "master").job_id
    env.clock.now += 11
    env.sched.reap()
    job = env.sched.get(lost)
    assert (job.state, job.attempts) == ("FAILED", 1)
    assert "never retried" in job.error
    env.worker("embedded", capacity=2, platform=IN_PLACE_PLATFORM)  # it re-registers
    assert env.sched.get(lost).state == "FAILED", "re-run while the first may still write"
    errored = env.sched.submit(env.action(IN_PLACE_PLATFORM), "master").job_id
    env.sched.report("embedded", errored, None, "boom", "ExecutionError", retryable=True)
    job = env.sched.get(errored)
    assert (job.state, job.attempts) == ("FAILED", 1)


def test_in_place_jobs_fail_after_a_restart(env: Env) -> None:
    """A restarted (embedded) scheduler fails the in-place jobs it had queued or running: the
    master that submitted them is gone, and nobody may run them in place behind a new one."""
    env.worker("embedded", capacity=1, platform=IN_PLACE_PLATFORM)
    running = env.sched.submit(env.action(IN_PLACE_PLATFORM), "master").job_id
    queued = env.sched.submit(env.action(IN_PLACE_PLATFORM), "master").job_id
    env.sched.close()
    env.sched = env.new()
    env.worker("embedded", capacity=1, platform=IN_PLACE_PLATFORM)
    assert (env.sched.get(running).state, env.sched.get(queued).state) == ("FAILED", "FAILED")
    assert env.leased("embedded") == []
