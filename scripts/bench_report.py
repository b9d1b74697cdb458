"""Output of scripts/bench: the JSON report, the rich table and the PNG chart."""

from __future__ import annotations

import datetime as dt
import math
import re
from pathlib import Path
from typing import Any

from bench_measure import median

# Which plain-cargo and which sccache scenario each kind of build is compared with.
CARGO_REF = {"touch": "cargo-touch", "edit": "cargo-edit"}
SCCACHE_REF = {
    "cold": "sccache-cold",
    "record": "sccache-cold",
    "clean": "sccache-cold",
    "touch": "sccache-touch",
    "edit": "sccache-edit",
}
TOOL_COLORS = {
    "cargo": "#7f7f7f",
    "floor": "#2ca02c",
    "sccache": "#ff7f0e",
    "distbuild": "#1f77b4",
    "distbuild-direct": "#6baed6",
    "distbuild-sandboxed": "#17becf",
    "distributed": "#9467bd",
}

TARGETS = (
    ("warm_vs_sccache_warm", "warm after cargo clean <= 0.5x sccache warm, every compile a hit"),
    ("other_path_vs_warm", "warm from another path ~= warm (<= 1.10x)"),
    ("cold_vs_cargo", "cold <= 1.10x plain cargo"),
    ("hit_overhead_p50", "hit overhead p50 <= 15 ms per rustc invocation"),
)


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(x, nd)


def hit_split(path: dict[str, Any]) -> str:
    """Where a hit's p50 goes, for an interpreted or a compiled shim."""
    rest = f"rest (master round trip + restore) {path.get('rest_of_hit_ms')} ms"
    if "interpreter_start_ms" not in path:
        return f"process spawn {path.get('spawn_true_ms')} ms, compiled shim; {rest}"
    return (f"process spawn {path.get('spawn_true_ms')} ms, interpreter start "
            f"{path.get('interpreter_start_ms')} ms, shim import {path.get('shim_import_ms')} "
            f"ms, {rest}")


def to_json(bench: Any, args: Any, host: dict[str, Any], started: dt.datetime) -> dict[str, Any]:
    by_id = {s.id: s for s in bench.scenarios if s.status == "ok" and s.samples}
    scenarios = []
    for s in bench.scenarios:
        row: dict[str, Any] = {
            "id": s.id,
            "tool": s.tool,
            "kind": s.kind,
            "label": s.label,
            "status": s.status,
            "reason": s.reason,
        }
        if s.samples:
            walls = [x.wall_s for x in s.samples]
            row.update(
                {
                    "wall_s": _r(s.wall_s),
                    "wall_min_s": _r(min(walls)),
                    "wall_max_s": _r(max(walls)),
                    "cpu_s": _r(s.cpu_s),
                    "compile_requests": s.stat("compile_requests"),
                    "cache_hits": s.stat("cache_hits"),
                    "cache_misses": s.stat("cache_misses"),
                    "fallbacks": s.stat("fallbacks"),
                    "executed_remote": s.stat("executed_remote"),
                    "not_cacheable": s.not_cacheable(),
                    "loadavg_1m": _r(median([x.loadavg_1m for x in s.samples]), 2),
                    "runs": [x.to_json() for x in s.samples],
                }
            )
            c = by_id.get(CARGO_REF.get(s.kind, "cargo-clean"))
            sc = by_id.get(SCCACHE_REF.get(s.kind, "sccache-warm"))
            row["ratio_cargo"] = _r(s.wall_s / c.wall_s) if c else None
            row["ratio_sccache"] = _r(s.wall_s / sc.wall_s) if sc else None
        scenarios.append(row)
    report = {
        "version": 1,
        "started": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "workspace": {
            "name": bench.name,
            "source": str(Path(args.workspace).resolve()),
            "edited_member_file": str(bench.member_file.relative_to(bench.ws_a)),
        },
        "config": {
            "runs": args.runs,
            "cold_runs": args.cold_runs,
            "quick": args.quick,
            "micro_n": args.micro_n,
            "tools": args.tools,
        },
        "host": host,
        "scenarios": scenarios,
        "micro": bench.micro,
    }
    report["targets"] = evaluate_targets(report)
    return report


