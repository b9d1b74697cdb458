"""The PNG chart of scripts/bench: wall time per scenario and the cost of one cached compile."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bench_report import TOOL_COLORS


def write_chart(report: dict[str, Any], path: Path) -> Path | None:
    """Bar chart of the scenarios' wall times and the per-invocation hit cost."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    # Failed scenarios stay in the chart (an empty bar and the reason): a build that breaks is
    # the most important thing to see.
    rows = [
        s
        for s in report["scenarios"]
        if (s["status"] == "ok" and "wall_s" in s) or s["status"] == "failed"
    ]
    # The hit panel shows hits only (sccache refuses some invocations; those are no hit).
    hits = {
        k: v.get("hits_only") or v
        for k, v in (report.get("micro") or {}).get("hit_overhead", {}).items()
        if "p50_ms" in v and (v.get("hits_only") or v).get("p50_ms") is not None
    }
    fig, axes = plt.subplots(
        1, 2, figsize=(15, max(5.5, 0.42 * len(rows) + 1.8)), gridspec_kw={"width_ratios": [3.2, 1]}
    )
    ax = axes[0]
    ys = list(range(len(rows)))[::-1]
    walls = [s.get("wall_s", 0.0) for s in rows]
    err = [
        [s["wall_s"] - s["wall_min_s"] if "wall_s" in s else 0 for s in rows],
        [s["wall_max_s"] - s["wall_s"] if "wall_s" in s else 0 for s in rows],
    ]
    ax.barh(
        ys,
        walls,
        xerr=err,
        color=[TOOL_COLORS.get(s["tool"], "#333") for s in rows],
        capsize=2,
        ecolor="#444",
    )
    ax.set_yticks(ys, [s["id"] for s in rows])
    top = max(walls) if walls else 1
    for y, s in zip(ys, rows, strict=True):
        if s["status"] == "failed":
            lines = (s.get("reason") or "").splitlines()
            why = lines[1] if len(lines) > 1 else (lines[0] if lines else "")
            why = re.sub(r"/\S*?/registry/src/[^/]+/", ".../", why)
            ax.text(top * 0.01, y, f"FAILED: {why[:110]}", va="center", fontsize=7, color="#c00000")
            continue
        note = f" {s['wall_s']:.2f} s"
        if s.get("cache_hits") is not None:
            note += f"  hits {s['cache_hits']}/miss {s.get('cache_misses')}"
        if s.get("ratio_sccache") is not None and s["tool"] != "sccache":
            note += f"  {s['ratio_sccache']:.2f}x sccache"
        ax.text(s["wall_max_s"] + top * 0.01, y, note, va="center", fontsize=8)
    by_id = {s["id"]: s for s in rows if "wall_s" in s}
    if "sccache-warm" in by_id:
        x = 0.5 * by_id["sccache-warm"]["wall_s"]
        ax.axvline(
            x,
            ls="--",
            color=TOOL_COLORS["sccache"],
            lw=1,
            label="target: warm <= 0.5x sccache warm",
        )
    if "cargo-clean" in by_id:
        x = 1.1 * by_id["cargo-clean"]["wall_s"]
        ax.axvline(x, ls=":", color="#333", lw=1, label="target: cold <= 1.1x plain cargo")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlim(0, top * 1.45)
    ax.set_ylim(-0.7, len(rows) - 0.1)
    ax.set_xlabel("wall time, seconds (median; whiskers: min-max)")
    ax.set_title(
        f"Builds of '{report['workspace']['name']}' "
        f"({report['host']['cpus']} CPUs; lower is better)"
    )
    ax.grid(axis="x", alpha=0.3)
    ax2 = axes[1]
    if hits:
        names = list(hits)
        xs = range(len(names))
        p50 = [hits[n]["p50_ms"] for n in names]
        p99 = [hits[n]["p99_ms"] for n in names]
        ax2.bar(
            [x - 0.2 for x in xs],
            p50,
            width=0.4,
            label="p50",
            color=[TOOL_COLORS.get(n, "#333") for n in names],
        )
        ax2.bar(
            [x + 0.2 for x in xs],
            p99,
            width=0.4,
            label="p99",
            alpha=0.45,
            color=[TOOL_COLORS.get(n, "#333") for n in names],
        )
        for x, a, b in zip(xs, p50, p99, strict=True):
            ax2.text(x - 0.2, a, f"{a:.1f}", ha="center", va="bottom", fontsize=8)
            ax2.text(x + 0.2, b, f"{b:.0f}", ha="center", va="bottom", fontsize=8)
        ax2.axhline(15, ls="--", color=TOOL_COLORS["distbuild"], lw=1, label="target p50 15 ms")
        ax2.set_xticks(list(xs), names, rotation=20, ha="right")
        ax2.set_ylim(0.8, max(p99) * 12)  # headroom above the bars for the legend (log scale)
        ax2.legend(
            fontsize=8, title="left bar p50, right bar p99", title_fontsize=7, loc="upper left"
        )
    else:
        ax2.text(0.5, 0.5, "no micro-benchmark", ha="center", transform=ax2.transAxes)
    ax2.set_yscale("log")
    ax2.set_ylabel("ms per rustc invocation (log scale)")
    ax2.set_title("Cost of one cached compile (hit)")
    ax2.grid(axis="y", alpha=0.3)
    fig.text(
        0.01,
        0.005,
        f"{report['host']['rustc']} | {report['finished']} | "
        f"commit {report['host']['distbuild_commit']}",
        fontsize=7,
        color="#666",
    )
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
