"""Measurement primitives of scripts/bench: run a command, take its wall time and CPU time.

CPU time is what the build cost the machine, wherever it ran: the user+sys time of the
command's own process tree (``RUSAGE_CHILDREN`` of this process, which covers every descendant
that was waited for) plus the CPU that long-lived daemons spent during the command (the sccache
server, the distbuild master, a scheduler and its workers). Those are not our waited-for
children, so their share is read from ``/proc/PID/stat`` (utime+stime of the daemon and of the
children it reaped) before and after.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")

# Variables of the caller's environment that would change what a build does or which cache it
# uses; every scenario starts from an environment without them.
SCRUBBED_ENV = (
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_RUSTC_WRAPPER",
    "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_INCREMENTAL",
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_MAKEFLAGS",
    "MAKEFLAGS",
    "MFLAGS",
)


class BenchError(Exception):
    """A scenario could not be measured (a build failed, a tool misbehaved)."""


def base_env(extra_path: Iterable[Path] = ()) -> dict[str, str]:
    """The caller's environment minus build-changing variables, ``extra_path`` first on PATH."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in SCRUBBED_ENV and not k.startswith(("SCCACHE_", "DISTBUILD_", "FLOOR_"))
    }
    env["PATH"] = os.pathsep.join([*(str(p) for p in extra_path), env.get("PATH", "")])
    env["CARGO_TERM_COLOR"] = "never"
    env["CARGO_TERM_PROGRESS_WHEN"] = "never"
    return env


def proc_cpu_seconds(pid: int) -> float:
    """utime+stime of a live process plus those of the children it has reaped, in seconds."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime, stime, cutime, cstime are fields 14..17.
    return sum(int(x) for x in fields[11:15]) / CLK_TCK


def pids_with_env(needles: Iterable[str]) -> list[int]:
    """Pids of live processes whose environment holds one of ``needles`` ("NAME=value")."""
    wanted = [n.encode() for n in needles]
    found = []
    me = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            env = Path(entry.path, "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(w in env for w in wanted):
            found.append(int(entry.name))
    return found


@dataclass
class Sample:
    """One measured command."""

    wall_s: float
    user_s: float
    sys_s: float
    daemon_cpu_s: float
    stats: dict[str, Any] = field(default_factory=dict)
    loadavg_1m: float = 0.0  # at the start: how busy the (shared) machine was

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s + self.daemon_cpu_s

    def to_json(self) -> dict[str, Any]:
        return {
            "wall_s": round(self.wall_s, 4),
            "cpu_s": round(self.cpu_s, 4),
            "user_s": round(self.user_s, 4),
            "sys_s": round(self.sys_s, 4),
            "daemon_cpu_s": round(self.daemon_cpu_s, 4),
            "loadavg_1m": round(self.loadavg_1m, 2),
            "stats": self.stats,
        }


def run_measured(
    cmd: list[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    log: Path,
    daemon_cpu: Callable[[], float] = lambda: 0.0,
    timeout: float = 3600,
) -> Sample:
    """Runs ``cmd`` to completion and measures it; raises BenchError if it fails.

    Output goes to ``log`` (appended), so a failure can be diagnosed afterwards.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"\n$ (cd {cwd} && {' '.join(cmd)})\n".encode())
        out.flush()
        load = os.getloadavg()[0]
        d0 = daemon_cpu()
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=dict(env), stdout=out, stderr=subprocess.STDOUT)
        # Not subprocess.run(timeout=...): waiting with a timeout polls in sleeps of up to
        # 50 ms, which would round every wall time up by as much. A timer enforces it instead.
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        try:
            proc.wait()
        finally:
            killer.cancel()
        wall = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        d1 = daemon_cpu()
    if wall >= timeout:
        raise BenchError(f"{' '.join(cmd)} killed after its {timeout:g} s timeout")
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise BenchError(f"{' '.join(cmd)} exited {proc.returncode}:\n" + "\n".join(tail))
    return Sample(
        wall_s=wall,
        user_s=r1.ru_utime - r0.ru_utime,
        sys_s=r1.ru_stime - r0.ru_stime,
        daemon_cpu_s=max(0.0, d1 - d0),
        loadavg_1m=load,
    )


def run_quiet(
    cmd: list[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """Runs a helper command, capturing its output as text (no measurement)."""
    return subprocess.run(
        cmd,
        cwd=cwd,
        env=None if env is None else dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def percentile(xs: list[float], p: float) -> float:
    """The p-th percentile (0..100) by linear interpolation; NaN for no data."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = (len(s) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)