def evaluate_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets for each cargo-distbuild variant that ran (default first)."""
    out: list[dict[str, Any]] = []
    for variant in ("distbuild", "distbuild-direct"):
        if any(s["tool"] == variant for s in report["scenarios"]):
            out += _targets_of(report, variant)
    return out


def _targets_of(report: dict[str, Any], v: str) -> list[dict[str, Any]]:
    every = {s["id"]: s for s in report["scenarios"]}
    sc = {k: s for k, s in every.items() if s["status"] == "ok" and "wall_s" in s}
    prefix = "" if v == "distbuild" else "[execution=direct] "
    out = []
    broken = next((s for s in every.values() if s["tool"] == v and s["status"] == "failed"), None)

    def add(key: str, measured: str | None, ok: bool | None) -> None:
        if measured is None and broken is not None:
            first = (broken["reason"] or "").splitlines()
            reason = first[1] if len(first) > 1 else (first[0] if first else "?")
            measured, ok = f"{broken['id']} failed: {reason[:160]}", False
        out.append(
            {
                "id": key + ("" if v == "distbuild" else "[direct]"),
                "target": prefix + dict(TARGETS)[key],
                "measured": measured,
                "met": ok,
            }
        )

    # Compilations that fail (build-script probes of nightly features) are never cached, so
    # they "miss" on every build; the capture build counts them.
    caps = (report.get("micro") or {}).get("captured_invocations") or {}
    cap = caps.get(v) or caps.get("floor") or {}
    failing = len(cap.get("failed") or [])

    def misses_note(s: dict[str, Any]) -> tuple[int | None, str]:
        m = s.get("cache_misses")
        if m is None:
            return None, "misses ?"
        if m and not caps:
            return None, f"misses {m} (failing probes not told apart: no micro-benchmarks)"
        if failing and m >= failing:
            return m - failing, f"misses {m} ({failing} of them failing probes, never cached)"
        return m, f"misses {m}"

    w, sw = sc.get(f"{v}-warm"), sc.get("sccache-warm")
    if w and sw:
        ratio = w["wall_s"] / sw["wall_s"]
        real, note = misses_note(w)
        all_hits = real == 0 and not w.get("not_cacheable") and not w.get("fallbacks")
        add(
            "warm_vs_sccache_warm",
            f"{w['wall_s']:.2f}s vs {sw['wall_s']:.2f}s = {ratio:.2f}x; hits {w.get('cache_hits')}"
            f", {note}, not cacheable {w.get('not_cacheable') or 0}",
            None if real is None else ratio <= 0.5 and all_hits,
        )
    else:
        add("warm_vs_sccache_warm", None, None)
    o = sc.get(f"{v}-other-path")
    if o and w:
        ratio = o["wall_s"] / w["wall_s"]
        real, note = misses_note(o)
        add(
            "other_path_vs_warm",
            f"{o['wall_s']:.2f}s vs {w['wall_s']:.2f}s = {ratio:.2f}x; {note}",
            None if real is None else ratio <= 1.10 and real == 0,
        )
    else:
        add("other_path_vs_warm", None, None)
    c, pc = sc.get(f"{v}-cold"), sc.get("cargo-clean")
    if c and pc:
        ratio = c["wall_s"] / pc["wall_s"]
        add(
            "cold_vs_cargo",
            f"{c['wall_s']:.2f}s vs {pc['wall_s']:.2f}s = {ratio:.2f}x",
            ratio <= 1.10,
        )
    else:
        add("cold_vs_cargo", None, None)
    hit = (report.get("micro") or {}).get("hit_overhead", {}).get(v) or {}
    if hit.get("p50_ms") is not None:
        add(
            "hit_overhead_p50",
            f"p50 {hit['p50_ms']} ms, p99 {hit['p99_ms']} ms",
            hit["p50_ms"] <= 15,
        )
    else:
        add("hit_overhead_p50", None, None)
    return out


def cold_rounds(report: dict[str, Any]) -> list[str]:
    """Each cold scenario against plain cargo's build from clean *in the same round*: tools
    take turns within a round, so these ratios cancel most of the machine's drift."""
    by_id = {s["id"]: s for s in report["scenarios"] if s["status"] == "ok"}
    base = [r["wall_s"] for r in (by_id.get("cargo-clean") or {}).get("runs", [])]
    lines = []
    for sid, s in by_id.items():
        walls = [r["wall_s"] for r in s.get("runs", [])]
        if not sid.endswith("-cold") or len(base) < 2 or len(walls) != len(base):
            continue
        ratios = [w / b for w, b in zip(walls, base, strict=True)]
        lines.append(f"{sid} x cargo-clean, round by round: "
                     + " ".join(f"{x:.2f}" for x in ratios)
                     + f" (median {median(ratios):.2f})")
    return lines


