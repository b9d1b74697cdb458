"""Statistics: each build's summary counts its own compilations; a crash leaves them consistent."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Distbuild, compile_spans, copy_workspace, run_app, slow_rustc

pytestmark = pytest.mark.slow

FULL_BUILD = 8


def _consistent(stats: dict[str, Any]) -> None:
    """The documented invariants between the counters."""
    assert (stats["cache_hits"] + stats["cache_misses"] + sum(stats["not_cacheable"].values())
            == stats["compile_requests"]), stats
    assert stats["executed_local"] + stats["executed_remote"] == stats["cache_misses"], stats


def test_concurrent_builds_each_report_their_own(distbuild: Distbuild, tmp_path: Path) -> None:
    """Four `cargo distbuild build`s at once, sharing one master: each summary counts the 8
    compilations of its own build, not the others' (a delta of shared counters did)."""
    rustc, _ = slow_rustc(tmp_path / "slow-rustc", pause=1)
    distbuild.run("master", "start")
    env = {**distbuild.env, "RUSTC": str(rustc)}
    builds = [subprocess.Popen(["cargo", "distbuild", "build"], cwd=copy_workspace(
        tmp_path / f"ws{i}"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True) for i in range(4)]
    for build in builds:
        _, err = build.communicate(timeout=600)
        assert build.returncode == 0, err
        counted = re.search(r"compilations\s+(\d+)", err)
        assert counted is not None, err
        assert int(counted.group(1)) == FULL_BUILD, err
    total = distbuild.stats()
    assert total["compile_requests"] == 4 * FULL_BUILD, total
    _consistent(total)


def test_counters_consistent_after_a_master_crash(distbuild: Distbuild, workspace: Path,
                                                  plain_app_output: str) -> None:
    """SIGKILL to the master while compiles are in flight: the counters it saved agree with
    one another (no miss without its execution), and so do they after the build."""
    rustc, log = slow_rustc(workspace.parent / "slow-rustc", pause=3)
    distbuild.run("master", "start")
    pid = int((distbuild.home / "master.pid").read_text())
    build = subprocess.Popen(["cargo", "distbuild", "build"], cwd=workspace,
                             env={**distbuild.env, "RUSTC": str(rustc)},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    # Wait until the master has saved (every second) some finished work, and a compile has
    # been running long enough for a save to have seen its lookup.
    while time.monotonic() < deadline:
        spans = compile_spans(log, finished=False)
        running = [s for runs in spans.values() for s in runs if not s[1]]
        try:
            saved = json.loads((distbuild.home / "stats.json").read_text())
        except (OSError, ValueError):
            saved = {}
        if (saved.get("executed_local") and running
                and time.time_ns() - running[0][0] > 1.5e9):
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"no compile in flight to crash the master under: {spans}")
    os.kill(pid, signal.SIGKILL)
    saved = json.loads((distbuild.home / "stats.json").read_text())
    out, _ = build.communicate(timeout=600)
    assert build.returncode == 0, out
    assert saved["cache_misses"] > 0, saved
    _consistent(saved)
    assert run_app(workspace) == plain_app_output
    _consistent(distbuild.stats())
