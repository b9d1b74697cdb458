"""``cargo-distbuild worker run``, ``worker join`` (a REAPI farm's bot) and ``workers list``."""

from __future__ import annotations

import argparse
import signal
import threading
import time
from typing import Any

from distbuild.cli.render import print_json, print_table
from distbuild.cli.scheduler import scheduler_addr
from distbuild.config import load_config
from distbuild.executors import KINDS


def register(sub: Any) -> None:
    worker = sub.add_parser("worker", help="run a worker that executes the scheduler's jobs")
    w_sub = worker.add_subparsers(dest="worker_command", metavar="WORKER_COMMAND", required=True)
    p = w_sub.add_parser("run", help="register with the scheduler and execute jobs (foreground)")
    p.add_argument("--id", required=True, help="worker id, unique in the cluster")
    p.add_argument("--port", type=int, default=0, help="port of its status service (0 = any)")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on and address to advertise (default 127.0.0.1)")
    p.add_argument("--scheduler", default="", help="host:port (default: [scheduler] addr)")
    p.add_argument("--capacity", type=int, default=0,
                   help="concurrent jobs (default: [worker] capacity, 0 = CPUs)")
    p.add_argument("--executor", choices=KINDS, action="append", default=None,
                   help="executor kind; repeat to offer several (default: [worker] executor)")
    p.add_argument("--toolchain", action="append", default=None, metavar="RUSTC",
                   help="rustc binaries to advertise (repeatable; default: rustc on PATH)")
    p.set_defaults(func=cmd_run)

    p = w_sub.add_parser(
        "join", help="join an existing REAPI farm (BuildGrid) as one of its bots",
        description="Open a bot session on a farm's Remote Workers API (Bots service) and run "
                    "the leases it hands out with this worker's executors, against the farm's "
                    "CAS and digest function. See docs/reapi.md.")
    p.add_argument("--farm", required=True, metavar="HOST:PORT",
                   help="the farm's Bots endpoint (BuildGrid: its server address)")
    p.add_argument("--instance", default="", help="the farm's instance name (default: '')")
    p.add_argument("--id", default="",
                   help="bot id, unique in the farm (default: HOSTNAME-distbuild)")
    p.add_argument("--capacity", type=int, default=0,
                   help="concurrent leases (default: [worker] capacity, 0 = CPUs)")
    p.add_argument("--executor", choices=KINDS, action="append", default=None,
                   help="executor kind; repeat to offer several (default: [worker] executor)")
    p.add_argument("--toolchain", action="append", default=None, metavar="RUSTC",
                   help="rustc binaries to advertise (repeatable; default: rustc on PATH)")
    p.set_defaults(func=cmd_join)

    workers = sub.add_parser("workers", help="list the cluster's workers")
    ws_sub = workers.add_subparsers(dest="workers_command", metavar="WORKERS_COMMAND",
                                    required=True)
    p = ws_sub.add_parser("list", help="workers known to the scheduler")
    p.add_argument("--scheduler", default="", help="host:port (default: [scheduler] addr)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)


def cmd_run(args: argparse.Namespace) -> int:
    from distbuild.worker.agent import Worker

    cfg = load_config()
    worker = Worker(cfg, args.id, scheduler_addr(cfg, args.scheduler), port=args.port,
                    capacity=args.capacity, executor=",".join(args.executor or ()), host=args.host,
                    toolchains=tuple(args.toolchain or ("rustc",)))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    worker.start()
    print(f"worker {args.id} serving on {worker.address}, {worker.capacity} slots, "
          f"executor {worker.kind}", flush=True)
    stop.wait()
    worker.stop()
    return 0


def cmd_join(args: argparse.Namespace) -> int:
    from distbuild.worker.bot import FarmBot

    cfg = load_config()
    bot = FarmBot(cfg, args.id, args.farm, instance=args.instance, capacity=args.capacity,
                  executor=",".join(args.executor or ()),
                  toolchains=tuple(args.toolchain or ("rustc",)))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    bot.start()
    print(f"bot {bot.bot_id} joined {args.farm} (instance {args.instance!r}, {bot.function}), "
          f"{bot.capacity} slots, platform "
          + " ".join(f"{k}={v}" for k, v in bot.platform), flush=True)
    stop.wait()
    bot.stop()
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from distbuild.scheduler.client import SchedulerClient

    cfg = load_config()
    with SchedulerClient(scheduler_addr(cfg, args.scheduler), cfg) as client:
        workers = client.list_workers()
    if args.json:
        print_json([workers_row(w) for w in workers])
    else:
        render_workers(workers)
    return 0


def workers_row(w: Any) -> dict[str, Any]:
    return {"worker_id": w.worker_id, "address": w.address, "state": w.state,
            "capacity": w.capacity, "running": w.running, "completed": w.completed,
            "last_heartbeat": w.last_heartbeat, "platform": dict(w.platform)}


def render_workers(workers: list[Any]) -> None:
    now = time.time()
    print_table(f"{len(workers)} workers", ["id", "state", "address", "slots", "completed",
                                            "last heartbeat", "platform"],
                [(w.worker_id, w.state, w.address, f"{w.running}/{w.capacity}", w.completed,
                  f"{now - w.last_heartbeat:.1f} s ago" if w.last_heartbeat else "-",
                  " ".join(f"{k}={v}" for k, v in w.platform)) for w in workers])
