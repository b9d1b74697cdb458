"""``cargo-distbuild stats [--json] [--zero]``."""

from __future__ import annotations

import argparse
from typing import Any

from distbuild.cli.render import print_json, print_table
from distbuild.config import load_config
from distbuild.errors import Unavailable
from distbuild.master import client
from distbuild.master.stats import read_stats


def register(sub: Any) -> None:
    p = sub.add_parser("stats", help="cache statistics (hits, misses, fallbacks, ...)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--zero", action="store_true", help="reset all counters")
    p.set_defaults(func=cmd_stats)


def current_stats() -> dict[str, Any]:
    cfg = load_config()
    try:
        return client.stats(cfg)
    except Unavailable:
        return read_stats(cfg.home)


def cmd_stats(args: argparse.Namespace) -> int:
    cfg = load_config()
    if args.zero:
        try:
            client.zero_stats(cfg)
        except Unavailable:
            cfg.home.mkdir(parents=True, exist_ok=True)
            from distbuild.master.stats import Stats

            Stats(cfg.home).zero()
        if not args.json:
            print("statistics reset")
            return 0
    data = current_stats()
    if args.json:
        print_json(data)
        return 0
    rows = [(k, data[k]) for k in ("compile_requests", "cache_hits", "cache_misses",
                                   "executed_local", "executed_remote", "fallbacks",
                                   "passthrough", "corrupt_blobs")]
    rows.append(("time_saved_s", f"{data['time_saved_s']:.1f}"))
    for title, table in (("fallback", "fallback_reasons"), ("not cacheable", "not_cacheable"),
                         ("not stored", "not_stored")):
        rows += [(f"{title}: {k}", v) for k, v in sorted(data.get(table, {}).items())]
    print_table(f"cargo-distbuild statistics ({cfg.home})", ["counter", "value"], rows)
    return 0
