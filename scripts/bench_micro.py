"""Micro-figures of scripts/bench: per-invocation cost of a hit and of a miss, and where a hit
spends its time.

1. A capture build per tool: after ``cargo clean``, Cargo runs with a tiny capture wrapper in
   front of the tool's own wrapper; it records each rustc invocation's argv, environment and
   working directory, and the build populates target/ through the tool (all hits).
2. Hit overhead: the recorded compilations are replayed one at a time through the tool's wrapper
   (``N`` timed process runs, interpreter start included), p50/p99 over all of them.
3. Miss overhead: a few recorded compilations are run directly with rustc and through the tool,
   each with a fresh ``--cfg`` nonce (so the tool cannot hit) and outputs in a separate
   directory (so nothing in target/ or in any store is overwritten).
4. Hit path: interpreter start and shim import measured apart, the counters the tool reports,
   and a py-spy profile of the master during a replay loop.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from bench_measure import BenchError, median, percentile, run_measured
from bench_profile import profile_master
from bench_tools import BENCH_VENV_BIN, Tool, stats_delta

CAPTURE = """#!{python} -S
import json, os, sys, time
rec = {{"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}}
d = os.environ["DISTBUILD_BENCH_CAPTURE_DIR"]
nxt = os.environ.get("DISTBUILD_BENCH_CAPTURE_NEXT", "")
argv = ([nxt] if nxt else []) + sys.argv[1:]
pid = os.fork()
if pid == 0:
    os.execv(argv[0], argv)  # inherits Cargo's jobserver descriptors
status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
rec["exit_code"] = status
with open(os.path.join(d, "%d-%d.json" % (time.time_ns(), os.getpid())), "w") as f:
    json.dump(rec, f)
sys.exit(status if status >= 0 else 1)
"""

JOBSERVER_ENV = ("CARGO_MAKEFLAGS", "MAKEFLAGS", "MFLAGS")


class Invocation:
    """One recorded rustc compilation."""

    def __init__(self, rec: dict[str, Any]) -> None:
        self.argv: list[str] = rec["argv"]
        self.cwd = Path(rec["cwd"])
        self.env = {k: v for k, v in rec["env"].items() if k not in JOBSERVER_ENV}
        self.crate = _flag(self.argv, "--crate-name") or "?"
        self.extra = _codegen(self.argv, "extra-filename") or ""
        self.out_dir = Path(_flag(self.argv, "--out-dir") or ".")
        self.exit_code: int = rec.get("exit_code", 0)
        self.probe = "--crate-name" not in self.argv and self.crate != "?"

    @property
    def key(self) -> str:
        return f"{self.crate}{self.extra}"

    @property
    def is_compile(self) -> bool:
        # Cargo's own compilations (it always spells `--crate-name NAME`); build-script probes
        # (`--crate-name=...`, often reading stdin or writing into temporary dirs) are left out.
        return "--crate-name" in self.argv and "-" not in self.argv and self.crate != "___"

    def output_size(self) -> int:
        """Size of the main output (rlib, so or executable), 0 if none."""
        for name in (f"lib{self.key}.rlib", f"lib{self.key}.so", self.key):
            p = self.out_dir / name
            if p.is_file():
                return p.stat().st_size
        return 0

    def output_bytes(self) -> int:
        """Total size of the files this invocation wrote into its out-dir."""
        total = 0
        for p in self.out_dir.glob(f"*{self.key}*"):
            if p.is_file():
                total += p.stat().st_size
        return total

    def relocated(self, out_dir: Path, nonce: str) -> list[str]:
        """argv with outputs (and incremental state) in ``out_dir`` and a unique cfg."""
        argv: list[str] = []
        it = iter(self.argv)
        for a in it:
            if a == "--out-dir":
                argv += [a, str(out_dir)]
                next(it, None)
            elif a.startswith("--out-dir="):
                argv.append(f"--out-dir={out_dir}")
            elif a == "-C":
                opt = next(it, "")
                argv += [
                    "-C",
                    f"incremental={out_dir}/incr" if opt.startswith("incremental=") else opt,
                ]
            elif a.startswith("-Cincremental="):
                argv.append(f"-Cincremental={out_dir}/incr")
            else:
                argv.append(a)
        return argv + [
            "--cfg",
            f'distbuild_bench_nonce="{nonce}"',
            "--check-cfg",
            "cfg(distbuild_bench_nonce, values(any()))",
        ]


def _flag(argv: list[str], name: str) -> str | None:
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def _codegen(argv: list[str], name: str) -> str | None:
    for i, a in enumerate(argv):
        opt = (
            argv[i + 1] if a == "-C" and i + 1 < len(argv) else a[2:] if a.startswith("-C") else ""
        )
        if opt.startswith(name + "="):
            return opt.split("=", 1)[1]
    return None


def _timed(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(
        cmd,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise BenchError(f"exit {r.returncode}: {' '.join(cmd[:6])} ...")
    return dt


def _summary(times_s: list[float]) -> dict[str, Any]:
    if not times_s:
        return {"n": 0, "p50_ms": None, "p90_ms": None, "p99_ms": None, "mean_ms": None}
    ms = [t * 1000 for t in times_s]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 2),
        "p90_ms": round(percentile(ms, 90), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "mean_ms": round(sum(ms) / len(ms), 2),
    }


def capture(bench: Any, tool: Tool) -> list[Invocation]:
    """A warm build of ws_a through ``tool`` that records every rustc invocation."""
    script = bench.scratch / "capture.py"
    if not script.exists():
        script.write_text(
            CAPTURE.format(
                python=os.path.realpath(BENCH_VENV_BIN / "python")
                if (BENCH_VENV_BIN / "python").exists()
                else shutil.which("python3")
            )
        )
        script.chmod(0o755)
    cap = bench.scratch / f"capture-{tool.name}"
    shutil.rmtree(cap, ignore_errors=True)
    cap.mkdir()
    wrapper = tool.wrapper() or []
    env = {
        **tool.env(bench.env),
        "RUSTC_WRAPPER": str(script),
        "DISTBUILD_BENCH_CAPTURE_DIR": str(cap),
        "DISTBUILD_BENCH_CAPTURE_NEXT": wrapper[0] if wrapper else "",
    }
    bench.clean(bench.ws_a)
    s0 = tool.stats()
    run_measured(
        ["cargo", "build"],
        cwd=bench.ws_a,
        env=env,
        log=bench.logs / f"micro-capture-{tool.name}.log",
        daemon_cpu=tool.daemon_cpu,
    )
    bench.log(f"  capture build {tool.name}: {stats_delta(s0, tool.stats())}")
    invs = [Invocation(json.loads(p.read_text())) for p in sorted(cap.iterdir())]
    bench.captured[tool.name] = {
        "compilations": sum(1 for i in invs if i.is_compile),
        "build_script_probes": sum(1 for i in invs if i.probe),
        "failed": sorted(
            f"{i.crate} {' '.join(a for a in i.argv if a.endswith('.rs'))}"
            for i in invs
            if i.exit_code != 0
        ),
    }
    return [i for i in invs if i.is_compile and i.exit_code == 0]


def hit_overhead(bench: Any, tool: Tool, invs: list[Invocation], n: int) -> dict[str, Any]:
    """Replays ``n`` recorded compilations (cycling) through the tool's wrapper, timing each.

    Also reports the CPU per invocation of the wrapper process and of the tool's daemon, and
    a linear fit of time against the bytes of output restored (fixed cost + cost per MB).
    """
    wrapper = tool.wrapper() or []
    times: list[float] = []
    per: dict[str, list[float]] = {}
    s0 = tool.stats()
    d0 = tool.daemon_cpu()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    failed: dict[str, str] = {}
    for k in range(n):
        inv = invs[k % len(invs)]
        if inv.key in failed:
            continue
        try:
            dt = _timed([*wrapper, *inv.argv], cwd=inv.cwd, env=inv.env)
        except BenchError as e:
            failed[inv.key] = str(e)[:300]
            continue
        times.append(dt)
        per.setdefault(inv.key, []).append(dt)
    if not times:
        raise BenchError(f"every replay failed, e.g. {next(iter(failed.values()), '?')}")
    n = len(times)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    d1 = tool.daemon_cpu()
    out = _summary(times)
    out["invocations"] = len(invs) - len(failed)
    out["failed_invocations"] = failed
    out["stats"] = stats_delta(s0, tool.stats())
    out["wrapper_cpu_ms_per_call"] = round(
        1000 * (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) / n, 2
    )
    out["daemon_cpu_ms_per_call"] = round(1000 * (d1 - d0) / n, 2)
    sizes = {i.key: i.output_bytes() for i in invs}
    out["per_crate"] = {
        k: {"ms": round(median(v) * 1000, 2), "output_bytes": sizes.get(k, 0)}
        for k, v in sorted(per.items())
    }
    out["fit_vs_output_size"] = _fit(
        [(sizes.get(k, 0) / 1e6, median(v) * 1000) for k, v in per.items()]
    )
    hits = out["stats"].get("cache_hits")
    if isinstance(hits, int) and hits < n:
        # Not every replay was a hit (sccache refuses some crate types): time the hits alone.
        hit_keys = _classify_hits(tool, invs, wrapper)
        only = [t for k, v in per.items() if k in hit_keys for t in v]
        out["hits_only"] = {**_summary(only), "invocations": len(hit_keys)}
    return out


def _classify_hits(tool: Tool, invs: list[Invocation], wrapper: list[str]) -> set[str]:
    """Keys of the invocations that the tool serves as a hit (one stats read per call)."""
    keys = set()
    for inv in invs:
        s0 = tool.stats() or {}
        _timed([*wrapper, *inv.argv], cwd=inv.cwd, env=inv.env)
        s1 = tool.stats() or {}
        if s1.get("cache_hits", 0) > s0.get("cache_hits", 0):
            keys.add(inv.key)
    return keys


def _fit(points: list[tuple[float, float]]) -> dict[str, float] | None:
    """Least-squares ms = fixed + per_mb * MB over (MB, ms) points."""
    if len(points) < 3:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    b = sum((x - mx) * (y - my) for x, y in points) / sxx
    return {
        "fixed_ms": round(my - b * mx, 2),
        "ms_per_mb": round(b, 3),
        "max_output_mb": round(max(x for x, _ in points), 2),
    }


def miss_overhead(
    bench: Any, tools: dict[str, Tool], invs: dict[str, list[Invocation]], k: int, reps: int
) -> dict[str, Any]:
    """rustc direct vs each tool on a miss, on ``k`` compilations of spread output sizes."""
    base = invs.get("distbuild") or invs.get("distbuild-direct") or next(iter(invs.values()))
    libs = sorted(
        # Plain libraries only: the one crate type every tool caches, so it measures a miss.
        (i for i in base if i.output_size() > 0 and _flag(i.argv, "--crate-type") == "lib"),
        key=lambda i: i.output_size(),
    )
    if not libs:
        return {}
    picks = sorted(
        {int(len(libs) * q) for q in [0.15 + 0.55 * j / max(1, k - 1) for j in range(k)]}
    )
    chosen = [libs[min(p, len(libs) - 1)] for p in picks]
    results: dict[str, Any] = {"crates": {}}
    per_tool: dict[str, list[float]] = {name: [] for name in ["rustc", *tools]}
    stats0 = {name: t.stats() for name, t in tools.items()}
    count = 0
    for rep in range(reps):
        for inv in chosen:
            row = results["crates"].setdefault(inv.key, {"output_bytes": inv.output_size()})
            for name in ["rustc", *tools]:
                own = next((i for i in invs.get(name, []) if i.key == inv.key), inv)
                out_dir = bench.ws_a / "target" / "bench-miss" / f"{name}-{inv.key}-{rep}"
                shutil.rmtree(out_dir, ignore_errors=True)
                out_dir.mkdir(parents=True)
                argv = own.relocated(out_dir, uuid.uuid4().hex)
                wrapper = [] if name == "rustc" else (tools[name].wrapper() or [])
                dt = _timed([*wrapper, *argv], cwd=own.cwd, env=own.env)
                row.setdefault(f"{name}_s", []).append(round(dt, 4))
                per_tool[name].append(dt)
            count += 1
    for name in tools:
        direct, tool_t = per_tool["rustc"], per_tool[name]
        over = [b - a for a, b in zip(direct, tool_t, strict=True)]
        ratio = [b / a for a, b in zip(direct, tool_t, strict=True) if a > 0]
        results[name] = {
            "median_overhead_ms": round(median(over) * 1000, 1),
            "median_ratio": round(median(ratio), 3),
            "total_direct_s": round(sum(direct), 3),
            "total_tool_s": round(sum(tool_t), 3),
            "stats": stats_delta(stats0[name], tools[name].stats()),
            "compilations": count,
        }
    return results


def _shebang(path: Path) -> list[str]:
    try:
        first = path.read_text(errors="replace").splitlines()[0]
    except (OSError, IndexError):
        return []
    return first[2:].split() if first.startswith("#!") else []


def hit_path(
    bench: Any, tool: Tool, invs: list[Invocation], n: int, hit: dict[str, Any]
) -> dict[str, Any]:
    """Where a hit's time goes: process start, interpreter, shim import, the rest; a profile."""
    out: dict[str, Any] = {}
    reps = max(20, n // 3)
    out["spawn_true_ms"] = _summary([_timed(["/bin/true"]) for _ in range(reps)])["p50_ms"]
    shim = Path((tool.wrapper() or [""])[0])
    interp = _shebang(shim)
    if interp:
        # The launcher without its final call line: interpreter start + shim import only.
        lines = shim.read_text().splitlines()
        while lines and (
            ("(" in lines[-1] and "import" not in lines[-1]) or lines[-1].rstrip().endswith(":")
        ):
            lines.pop()
        probe = bench.scratch / "shim-import-probe.py"
        probe.write_text("\n".join(lines[1:]) + "\n")
        env = {k: v for k, v in bench.env.items() if k != "PYTHONPATH"}
        out["shim"] = str(shim)
        out["shim_interpreter"] = " ".join(interp)
        out["interpreter_start_ms"] = _summary(
            [_timed([*interp, "-c", "pass"], env=env) for _ in range(reps)]
        )["p50_ms"]
        out["shim_import_ms"] = round(
            _summary([_timed([*interp, str(probe)], env=env) for _ in range(reps)])["p50_ms"]
            - out["interpreter_start_ms"],
            2,
        )
        out["rest_of_hit_ms"] = round(
            hit["p50_ms"] - out["interpreter_start_ms"] - out["shim_import_ms"], 2
        )
    else:  # a compiled shim: the process, then the master's part
        out["shim"] = str(shim)
        out["rest_of_hit_ms"] = round(hit["p50_ms"] - out["spawn_true_ms"], 2)
    timing = {
        k: v
        for k, v in (hit.get("stats") or {}).items()
        if any(s in k for s in ("_ms", "_s", "time", "seconds", "duration"))
    }
    if timing:
        out["tool_reported_timing"] = timing
    out["profile"] = profile_master(bench, tool, lambda: _replay(tool, invs, n))
    return out


def _replay(tool: Tool, invs: list[Invocation], n: int) -> None:
    """``n`` replays through the tool's wrapper, cycling through ``invs`` (untimed)."""
    wrapper = tool.wrapper() or []
    for k in range(n):
        inv = invs[k % len(invs)]
        _timed([*wrapper, *inv.argv], cwd=inv.cwd, env=inv.env)


def run_micro(bench: Any, tools: dict[str, Tool]) -> dict[str, Any]:
    """All micro-figures for the tools that ran; errors are recorded, not raised."""
    n = bench.args.micro_n
    result: dict[str, Any] = {"hit_overhead": {}, "miss_overhead": {}, "hit_path": {}}
    bench.captured = result["captured_invocations"] = {}
    invs: dict[str, list[Invocation]] = {}
    order = [t for t in ("floor", "sccache", "distbuild", "distbuild-direct") if t in tools]
    for name in order:
        tool = tools[name]
        try:
            if name == "floor":
                tool.mode, tool.link = "replay", True  # type: ignore[attr-defined]
            invs[name] = capture(bench, tool)
            if not invs[name]:
                raise BenchError("no compilation recorded")
            result["hit_overhead"][name] = hit_overhead(bench, tool, invs[name], n)
            bad = result["hit_overhead"][name]["failed_invocations"]
            invs[name] = [i for i in invs[name] if i.key not in bad]
            bench.log(
                f"  hit overhead {name}: p50 {result['hit_overhead'][name]['p50_ms']} ms,"
                f" p99 {result['hit_overhead'][name]['p99_ms']} ms"
            )
            if name.startswith("distbuild"):
                result["hit_path"][name] = hit_path(
                    bench, tool, invs[name], n, result["hit_overhead"][name]
                )
        except (BenchError, OSError, ValueError) as e:
            result["hit_overhead"][name] = {"error": str(e)}
            bench.log(f"  micro {name} FAILED: {e}")
    miss_tools = {k: tools[k] for k in ("sccache", "distbuild", "distbuild-direct") if k in invs}
    if miss_tools:
        try:
            k, reps = (2, 1) if bench.args.quick else (5, 2)
            result["miss_overhead"] = miss_overhead(bench, miss_tools, invs, k, reps)
        except (BenchError, OSError, ValueError) as e:
            result["miss_overhead"] = {"error": str(e)}
            bench.log(f"  miss overhead FAILED: {e}")
    bench.clean(bench.ws_a)
    return result
