"""``cargo-distbuild master start|stop|status``: control of the local master daemon."""

from __future__ import annotations

import argparse
from typing import Any

from distbuild.cli.render import console, print_json
from distbuild.config import load_config
from distbuild.master import client


def add_commands(master_sub: Any) -> None:
    p = master_sub.add_parser("start", help="start the local master daemon (if not running)")
    p.set_defaults(func=cmd_start)
    p = master_sub.add_parser("stop", help="stop the local master daemon")
    p.set_defaults(func=cmd_stop)
    p = master_sub.add_parser("status", help="is the local master running?")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)


def cmd_start(args: argparse.Namespace) -> int:
    cfg = load_config()
    pid = client.ensure_running(cfg)
    console.print(f"master running (pid {pid}) on {cfg.socket_path}")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    cfg = load_config()
    console.print("master stopped" if client.stop(cfg) else "no master was running")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    cfg = load_config()
    pid = client.ping(cfg)
    if args.json:
        print_json({"running": pid is not None, "pid": pid, "socket": str(cfg.socket_path),
                    "home": str(cfg.home)})
    else:
        console.print(f"master running (pid {pid})" if pid else "master not running")
    return 0 if pid else 1
