"""A frozen or cut-off scheduler does not stall a build: the master notices within seconds
(keepalive, first-reply bounds) and compiles locally, counting each fallback with its reason.

Two real ways a scheduler stops answering: its process is stopped (SIGSTOP: what a hung
process looks like to a client) and its network is cut (the scheduler and its worker run in a
network namespace of the test's own, whose link the test takes down: a black hole). In both,
the scheduler stays frozen or cut off until the build has finished, so a build that waited
for it could not pass.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CLI, Distbuild, compile_spans, copy_workspace, run_app, slow_rustc
from tests.integration.cluster import Cluster, stop_all, wait_for

pytestmark = pytest.mark.slow

FULL_BUILD = 8
CONFIG = """
[scheduler]
heartbeat_interval = 0.5
heartbeat_timeout = 30.0
max_attempts = 3
job_timeout = 300.0
unresponsive_timeout = 4.0
"""


def _build_while_frozen(tmp_path: Path, addr: str, config: Path,
                        freeze: Any, thaw: Any) -> tuple[dict[str, Any], str]:
    """A cold build of the fixture against ``addr``; once its first remote job has finished,
    ``freeze()``; ``thaw()`` only after the build ended. Returns (stats, build output)."""
    db = Distbuild(tmp_path / "client-home")
    db.env.update(DISTBUILD_SCHEDULER=addr, DISTBUILD_CONFIG=str(config))
    ws = copy_workspace(tmp_path / "ws")
    # Each compile takes a second more, so that several are still to come after the freeze.
    rustc, log = slow_rustc(tmp_path / "slow-rustc", pause=1)
    build = subprocess.Popen(["cargo", "distbuild", "build"], cwd=ws,
                             env={**db.env, "RUSTC": str(rustc)}, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    frozen = False
    try:
        wait_for("a first remote compile", lambda: db.stats()["executed_remote"] > 0
                 or build.poll() is not None, timeout=300, interval=0.2)
        assert build.poll() is None, "the build ended before the scheduler could be frozen"
        freeze()
        frozen = True
        frozen_at = time.monotonic()
        out, _ = build.communicate(timeout=400)
        print(f"the build ended {time.monotonic() - frozen_at:.1f} s after the freeze")
        # Still frozen: the build did not wait for the scheduler to come back.
        assert build.returncode == 0, out
        stats = db.stats()
    finally:
        if build.poll() is None:
            build.kill()
            build.wait()
        if frozen:
            thaw()
        db.stop()
    assert run_app(ws) == _plain_output(tmp_path)
    # (Remote compiles the frozen scheduler had handed out may still be running.)
    assert len(compile_spans(log, finished=False)) == FULL_BUILD
    return stats, out


def _plain_output(tmp_path: Path) -> str:
    """What the fixture's bin prints when built by plain cargo."""
    ws = copy_workspace(tmp_path / "plain")
    env = {k: v for k, v in os.environ.items() if k not in ("RUSTC_WRAPPER", "CARGO_TARGET_DIR")}
    subprocess.run(["cargo", "build", "-q"], cwd=ws, env=env, check=True, timeout=600,
                   capture_output=True)
    return run_app(ws)


def _assert_fell_back_for_silence(stats: dict[str, Any]) -> None:
    assert stats["cache_misses"] == FULL_BUILD, stats
    assert stats["executed_remote"] >= 1, stats
    assert stats["executed_local"] >= 1, stats
    reasons = stats["fallback_reasons"]
    assert reasons.get("unresponsive", 0) >= 1, stats
    assert stats["fallbacks"] == sum(reasons.values()), stats


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "cluster", config=CONFIG)
    yield c
    for proc in c.procs.values():  # never leave a stopped process behind
        proc.send_signal(signal.SIGCONT)
    c.stop()


def test_build_finishes_while_the_scheduler_is_stopped(tmp_path: Path,
                                                        cluster: Cluster) -> None:
    """SIGSTOP to the scheduler in the middle of a cold distributed build: the build finishes
    while it is still stopped; the compiles that were in flight or came after went local, each
    counted as a fallback for the reason "unresponsive"."""
    cluster.start_scheduler()
    cluster.start_worker("w1", capacity=2)
    scheduler = cluster.procs["scheduler"]
    stats, _ = _build_while_frozen(
        tmp_path, cluster.addr, cluster.config_path,
        freeze=lambda: scheduler.send_signal(signal.SIGSTOP),
        thaw=lambda: scheduler.send_signal(signal.SIGCONT))
    _assert_fell_back_for_silence(stats)


