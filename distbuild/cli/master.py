"""``cargo-distbuild master ...``: the local agent (daemon) and, when a scheduler exists, jobs."""

from __future__ import annotations

from typing import Any


def register(sub: Any) -> None:
    master = sub.add_parser("master", help="the local master daemon and cluster job commands")
    master_sub = master.add_subparsers(dest="master_command", metavar="MASTER_COMMAND",
                                       required=True)
    # Daemon control commands are added by the core (distbuild/cli/daemon_commands.py);
    # cluster job commands (submit-job, job-status, list-jobs, list-workers) by
    # distbuild/cli/cluster.py. Each exposes add_commands(master_sub).
    for module in ("distbuild.cli.daemon_commands", "distbuild.cli.cluster"):
        try:
            mod = __import__(module, fromlist=["add_commands"])
        except ImportError:
            continue
        mod.add_commands(master_sub)
