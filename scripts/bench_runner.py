"""The scenario sequence of scripts/bench (see that script and docs/benchmarks.md)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_measure import BenchError, Sample, base_env, median, run_measured, run_quiet
from bench_tools import (
    BENCH_VENV_BIN,
    ROOT,
    Distbuild,
    Distributed,
    Floor,
    Sccache,
    Tool,
    stats_delta,
)

ALL_TOOLS = ("cargo", "floor", "sccache", "distbuild", "distributed")


@dataclass
class Scenario:
    """One measured situation: a tool, a kind of build, and its samples."""

    id: str
    tool: str
    kind: str  # clean | cold | warm | other-path | restarted | touch | edit | record | floor
    label: str
    samples: list[Sample] = field(default_factory=list)
    status: str = "ok"  # ok | skipped | failed
    reason: str | None = None

    @property
    def wall_s(self) -> float:
        return median([s.wall_s for s in self.samples])

    @property
    def cpu_s(self) -> float:
        return median([s.cpu_s for s in self.samples])

    def stat(self, name: str) -> int | None:
        """The counter of the median-wall sample's stats delta (None if the tool has none)."""
        if not self.samples:
            return None
        mid = sorted(self.samples, key=lambda s: s.wall_s)[(len(self.samples) - 1) // 2]
        v = mid.stats.get(name)
        return int(v) if isinstance(v, int | float) else None

    def not_cacheable(self) -> dict[str, int]:
        if not self.samples:
            return {}
        return dict(self.samples[-1].stats.get("not_cacheable") or {})


class Bench:
    """Runs the scenarios on copies of one workspace and collects the results."""

    def __init__(self, args: argparse.Namespace, scratch: Path, out: Path) -> None:
        self.args = args
        self.scratch = scratch
        self.out = out
        self.logs = out / "logs"
        self.scenarios: list[Scenario] = []
        self.micro: dict[str, Any] = {}
        src = Path(args.workspace).resolve()
        self.name = src.name
        self.ws_a = scratch / "a" / self.name
        self.ws_b = scratch / "b" / "another" / "checkout" / self.name
        for dst in (self.ws_a, self.ws_b):
            shutil.copytree(
                src,
                dst,
                ignore=shutil.ignore_patterns("target", ".git", ".venv", "results", "floor"),
            )
        self.env = base_env([BENCH_VENV_BIN])
        self.member_file = self._pick_member_file()
        self.member_original = self.member_file.read_bytes()
        self.edits = 0
        self.log(
            f"workspace {src} -> {self.ws_a} (and {self.ws_b}); "
            f"edits touch {self.member_file.relative_to(self.ws_a)}"
        )
        r = run_quiet(["cargo", "fetch"], cwd=self.ws_a, env=self.env)
        if r.returncode != 0:
            raise BenchError(f"cargo fetch failed: {r.stderr[-2000:]}")

    # -- helpers ---------------------------------------------------------------------------

    def log(self, msg: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def _pick_member_file(self) -> Path:
        """The lib source of the workspace member most other members depend on."""
        r = run_quiet(
            ["cargo", "metadata", "--no-deps", "--format-version", "1"], cwd=self.ws_a, env=self.env
        )
        meta = json.loads(r.stdout)
        names = {p["name"] for p in meta["packages"]}
        users: dict[str, int] = {}
        libs: dict[str, Path] = {}
        for p in meta["packages"]:
            for t in p["targets"]:
                if "lib" in t["kind"] or "rlib" in t["kind"]:
                    libs[p["name"]] = Path(t["src_path"])
            for d in p["dependencies"]:
                if d["name"] in names:
                    users[d["name"]] = users.get(d["name"], 0) + 1
        if not libs:
            raise BenchError("the workspace has no library member to edit")
        best = max(sorted(libs), key=lambda n: users.get(n, 0))
        return libs[best]

    def clean(self, ws: Path) -> None:
        shutil.rmtree(ws / "target", ignore_errors=True)

    def touch_member(self) -> None:
        os.utime(self.member_file)

    def edit_member(self) -> None:
        self.edits += 1
        self.member_file.write_bytes(
            self.member_original
            + f"\n#[doc(hidden)]\npub const DISTBUILD_BENCH_EDIT: u64 = {self.edits};\n".encode()
        )

    def restore_member(self) -> None:
        self.member_file.write_bytes(self.member_original)

    def measure(
        self,
        sc: Scenario,
        tool: Tool,
        ws: Path,
        before: Callable[[], None] | None = None,
        subcommand: str = "build",
    ) -> Sample:
        """One timed build of ``ws`` with ``tool``; ``before`` runs untimed first."""
        if before:
            before()
        s0 = tool.stats()
        sample = run_measured(
            tool.build_cmd(subcommand),
            cwd=ws,
            env=tool.env(self.env),
            log=self.logs / f"{sc.id}.log",
            daemon_cpu=tool.daemon_cpu,
        )
        sample.stats = stats_delta(s0, tool.stats())
        sc.samples.append(sample)
        hits = sample.stats.get("cache_hits")
        self.log(
            f"  {sc.id}: {sample.wall_s:.2f}s wall, {sample.cpu_s:.2f}s cpu"
            + (
                f", hits {hits}, misses {sample.stats.get('cache_misses')}"
                if hits is not None
                else ""
            )
        )
        return sample

    def scenario(self, id_: str, tool: Tool, kind: str, label: str) -> Scenario:
        sc = Scenario(id_, tool.name, kind, label)
        self.scenarios.append(sc)
        return sc

    def guarded(self, sc: Scenario, body: Callable[[], None]) -> None:
        try:
            body()
        except (BenchError, OSError, ValueError) as e:
            sc.status, sc.reason = "failed", str(e)
            self.log(f"  {sc.id} FAILED: {e}")
            with (self.logs / "errors.log").open("a") as f:
                f.write(f"{sc.id}:\n{traceback.format_exc()}\n")

    def incremental(self, tool: Tool, prefix: str) -> None:
        """touch / edit one member and rebuild, after a full build of ws_a."""
        for kind, action, what in (
            ("touch", self.touch_member, "mtime only"),
            ("edit", self.edit_member, "content changed"),
        ):
            sc = self.scenario(
                f"{prefix}-{kind}", tool, kind, f"{tool.label}: {kind} one member ({what}), rebuild"
            )
            self.guarded(
                sc,
                lambda a=action, s=sc: [
                    self.measure(s, tool, self.ws_a, before=a) for _ in range(self.args.runs)
                ],
            )
        self.restore_member()

    # -- per tool sequences ----------------------------------------------------------------

    def run_cargo(self) -> None:
        tool = Tool(self.scratch)
        sc = self.scenario("cargo-clean", tool, "clean", "plain cargo: build from clean")
        self.guarded(
            sc,
            lambda: [
                self.measure(sc, tool, self.ws_a, before=lambda: self.clean(self.ws_a))
                for _ in range(self.args.cold_runs)
            ],
        )
        if sc.status == "ok":
            self.incremental(tool, "cargo")

    def run_floor(self, tool: Floor) -> None:
        tool.start()
        tool.mode, tool.link = "record", True
        rec = self.scenario(
            "floor-record", tool, "record", "floor: recording run (plain compile + store outputs)"
        )
        self.guarded(
            rec, lambda: [self.measure(rec, tool, self.ws_a, before=lambda: self.clean(self.ws_a))]
        )
        if rec.status != "ok":
            return
        tool.mode = "replay"
        for link in (True, False):
            tool.link = link
            how = "hard-link" if link else "copy"
            sc = self.scenario(
                f"floor-{how}", tool, "floor", f"floor: {how} known outputs after cargo clean"
            )
            self.guarded(
                sc,
                lambda s=sc: [
                    self.measure(s, tool, self.ws_a, before=lambda: self.clean(self.ws_a))
                    for _ in range(self.args.runs)
                ],
            )
        tool.link = True

    def run_sccache(self, tool: Sccache) -> None:
        cold = self.scenario("sccache-cold", tool, "cold", "sccache: cold cache, from clean")

        def cold_runs() -> None:
            for _ in range(self.args.cold_runs):
                tool.start()
                self.measure(cold, tool, self.ws_a, before=lambda: self.clean(self.ws_a))

        self.guarded(cold, cold_runs)
        if cold.status != "ok":
            return
        warm = self.scenario("sccache-warm", tool, "warm", "sccache: warm cache after cargo clean")
        self.guarded(
            warm,
            lambda: [
                self.measure(warm, tool, self.ws_a, before=lambda: self.clean(self.ws_a))
                for _ in range(self.args.runs)
            ],
        )
        self.incremental(tool, "sccache")

    def run_distbuild(self, tool: Distbuild) -> None:
        cold = self.scenario(
            "distbuild-cold", tool, "cold", "cargo-distbuild: cold cache, from clean"
        )

        def cold_runs() -> None:
            for _ in range(self.args.cold_runs):
                tool.start()
                self.measure(cold, tool, self.ws_a, before=lambda: self.clean(self.ws_a))

        self.guarded(cold, cold_runs)
        if cold.status != "ok":
            return
        warm = self.scenario(
            "distbuild-warm", tool, "warm", "cargo-distbuild: warm cache after cargo clean"
        )
        self.guarded(
            warm,
            lambda: [
                self.measure(warm, tool, self.ws_a, before=lambda: self.clean(self.ws_a))
                for _ in range(self.args.runs)
            ],
        )
        other = self.scenario(
            "distbuild-other-path",
            tool,
            "other-path",
            "cargo-distbuild: warm cache, copy at another path",
        )
        self.guarded(
            other,
            lambda: [
                self.measure(other, tool, self.ws_b, before=lambda: self.clean(self.ws_b))
                for _ in range(self.args.runs)
            ],
        )
        self.incremental(tool, "distbuild")
        restarted = self.scenario(
            "distbuild-restarted",
            tool,
            "restarted",
            "cargo-distbuild: warm cache, master restarted, cargo clean",
        )

        def restarted_runs() -> None:
            for _ in range(self.args.runs):
                self.clean(self.ws_a)
                tool.stop_master()
                self.measure(restarted, tool, self.ws_a)

        self.guarded(restarted, restarted_runs)

    def run_distributed(self, tool: Distributed) -> None:
        sc = self.scenario(
            "distributed-cold",
            tool,
            "cold",
            "cargo-distbuild, scheduler + 2 workers: cold, from clean",
        )

        def runs() -> None:
            try:
                for _ in range(self.args.cold_runs):
                    tool.start()
                    self.measure(sc, tool, self.ws_a, before=lambda: self.clean(self.ws_a))
            finally:
                tool.stop()

        self.guarded(sc, runs)

    # -- the whole run ---------------------------------------------------------------------

    def run(self) -> None:
        wanted = self.args.tools
        tools: dict[str, Tool] = {
            "floor": Floor(self.scratch),
            "sccache": Sccache(self.scratch),
            "distbuild": Distbuild(self.scratch),
            "distributed": Distributed(self.scratch),
        }
        try:
            if "cargo" in wanted:
                self.log("plain cargo")
                self.run_cargo()
            for name in ("floor", "sccache", "distbuild", "distributed"):
                if name not in wanted:
                    continue
                tool = tools[name]
                why = tool.unavailable()
                if why:
                    self.log(f"{name}: skipped: {why}")
                    sc = self.scenario(
                        f"{name}-cold" if name != "floor" else "floor-hard-link",
                        tool,
                        "cold",
                        tool.label,
                    )
                    sc.status, sc.reason = "skipped", why
                    continue
                self.log(name)
                getattr(self, f"run_{name}")(tool)
            if not self.args.no_micro:
                from bench_micro import run_micro

                self.log("micro-benchmarks")
                live = {
                    n: t
                    for n, t in tools.items()
                    if n in wanted
                    and n != "distributed"
                    and not t.unavailable()
                    and self._tool_ok(n)
                }
                self.micro = run_micro(self, live)
        finally:
            for tool in tools.values():
                try:
                    tool.stop()
                except Exception as e:  # noqa: BLE001 - cleanup must go on for the others
                    self.log(f"stopping {tool.name}: {e}")

    def _tool_ok(self, name: str) -> bool:
        return any(s.tool == name and s.status == "ok" and s.samples for s in self.scenarios)


def host_info() -> dict[str, Any]:
    def first_line(cmd: list[str]) -> str:
        r = run_quiet(cmd)
        return r.stdout.strip().splitlines()[0] if r.returncode == 0 and r.stdout else "?"

    return {
        "hostname": platform.node(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "rustc": first_line(["rustc", "--version"]),
        "cargo": first_line(["cargo", "--version"]),
        "sccache": first_line([str(BENCH_VENV_BIN / "sccache"), "--version"]),
        "distbuild_commit": first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    p.add_argument(
        "--workspace",
        default=str(ROOT / "bench"),
        help="Cargo workspace to build (default: bench/)",
    )
    p.add_argument(
        "--runs",
        type=int,
        default=3,
        help="repetitions of warm and incremental scenarios (median reported)",
    )
    p.add_argument(
        "--cold-runs",
        type=int,
        default=1,
        help="repetitions of from-clean and cold-cache scenarios",
    )
    p.add_argument("--out", default=str(ROOT / "bench-results"), help="output directory")
    p.add_argument(
        "--quick", action="store_true", help="one run of everything, small micro-benchmarks"
    )
    p.add_argument(
        "--tools",
        default=",".join(ALL_TOOLS),
        help=f"comma-separated subset of {','.join(ALL_TOOLS)}",
    )
    p.add_argument(
        "--micro-n",
        type=int,
        default=300,
        help="timed wrapper invocations per tool for the hit overhead",
    )
    p.add_argument("--no-micro", action="store_true", help="skip the micro-benchmarks")
    p.add_argument("--no-chart", action="store_true", help="do not draw the PNG")
    p.add_argument(
        "--no-install",
        action="store_true",
        help="do not create/update bench/.venv (tools missing there are skipped)",
    )
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = p.parse_args(argv)
    args.tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = set(args.tools) - set(ALL_TOOLS)
    if unknown:
        p.error(f"unknown tools: {', '.join(sorted(unknown))}")
    if args.quick:
        args.runs, args.cold_runs, args.micro_n = 1, 1, min(args.micro_n, 40)
    return args


def main(argv: list[str]) -> int:
    from bench_report import print_table, to_json, write_chart

    args = parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="distbuild-bench-"))
    started = dt.datetime.now(dt.UTC)
    bench = None
    try:
        bench = Bench(args, scratch, out)
        (bench.logs).mkdir(parents=True, exist_ok=True)
        host = host_info()
        bench.run()
        report = to_json(bench, args, host, started)
        stem = f"bench-{bench.name}"
        (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
        print_table(report)
        if not args.no_chart:
            png = write_chart(report, out / f"{stem}.png")
            print(f"chart: {png}" if png else "chart: skipped (matplotlib not installed)")
        print(f"results: {out / (stem + '.json')}")
    finally:
        if bench is not None:
            bench.restore_member()
        if args.keep:
            print(f"scratch kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    failed = [s.id for s in bench.scenarios if s.status == "failed"] if bench else []
    return 1 if failed else 0