def _fmt(x: Any, unit: str = "", nd: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}{unit}"
    return f"{x}{unit}"


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(width=160)
    t = Table(
        title=f"cargo-distbuild benchmark: workspace {report['workspace']['name']} "
        f"({report['host']['cpus']} CPUs, runs {report['config']['runs']})"
    )
    for col, just in (
        ("scenario", "left"),
        ("wall s (median)", "right"),
        ("min-max", "right"),
        ("cpu s", "right"),
        ("hits", "right"),
        ("misses", "right"),
        ("not cacheable", "left"),
        ("x cargo", "right"),
        ("x sccache", "right"),
        ("load", "right"),
    ):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for s in report["scenarios"]:
        if s["status"] != "ok":
            t.add_row(
                s["id"],
                f"[yellow]{s['status']}[/]",
                "",
                "",
                "",
                "",
                (s["reason"] or "")[:60],
                "",
                "",
                "",
            )
            continue
        nc = ", ".join(f"{k} {v}" for k, v in (s.get("not_cacheable") or {}).items())
        t.add_row(
            s["id"],
            _fmt(s["wall_s"]),
            f"{s['wall_min_s']:.2f}-{s['wall_max_s']:.2f}",
            _fmt(s["cpu_s"]),
            _fmt(s.get("cache_hits")),
            _fmt(s.get("cache_misses")),
            nc[:40],
            _fmt(s.get("ratio_cargo")),
            _fmt(s.get("ratio_sccache")),
            _fmt(s.get("loadavg_1m"), nd=1),
        )
    console.print(t)
    micro = report.get("micro") or {}
    if micro.get("hit_overhead"):
        m = Table(title="per-invocation hit (wrapper process, interpreter start included)")
        for col in (
            "tool",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "invocations",
            "samples",
            "hits",
            "p50 hits only",
            "wrapper cpu ms",
            "daemon cpu ms",
        ):
            m.add_column(col)
        for tool, h in micro["hit_overhead"].items():
            if "error" in h:
                m.add_row(tool, f"[red]{h['error'][:60]}[/]", "", "", "", "", "", "", "", "")
                continue
            only = h.get("hits_only") or {}
            m.add_row(
                tool,
                _fmt(h["p50_ms"]),
                _fmt(h["p90_ms"]),
                _fmt(h["p99_ms"]),
                str(h["invocations"]),
                str(h["n"]),
                _fmt(h["stats"].get("cache_hits")),
                _fmt(only.get("p50_ms")) + (f" ({only['invocations']} inv.)" if only else ""),
                _fmt(h.get("wrapper_cpu_ms_per_call")),
                _fmt(h.get("daemon_cpu_ms_per_call")),
            )
        console.print(m)
    miss = micro.get("miss_overhead") or {}
    for tool in ("sccache", "distbuild", "distbuild-direct"):
        if tool in miss:
            x = miss[tool]
            console.print(
                f"miss overhead {tool}: median {x['median_overhead_ms']} ms per "
                f"compilation ({x['median_ratio']}x rustc direct) over "
                f"{x['compilations']} compilations"
            )
    for variant, path in (micro.get("hit_path") or {}).items():
        console.print(f"hit path {variant}: {hit_split(path)}", markup=False)
        prof = path.get("profile") or {}
        if prof.get("top_inclusive"):
            console.print(
                f"master profile {variant} (inclusive % of busy samples): "
                + "; ".join(f"{f} {p}%" for f, p in prof["top_inclusive"][:8])
            )
    for line in cold_rounds(report):
        console.print(line)
    tt = Table(title="targets")
    for col in ("target", "measured", "met"):
        tt.add_column(col)
    for x in report["targets"]:
        met = {True: "[green]yes[/]", False: "[red]no[/]", None: "[yellow]n/a[/]"}[x["met"]]
        tt.add_row(escape(x["target"]), escape(x["measured"] or "not measured"), met)
    console.print(tt)


