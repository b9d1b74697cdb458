"""``cargo-distbuild cas put|get|list|gc|verify``."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from distbuild.cas import local_cas
from distbuild.cas.digest import Digest
from distbuild.cas.store import LocalCAS
from distbuild.cli.render import console, human_size, print_json, print_table
from distbuild.config import Config, load_config


def local_store(cfg: Config) -> LocalCAS:
    return local_cas(cfg)


def store_for(cfg: Config) -> Any:
    """The scheduler's CAS when one is configured (put/get/list), else the local store."""
    if cfg.scheduler.addr:
        from distbuild.reapi.cas_client import RemoteCAS

        return RemoteCAS(cfg.scheduler.addr, cfg)
    return local_store(cfg)


def register(sub: Any) -> None:
    cas = sub.add_parser("cas", help="content-addressed store: put, get, list, gc, verify")
    cas_sub = cas.add_subparsers(dest="cas_command", metavar="CAS_COMMAND", required=True)

    p = cas_sub.add_parser("put", help="store a file; prints its digest (hash/size)")
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="print {'digest','hash','size'}")
    p.set_defaults(func=cmd_put)

    p = cas_sub.add_parser("get", help="write a blob to a file (verified against its digest)")
    p.add_argument("digest", help="hash/size, or a bare hash of a blob the store holds")
    p.add_argument("output")
    p.set_defaults(func=cmd_get)

    p = cas_sub.add_parser("list", help="list blobs, most recently used first")
    p.add_argument("--json", action="store_true")
    p.add_argument("--limit", type=int, default=0, help="show at most N blobs (0 = all)")
    p.set_defaults(func=cmd_list)

    p = cas_sub.add_parser("gc", help="evict least recently used blobs down to the size cap")
    p.add_argument("--max-size", help="cap to enforce instead of the configured one, e.g. 1GiB")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_gc)

    p = cas_sub.add_parser("verify", help="re-hash every blob; remove and report corrupt ones")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_verify)


def resolve_digest(store: Any, text: str) -> Digest:
    """Accept ``hash/size`` or a bare hash of a blob that is present in ``store``."""
    if "/" in text:
        return Digest.parse(text)
    if not isinstance(store, LocalCAS):
        for blob in store.list():
            if blob.digest.hash == text.lower():
                return blob.digest  # type: ignore[no-any-return]
        return Digest(text.lower(), 0)
    path = store.path_of(Digest(text.lower(), 0))
    return Digest(text.lower(), path.stat().st_size if path.exists() else 0)


def cmd_put(args: argparse.Namespace) -> int:
    store = store_for(load_config())
    digest = store.put_file(args.file)
    if args.json:
        print_json({"digest": str(digest), "hash": digest.hash, "size": digest.size})
    else:
        print(digest)
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    store = store_for(load_config())
    store.copy_to(resolve_digest(store, args.digest), args.output)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    store = store_for(load_config())
    blobs = sorted(store.list(), key=lambda b: -b.last_used)
    if args.limit:
        blobs = blobs[: args.limit]
    if args.json:
        print_json([{"digest": str(b.digest), "hash": b.digest.hash, "size": b.digest.size,
                     "last_used": b.last_used} for b in blobs])
        return 0
    print_table(
        f"{len(blobs)} blobs in {store.root}", ["hash", "size", "last used"],
        [(b.digest.hash, human_size(b.digest.size),
          dt.datetime.fromtimestamp(b.last_used).strftime("%Y-%m-%d %H:%M:%S")) for b in blobs],
    )
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    from distbuild.config import parse_size

    store = local_store(load_config())
    report = store.gc(parse_size(args.max_size) if args.max_size else None)
    if args.json:
        print_json(vars(report))
    else:
        console.print(f"removed {report.removed} blobs, freed {human_size(report.freed_bytes)}, "
                      f"{human_size(report.remaining_bytes)} remain")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    store = local_store(load_config())
    report = store.verify()
    if args.json:
        print_json({"checked": report.checked, "corrupt": report.corrupt})
    else:
        console.print(f"checked {report.checked} blobs, {len(report.corrupt)} corrupt (removed)")
        for d in report.corrupt:
            console.print(f"  [red]corrupt[/red] {d}")
    return 1 if report.corrupt else 0
