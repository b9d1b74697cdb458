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
    DistbuildDirect,
    DistbuildSandboxed,
    Distributed,
    Floor,
    Sccache,
    Tool,
    stats_delta,
)

ALL_TOOLS = ("cargo", "floor", "sccache", "distbuild", "distbuild-direct", "distbuild-sandboxed",
             "distributed")
DISTBUILDS = ("distbuild", "distbuild-direct")  # the default configuration, then direct
# Tools measured only cold (their hits are the default's code), with what the scenario is.
COLD_ONLY = {
    "distbuild-sandboxed": "cargo-distbuild, every miss sandboxed",
    "distributed": "cargo-distbuild, scheduler + 2 workers",
}


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
        self.broken: set[str] = set()  # tools whose build failed: no further scenarios
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
    ) -> Sample:
        """One timed build of ``ws`` with ``tool``; ``before`` runs untimed first."""
        if before:
            before()
        s0 = tool.stats()
        sample = run_measured(
            tool.build_cmd(),
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
            + f" (load {sample.loadavg_1m:.1f})"
        )
        return sample

    def scenario(self, id_: str, tool: Tool, kind: str, label: str) -> Scenario:
        """The scenario ``id_``, created on first use (rounds add samples to it)."""
        for sc in self.scenarios:
            if sc.id == id_:
                return sc
        sc = Scenario(id_, tool.name, kind, label)
        self.scenarios.append(sc)
        return sc

    def step(
        self,
        tool: Tool,
        id_: str,
        kind: str,
        label: str,
        body: Callable[[Scenario], None],
        retire: bool = True,
    ) -> bool:
        """Runs one measurement of a scenario; a failure marks it (and ``retire``s the tool)."""
        if tool.name in self.broken:
            return False
        sc = self.scenario(id_, tool, kind, label)
        if sc.status == "failed":
            return False
        try:
            body(sc)
            return True
        except (BenchError, OSError, ValueError) as e:
            sc.status, sc.reason = "failed", str(e)
            if retire:
                self.broken.add(tool.name)
            self.log(f"  {sc.id} FAILED: {e}")
            with (self.logs / "errors.log").open("a") as f:
                f.write(f"{sc.id}:\n{traceback.format_exc()}\n")
            return False

    def from_clean(
        self,
        tool: Tool,
        id_: str,
        kind: str,
        label: str,
        ws: Path | None = None,
        fresh: bool = False,
    ) -> bool:
        """A build after cargo clean (``fresh``: with an empty cache too)."""

        def body(sc: Scenario) -> None:
            if fresh:
                tool.start()
            self.measure(sc, tool, ws or self.ws_a, before=lambda: self.clean(ws or self.ws_a))

        return self.step(tool, id_, kind, label, body)

    def incremental(self, tool: Tool) -> None:
        """touch / edit one member and rebuild, ``runs`` times each, right after a full build."""
        for kind, action, what in (
            ("touch", self.touch_member, "mtime only"),
            ("edit", self.edit_member, "content changed"),
        ):
            for _ in range(self.args.runs):
                self.step(
                    tool,
                    f"{tool.name}-{kind}",
                    kind,
                    f"{tool.label}: {kind} one member ({what}), rebuild",
                    lambda sc, a=action: [self.measure(sc, tool, self.ws_a, before=a)],
                    retire=False,
                )
        self.restore_member()

    def warm_distbuild(self, db: Tool) -> None:
        """One warm round of a cargo-distbuild variant: after clean, at another path, restarted."""
        n, label = db.name, db.label
        self.from_clean(db, f"{n}-warm", "warm", f"{label}: warm cache after cargo clean")
        self.from_clean(
            db,
            f"{n}-other-path",
            "other-path",
            f"{label}: warm cache, copy at another path",
            ws=self.ws_b,
        )

        def restarted(sc: Scenario) -> None:
            self.clean(self.ws_a)
            db.stop_master()  # type: ignore[attr-defined]
            self.measure(sc, db, self.ws_a)

        self.step(
            db,
            f"{n}-restarted",
            "restarted",
            f"{label}: warm cache, master restarted, cargo clean",
            restarted,
        )

    # -- the whole run ---------------------------------------------------------------------

    def run(self) -> None:
        """Cold rounds, then warm rounds; within a round the tools take turns, so a change in
        the machine's load hits all of them alike instead of one tool's whole series."""
        wanted = self.args.tools
        cargo = Tool(self.scratch)
        tools: dict[str, Tool] = {
            "floor": Floor(self.scratch),
            "sccache": Sccache(self.scratch),
            "distbuild": Distbuild(self.scratch),
            "distbuild-direct": DistbuildDirect(self.scratch),
            "distbuild-sandboxed": DistbuildSandboxed(self.scratch),
            "distributed": Distributed(self.scratch),
        }
        live: dict[str, Tool] = {}
        for name, tool in tools.items():
            if name not in wanted:
                continue
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
            else:
                live[name] = tool
        floor = live.get("floor")
        try:
            for r in range(self.args.cold_runs):
                self.log(f"cold round {r + 1}/{self.args.cold_runs}")
                if (
                    "cargo" in wanted
                    and self.from_clean(
                        cargo, "cargo-clean", "clean", "plain cargo: build from clean"
                    )
                    and r == 0
                ):
                    self.incremental(cargo)
                if floor and r == 0:
                    floor.start()
                    floor.mode, floor.link = "record", True  # type: ignore[attr-defined]
                    self.from_clean(
                        floor,
                        "floor-record",
                        "record",
                        "floor: recording run (plain compile + store outputs)",
                    )
                    floor.mode = "replay"  # type: ignore[attr-defined]
                for name in ("sccache", *DISTBUILDS):
                    label = tools[name].label
                    if (
                        name in live
                        and self.from_clean(
                            live[name],
                            f"{name}-cold",
                            "cold",
                            f"{label}: cold cache, from clean",
                            fresh=True,
                        )
                        and r == 0
                    ):
                        self.incremental(live[name])
                for name, what in COLD_ONLY.items():
                    if name in live:
                        try:
                            self.from_clean(
                                live[name],
                                f"{name}-cold",
                                "cold",
                                f"{what}: cold, from clean",
                                fresh=True,
                            )
                        finally:
                            live[name].stop()
            for r in range(self.args.runs):
                self.log(f"warm round {r + 1}/{self.args.runs}")
                if floor and "floor" not in self.broken:
                    for link in (True, False):
                        floor.link = link  # type: ignore[attr-defined]
                        how = "hard-link" if link else "copy"
                        self.from_clean(
                            floor,
                            f"floor-{how}",
                            "floor",
                            f"floor: {how} known outputs after cargo clean",
                        )
                    floor.link = True  # type: ignore[attr-defined]
                if "sccache" in live:
                    self.from_clean(
                        live["sccache"],
                        "sccache-warm",
                        "warm",
                        "sccache: warm cache after cargo clean",
                    )
                for name in DISTBUILDS:
                    if name in live:
                        self.warm_distbuild(live[name])
            if not self.args.no_micro:
                from bench_micro import run_micro

                self.log("micro-benchmarks")
                ok = {n: t for n, t in live.items() if n not in COLD_ONLY and n not in self.broken}
                self.micro = run_micro(self, ok)
        finally:
            for tool in tools.values():
                try:
                    tool.stop()
                except Exception as e:  # noqa: BLE001 - cleanup must go on for the others
                    self.log(f"stopping {tool.name}: {e}")


def host_info() -> dict[str, Any]:
    def first_line(cmd: list[str]) -> str:
        try:
            r = run_quiet(cmd)
        except OSError:
            return "not installed"
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
    p = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Benchmark cargo-distbuild against plain Cargo, sccache and a floor "
        "wrapper on one workspace; see docs/benchmarks.md.",
    )
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
    from bench_chart import write_chart
    from bench_report import markdown_summary, print_table, to_json

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
        (out / f"{stem}.md").write_text(markdown_summary(report))
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