def markdown_summary(report: dict[str, Any]) -> str:
    """The figures as Markdown tables (pasted into docs/benchmarks.md after a full run)."""
    h = report["host"]
    lines = [
        f"Workspace `{report['workspace']['name']}`, {h['cpus']} CPUs, {h['rustc']}, sccache "
        f"{h['sccache'].split()[-1]}, commit {h['distbuild_commit']}, {report['finished']}; "
        f"runs {report['config']['runs']} (warm), {report['config']['cold_runs']} (cold).",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    for t in report["targets"]:
        met = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
        measured = re.sub(r"/\S*?/registry/src/[^/]+/", ".../", t["measured"] or "not measured")
        lines.append(f"| {t['target']} | {measured} | {met} |")
    lines += [
        "",
        "| scenario | wall s (median) | min-max | CPU s | hits | misses | x cargo | x sccache "
        "| load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in report["scenarios"]:
        if s["status"] != "ok":
            lines.append(
                f"| {s['id']} | {s['status']}: {(s['reason'] or '').splitlines()[0][:80]}"
                " | | | | | | | |"
            )
            continue
        lines.append(
            f"| {s['id']} | {s['wall_s']:.2f} | {s['wall_min_s']:.2f}-{s['wall_max_s']:.2f} | "
            f"{s['cpu_s']:.2f} | {_fmt(s.get('cache_hits'))} | {_fmt(s.get('cache_misses'))} | "
            f"{_fmt(s.get('ratio_cargo'))} | {_fmt(s.get('ratio_sccache'))} | "
            f"{_fmt(s.get('loadavg_1m'), nd=1)} |"
        )
    rounds = cold_rounds(report)
    if rounds:
        lines += ["", *(f"{line}." for line in rounds)]
    micro = report.get("micro") or {}
    hits = micro.get("hit_overhead") or {}
    if hits:
        lines += [
            "",
            "| one cached compile (hit) | p50 ms | p90 ms | p99 ms | wrapper CPU ms "
            "| daemon CPU ms | fixed ms + ms/MB |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for tool, x in hits.items():
            if "p50_ms" not in x:
                continue
            src = x.get("hits_only") if x.get("hits_only", {}).get("p50_ms") else x
            fit = x.get("fit_vs_output_size") or {}
            label = tool + (" (hits only)" if src is not x else "")
            lines.append(
                f"| {label} | {src['p50_ms']} | {src['p90_ms']} | {src['p99_ms']} | "
                f"{x.get('wrapper_cpu_ms_per_call')} | {x.get('daemon_cpu_ms_per_call')} | "
                f"{fit.get('fixed_ms', '-')} + {fit.get('ms_per_mb', '-')}/MB |"
            )
    miss = micro.get("miss_overhead") or {}
    for tool in ("sccache", "distbuild", "distbuild-direct"):
        if tool in miss:
            x = miss[tool]
            lines.append("")
            lines.append(
                f"Miss overhead {tool}: +{x['median_overhead_ms']} ms per compilation, "
                f"{x['median_ratio']}x rustc run directly (median over {x['compilations']} "
                "library compilations)."
            )
    for variant, path in (micro.get("hit_path") or {}).items():
        lines.append("")
        lines.append(f"Hit path of {variant} (p50): {hit_split(path)}.")
        prof = path.get("profile") or {}
        if prof.get("top_own"):
            lines.append(
                f"Master profile ({variant}), own time (% of busy samples): "
                + ", ".join(f"`{f}` {p}%" for f, p in prof["top_own"][:6])
                + "."
            )
    return "\n".join(lines) + "\n"
