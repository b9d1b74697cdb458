"""``cargo-distbuild build|check|test [--workspace-only] [--no-summary] [CARGO ARGS...]``.

Runs Cargo with the shim as RUSTC_WRAPPER (or RUSTC_WORKSPACE_WRAPPER with
``--workspace-only``), then prints what the cache did during this build.

Our own options are taken only when spelled exactly, before any ``--``; every other argument
reaches Cargo untouched and in order (argparse would take ``--workspace`` as an abbreviation
of ``--workspace-only``, and reorder or drop ``--``), so ``split_cargo_args`` sorts them before
argparse sees the command.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
import uuid
from typing import Any

from rich.table import Table

from distbuild.cli.render import err_console
from distbuild.config import config_path, load_config
from distbuild.errors import Unavailable
from distbuild.master import client
from distbuild.master.shim import install_shim
from distbuild.master.stats import BUILD_ID_VAR, empty_counters, with_shim_fallbacks
from distbuild.rustc.paths import c_prefix_map_flags, default_cargo_home

CARGO_COMMANDS = ("build", "check", "test")
OWN_OPTIONS = frozenset({"--workspace-only", "--no-summary", "-h", "--help"})


def split_cargo_args(args: list[str]) -> tuple[list[str], list[str]]:
    """(our options, Cargo's arguments) of what follows ``build|check|test``.

    Ours are the exact spellings in ``OWN_OPTIONS`` before a ``--``; everything else, ``--``
    and all after it included, is Cargo's, in its original order.
    """
    ours: list[str] = []
    cargo: list[str] = []
    for i, arg in enumerate(args):
        if arg == "--":
            cargo.extend(args[i:])
            break
        (ours if arg in OWN_OPTIONS else cargo).append(arg)
    return ours, cargo


def register(sub: Any) -> None:
    for name in CARGO_COMMANDS:
        p = sub.add_parser(
            name, help=f"cargo {name} through the cache (extra arguments go to cargo)",
            description=f"Run `cargo {name} ARGS...` with every rustc invocation going through "
            "cargo-distbuild, then print a summary. Every argument but the options below "
            "(spelled exactly, before any --) is passed to cargo unchanged.",
            allow_abbrev=False,
        )
        p.add_argument("--workspace-only", action="store_true",
                       help="wrap only workspace members (RUSTC_WORKSPACE_WRAPPER)")
        p.add_argument("--no-summary", action="store_true", help="do not print the summary")
        p.set_defaults(func=cmd_cargo, cargo_command=name)


def cmd_cargo(args: argparse.Namespace) -> int:
    cfg = load_config()
    shim = install_shim(cfg)
    env = dict(os.environ)
    metadata = start_metadata(env)  # runs while the master starts
    try:
        client.ensure_running(cfg)
    except Unavailable as e:
        err_console.print(f"[yellow]warning:[/yellow] {e}; every rustc falls back to itself")
    add_c_prefix_maps(env, metadata)
    var = "RUSTC_WORKSPACE_WRAPPER" if args.workspace_only else "RUSTC_WRAPPER"
    env[var] = str(shim)
    env["DISTBUILD_HOME"] = str(cfg.home)
    if env.get("DISTBUILD_CONFIG"):  # rustc runs in many directories: never relative
        env["DISTBUILD_CONFIG"] = str(config_path(cfg.home))
    # The shim reads no config file (it must start fast): hand it master.request_timeout.
    env.setdefault("DISTBUILD_REQUEST_TIMEOUT", str(cfg.master.request_timeout))
    # Every request of this build carries its id, so the summary counts this build's
    # compilations only, however many builds share the master (distbuild/master/stats.py).
    build_id = uuid.uuid4().hex
    env[BUILD_ID_VAR] = build_id
    shim_fallbacks = cfg.home / "builds" / f"{build_id}.fallbacks"
    shim_fallbacks.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    try:
        code = subprocess.call(["cargo", args.cargo_command, *args.extra], env=env)
        elapsed = time.monotonic() - start
        if not args.no_summary:
            try:
                counters = client.build_stats(cfg, build_id)
            except Unavailable:  # no master: only the shim's fallbacks are known
                counters = with_shim_fallbacks(empty_counters(), shim_fallbacks)
            print_summary(counters, elapsed)
    finally:
        shim_fallbacks.unlink(missing_ok=True)
    return code


def start_metadata(env: dict[str, str]) -> subprocess.Popen[bytes] | None:
    """``cargo metadata`` for the workspace's roots, started in the background."""
    try:
        return subprocess.Popen(
            ["cargo", "metadata", "--format-version", "1", "--no-deps", "--offline"],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL)
    except OSError:
        return None


def add_c_prefix_maps(env: dict[str, str], metadata: subprocess.Popen[bytes] | None) -> None:
    """Append ``-ffile-prefix-map`` flags to CFLAGS and CXXFLAGS.

    Build scripts compile C code themselves (the cc crate honours CFLAGS); with debug info the
    objects embed the checkout path, so the static library a -sys crate links would differ per
    checkout and it, and everything depending on it, would miss in another directory.
    """
    if metadata is None:
        return
    try:
        out, _ = metadata.communicate(timeout=60)
        if metadata.returncode != 0:
            return  # not in a Cargo project (cargo itself will say so)
        meta = json.loads(out)
    except (subprocess.SubprocessError, ValueError):
        metadata.kill()
        metadata.wait()
        return
    flags = c_prefix_map_flags(meta["workspace_root"], meta["target_directory"],
                               default_cargo_home(env))
    for var in ("CFLAGS", "CXXFLAGS"):
        env[var] = f"{env[var]} {flags}" if env.get(var) else flags


def print_summary(d: dict[str, Any], elapsed: float) -> None:
    """What the cache did for one build (``d``: that build's counters)."""
    table = Table(title=f"cargo-distbuild: {elapsed:.1f} s", title_justify="left",
                  show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(justify="right")
    hits = d["cache_hits"]
    total = d["compile_requests"]
    rate = f" ({100 * hits / total:.0f}%)" if total else ""
    table.add_row("compilations", str(total))
    table.add_row("cache hits", f"[green]{hits}[/green]{rate}")
    table.add_row("cache misses", str(d["cache_misses"]))
    table.add_row("executed locally / remotely", f"{d['executed_local']} / {d['executed_remote']}")
    table.add_row("fallbacks", f"[yellow]{d['fallbacks']}[/yellow]" if d["fallbacks"] else "0")
    for title, table_name in (("fallback", "fallback_reasons"), ("not cacheable", "not_cacheable"),
                              ("not stored", "not_stored")):
        for reason, n in sorted(d.get(table_name, {}).items()):
            table.add_row(f"{title} ({reason})", str(n))
    table.add_row("time saved", f"{float(d['time_saved_s']):.1f} s")
    err_console.print(table)
