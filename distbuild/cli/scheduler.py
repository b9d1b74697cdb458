"""``cargo-distbuild scheduler run|status``: the cluster's scheduler (also its CAS)."""

from __future__ import annotations

import argparse
import datetime as dt
import signal
import threading
from pathlib import Path
from typing import Any

from distbuild.cli.render import human_size, print_json, print_table
from distbuild.config import Config, load_config
from distbuild.errors import ConfigError

DEFAULT_ADDR = "0.0.0.0:7070"


def register(sub: Any) -> None:
    sched = sub.add_parser("scheduler", help="run or query a cluster scheduler")
    s_sub = sched.add_subparsers(dest="scheduler_command", metavar="SCHEDULER_COMMAND",
                                 required=True)
    p = s_sub.add_parser("run", help="serve the scheduler, CAS and action cache (foreground)")
    p.add_argument("--addr", default="",
                   help=f"host:port to listen on (default: [scheduler] addr, else {DEFAULT_ADDR})")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="state database, CAS and action cache (default: $DISTBUILD_HOME/scheduler)")
    p.set_defaults(func=cmd_run)
    p = s_sub.add_parser("status", help="queue, workers and CAS of the configured scheduler")
    p.add_argument("--scheduler", default="", help="host:port (default: [scheduler] addr)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)


def scheduler_addr(cfg: Config, override: str = "") -> str:
    addr = override or cfg.scheduler.addr
    if not addr:
        raise ConfigError("no scheduler configured: set [scheduler] addr in config.toml, "
                          "DISTBUILD_SCHEDULER=host:port, or pass --scheduler")
    return addr


def cmd_run(args: argparse.Namespace) -> int:
    from distbuild.scheduler.service import SchedulerServer

    cfg = load_config()
    server = SchedulerServer(cfg, args.addr or cfg.scheduler.addr or DEFAULT_ADDR,
                             args.data_dir).start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"scheduler listening on {server.addr} (data in {server.data_dir})", flush=True)
    stop.wait()
    server.stop()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from distbuild.scheduler.client import SchedulerClient

    cfg = load_config()
    addr = scheduler_addr(cfg, args.scheduler)
    with SchedulerClient(addr, cfg) as client:
        status = client.status()
    status["addr"] = addr
    if args.json:
        print_json(status)
    else:
        render_status(status)
    return 0


def render_status(status: dict[str, Any]) -> None:
    rows = [(k.replace("_", " "), human_size(v) if k == "cas_bytes" else
             f"{v:.0f} s" if k == "uptime_seconds" else v) for k, v in status.items()]
    print_table(f"scheduler {status.get('addr', '')}", ["", "value"], rows)


def fmt_time(t: float) -> str:
    return dt.datetime.fromtimestamp(t).strftime("%H:%M:%S") if t else "-"


