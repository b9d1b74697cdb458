"""Where a tool's daemon spends its time: py-spy on it during a workload, summarized."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_tools import BENCH_VENV_BIN, Tool


def profile_master(bench: Any, tool: Tool, workload: Callable[[], None]) -> dict[str, Any]:
    """py-spy on the tool's daemon while ``workload`` runs; top functions by share of samples."""
    pyspy = BENCH_VENV_BIN / "py-spy"
    pids = [p for p in tool.daemon_pids() if b"python" in _cmdline(p)]
    if not pyspy.exists() or not pids:
        return {"skipped": "py-spy not installed" if not pyspy.exists() else "no daemon found"}
    raw = bench.out / f"hit-profile-{tool.name}.txt"
    svg = bench.out / f"hit-profile-{tool.name}.svg"
    spy = subprocess.Popen(
        [
            str(pyspy),
            "record",
            "--pid",
            str(pids[0]),
            "--rate",
            "500",
            "--format",
            "raw",
            "--output",
            str(raw),
            "--subprocesses",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(1.0)
    try:
        workload()
    finally:
        spy.send_signal(signal.SIGINT)
    try:
        _, err = spy.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        spy.kill()
        _, err = spy.communicate()
    if not raw.exists():
        return {"skipped": f"py-spy failed: {err.decode(errors='replace')[-300:]}"}
    return summarize_collapsed(raw, svg)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def summarize_collapsed(raw: Path, svg: Path) -> dict[str, Any]:
    """Top frames of a py-spy collapsed-stack file, by inclusive and by own share (non-idle)."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = idle = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not count_s.isdigit():
            continue
        count = int(count_s)
        frames = [f for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        total += count
        leaf = frames[-1] if frames else "?"
        if any(
            w in leaf
            for w in ("select", "poll", "accept", "recv", "wait", "sleep", "_worker (", "acquire")
        ):
            idle += count
            continue
        own[_short(leaf)] += count
        for f in {_short(f) for f in frames}:
            if not f.endswith("(threading.py)"):  # thread plumbing: in every stack
                inclusive[f] += count
    busy = max(1, total - idle)
    return {
        "samples": total,
        "busy_samples": total - idle,
        "top_inclusive": [(f, round(100 * c / busy, 1)) for f, c in inclusive.most_common(15)],
        "top_own": [(f, round(100 * c / busy, 1)) for f, c in own.most_common(15)],
        "raw": str(raw),
        "svg": str(svg) if svg.exists() else None,
    }


def _short(frame: str) -> str:
    # "func (path/to/module.py:123)" -> "func (module.py)"
    name, _, loc = frame.partition(" (")
    file = loc.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({os.path.basename(file)})" if file else name
