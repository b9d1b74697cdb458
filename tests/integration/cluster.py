"""Helpers for distributed tests: a scheduler and workers as real processes on loopback.

Every wait is bounded; processes are stopped by pid at the end (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tests.conftest import BIN_DIR, CLI

T = TypeVar("T")

FAST_CONFIG = """
[scheduler]
heartbeat_interval = 0.3
heartbeat_timeout = 2.0
max_attempts = 3
job_timeout = 300.0
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 30.0,
             interval: float = 0.1) -> T:
    """Poll ``probe`` until it returns something truthy, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - keep polling, report the last error
            last_error = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}"
                         + (f" (last error: {last_error})" if last_error else ""))


class Cluster:
    """A scheduler process plus worker processes sharing one config file."""

    def __init__(self, root: Path, config: str = FAST_CONFIG, token: str = "", tls_ca: str = ""):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.config_path = root / "config.toml"
        self.config_path.write_text(config)
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.token = token
        self.tls_ca = tls_ca
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def env(self, home: str, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(DISTBUILD_HOME=str(self.root / home), DISTBUILD_CONFIG=str(self.config_path),
                   DISTBUILD_SCHEDULER=self.addr,
                   PATH=f"{BIN_DIR}{os.pathsep}{env.get('PATH', '')}")
        env.pop("RUSTC_WRAPPER", None)
        if self.token:
            env["DISTBUILD_TOKEN"] = self.token
        else:
            env.pop("DISTBUILD_TOKEN", None)
        env.update(extra)
        return env

    def _spawn(self, name: str, args: list[str], home: str, **extra: str) -> None:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
        self.procs[name] = subprocess.Popen([CLI, "-v", *args], env=self.env(home, **extra),
                                            stdout=log, stderr=log, stdin=subprocess.DEVNULL)

    def start_scheduler(self) -> None:
        self._spawn("scheduler", ["scheduler", "run", "--addr", self.addr], "scheduler-home")
        wait_for("the scheduler to listen", lambda: self._connectable(), timeout=30)

    def start_worker(self, worker_id: str, capacity: int = 2, args: tuple[str, ...] = (),
                     **extra: str) -> None:
        self._spawn(worker_id, ["worker", "run", "--id", worker_id, "--capacity",
                                str(capacity), *args], f"{worker_id}-home", **extra)
        wait_for(f"worker {worker_id} to register",
                 lambda: any(w.worker_id == worker_id and w.state == "ALIVE"
                             for w in self.client().list_workers()), timeout=30)

    def _connectable(self) -> bool:
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def client(self) -> Any:
        from distbuild.config import AuthConfig, Config
        from distbuild.scheduler.client import SchedulerClient

        auth = AuthConfig(token=self.token, tls_ca=self.tls_ca)
        return SchedulerClient(self.addr, Config(home=self.root / "client", auth=auth),
                               client_id="test")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(sig)
        proc.wait(timeout=30)

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        stop_all(list(self.procs.values()))
        self.procs.clear()


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to every process, then wait for each, killing any still there after 10 s."""
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
