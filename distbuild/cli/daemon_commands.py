"""``cargo-distbuild master start|stop|status``: control of the local master daemon."""

from __future__ import annotations

import argparse
import os
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
    """Whether a master runs, and how it serves builds: each configuration it has loaded
    (mode, scheduler, config file), and whether this shell's is among them."""
    from distbuild.master.configs import describe, identity

    cfg = load_config()
    status = client.status(cfg)
    mine = identity(cfg.home, os.environ, os.getcwd())
    configs = status["configs"] if status else []
    if args.json:
        print_json({"running": status is not None, "pid": status["pid"] if status else None,
                    "socket": str(cfg.socket_path), "home": str(cfg.home),
                    "configs": configs, "this_shell": {"identity": mine, **describe(cfg)}})
        return 0 if status else 1
    if status is None:
        console.print("master not running")
        return 1
    console.print(f"master running (pid {status['pid']}) on {cfg.socket_path}")
    for c in configs:
        here = " [bold](this shell's)[/bold]" if c["identity"] == mine else ""
        console.print(f"  execution {c['execution']}, scheduler {c['scheduler']}; config "
                      f"{c['config_file']} ({c['identity']}){here}")
    if all(c["identity"] != mine for c in configs):
        console.print(f"  this shell's configuration ({describe(cfg)['execution']}) is loaded "
                      "by its first compile")
    return 0