class Namespace:
    """A network namespace joined to ours by a veth pair, on a private /30."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:8]
        self.name = f"distbuild-{tag}"
        self.host_if, self.ns_if = f"db{tag}h", f"db{tag}n"
        octet = int(tag[:2], 16)  # 10.233.X.0/30: unlikely to meet another test's
        self.host_ip, self.ns_ip = f"10.233.{octet}.1", f"10.233.{octet}.2"
        self.created = False

    def _ip(self, *args: str, ns: bool = False) -> subprocess.CompletedProcess[str]:
        cmd = ["ip", "netns", "exec", self.name, "ip", *args] if ns else ["ip", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30)

    def create(self) -> None:
        if shutil.which("ip") is None:
            pytest.skip("iproute2 (`ip`) is not installed: cannot make a network namespace")
        made = self._ip("netns", "add", self.name)
        if made.returncode != 0:
            pytest.skip(f"network namespaces are refused here: {made.stderr.strip()}")
        self.created = True
        for args, ns in ((("link", "add", self.host_if, "type", "veth", "peer", "name",
                           self.ns_if), False),
                         (("link", "set", self.ns_if, "netns", self.name), False),
                         (("addr", "add", f"{self.host_ip}/30", "dev", self.host_if), False),
                         (("link", "set", self.host_if, "up"), False),
                         (("addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if), True),
                         (("link", "set", self.ns_if, "up"), True),
                         (("link", "set", "lo", "up"), True)):
            done = self._ip(*args, ns=ns)
            assert done.returncode == 0, f"ip {' '.join(args)}: {done.stderr}"

    def cut(self) -> None:
        """Take the namespace's end of the link down: packets to it vanish (a black hole),
        nothing is refused or reset."""
        done = self._ip("link", "set", self.ns_if, "down", ns=True)
        assert done.returncode == 0, done.stderr

    def mend(self) -> None:
        self._ip("link", "set", self.ns_if, "up", ns=True)

    def delete(self) -> None:
        if self.created:
            self._ip("netns", "delete", self.name)  # takes the veth pair with it


@pytest.fixture
def namespace() -> Iterator[Namespace]:
    ns = Namespace()
    try:
        ns.create()
        yield ns
    finally:
        ns.delete()


def test_build_finishes_when_the_scheduler_network_is_cut(tmp_path: Path,
                                                          namespace: Namespace) -> None:
    """The scheduler and its worker in a network namespace, the build outside: cutting the
    link mid-build (packets silently dropped) sends the rest of the build local within
    seconds, counted as "unresponsive" fallbacks, while the link is still down."""
    root = tmp_path / "cluster"
    root.mkdir()
    config = root / "config.toml"
    config.write_text(CONFIG)
    port = 7000 + int(namespace.host_ip.split(".")[2])
    addr = f"{namespace.ns_ip}:{port}"
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(name: str, *args: str) -> None:
        env = {**os.environ, "DISTBUILD_HOME": str(root / f"{name}-home"),
               "DISTBUILD_CONFIG": str(config)}
        env.pop("DISTBUILD_SCHEDULER", None)
        log = open(root / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
        procs.append(subprocess.Popen(["ip", "netns", "exec", namespace.name, CLI, "-v", *args],
                                      env=env, stdout=log, stderr=log,
                                      stdin=subprocess.DEVNULL))

    try:
        spawn("scheduler", "scheduler", "run", "--addr", f"0.0.0.0:{port}")
        spawn("w1", "worker", "run", "--id", "w1", "--capacity", "2", "--scheduler",
              f"127.0.0.1:{port}")
        wait_for("the worker to register", lambda: "w1" in _workers(addr, config),
                 timeout=60, interval=0.5)
        stats, _ = _build_while_frozen(tmp_path, addr, config, freeze=namespace.cut,
                                       thaw=namespace.mend)
    finally:
        stop_all(procs)
    _assert_fell_back_for_silence(stats)


def _workers(addr: str, config: Path) -> str:
    env = {**os.environ, "DISTBUILD_SCHEDULER": addr, "DISTBUILD_CONFIG": str(config)}
    proc = subprocess.run([CLI, "workers", "list", "--json"], env=env, capture_output=True,
                          text=True, timeout=30)
    return proc.stdout
