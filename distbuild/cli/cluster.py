"""``cargo-distbuild master submit-job|job-status|list-jobs|list-workers``: cluster jobs."""

from __future__ import annotations

import argparse
from typing import Any

from distbuild.cas.digest import Digest
from distbuild.cli.render import console, print_json, print_table
from distbuild.cli.scheduler import fmt_time, scheduler_addr
from distbuild.cli.worker import cmd_list as cmd_list_workers
from distbuild.config import load_config


def add_commands(master_sub: Any) -> None:
    p = master_sub.add_parser("submit-job", help="run an action already in the scheduler's CAS")
    p.add_argument("action_digest", help="hash/size of the encoded Action")
    p.add_argument("--wait", action="store_true", help="follow the job to its end")
    p.add_argument("--skip-cache", action="store_true", help="do not answer from the cache")
    p.add_argument("--scheduler", default="", help="host:port (default: [scheduler] addr)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_submit)

    p = master_sub.add_parser("job-status", help="one job's state and result")
    p.add_argument("job_id")
    p.add_argument("--scheduler", default="")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = master_sub.add_parser("list-jobs", help="the scheduler's jobs, newest first")
    p.add_argument("--state", action="append", default=[],
                   choices=("QUEUED", "RUNNING", "COMPLETED", "FAILED", "CANCELLED"))
    p.add_argument("--limit", type=int, default=50, help="at most N jobs (0 = all)")
    p.add_argument("--scheduler", default="")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list_jobs)

    p = master_sub.add_parser("list-workers", help="the scheduler's workers")
    p.add_argument("--scheduler", default="")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list_workers)  # the same command as `workers list`


def _client(args: argparse.Namespace) -> Any:
    from distbuild.scheduler.client import SchedulerClient

    cfg = load_config()
    return SchedulerClient(scheduler_addr(cfg, args.scheduler), cfg)


def job_row(job: Any) -> dict[str, Any]:
    result = job.result
    return {
        "job_id": job.job_id, "action_digest": str(job.action_digest), "state": job.state,
        "client_id": job.client_id, "worker_id": job.worker_id, "attempts": job.attempts,
        "submitted_at": job.submitted_at, "started_at": job.started_at,
        "completed_at": job.completed_at, "cached": job.cached, "error": job.error,
        "error_kind": job.error_kind, "digest_function": str(job.digest_function),
        "exit_code": result.exit_code if result else None,
        "outputs": {o.path: str(o.digest) for o in result.output_files} if result else {},
        "stdout_digest": str(result.stdout_digest) if result and result.stdout_digest else None,
        "stderr_digest": str(result.stderr_digest) if result and result.stderr_digest else None,
    }


def render_jobs(jobs: list[Any]) -> None:
    print_table(f"{len(jobs)} jobs", ["id", "state", "client", "worker", "tries", "submitted",
                                      "took", "exit"],
                [(j.job_id, j.state + (" (cached)" if j.cached else ""), j.client_id,
                  j.worker_id or "-", j.attempts, fmt_time(j.submitted_at),
                  f"{j.completed_at - j.submitted_at:.2f} s" if j.completed_at else "-",
                  j.result.exit_code if j.result else (j.error_kind or j.error[:40] or "-"))
                 for j in jobs])


def render_job(job: Any) -> None:
    row = job_row(job)
    print_table(f"job {job.job_id}", ["", "value"],
                [(k, v) for k, v in row.items() if v not in (None, "", {})])


def cmd_submit(args: argparse.Namespace) -> int:
    digest = Digest.parse(args.action_digest)
    with _client(args) as client:
        job = client.submit(digest, skip_cache=args.skip_cache)
        if args.wait:
            job = client.wait(job.job_id)
    if args.json:
        print_json(job_row(job))
    else:
        console.print(f"job {job.job_id}: {job.state}")
    return 0 if job.state in ("QUEUED", "RUNNING") or (
        job.state == "COMPLETED" and job.result is not None and job.result.exit_code == 0) else 1


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.get_job(args.job_id)
    if args.json:
        print_json(job_row(job))
    else:
        render_job(job)
    return 0


def cmd_list_jobs(args: argparse.Namespace) -> int:
    with _client(args) as client:
        jobs = client.list_jobs(tuple(args.state), args.limit)
    if args.json:
        print_json([job_row(j) for j in jobs])
    else:
        render_jobs(jobs)
    return 0


__all__ = ["add_commands", "job_row", "render_job", "render_jobs"]
