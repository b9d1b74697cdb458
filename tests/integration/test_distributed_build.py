"""Issue 3, tests 1, 2 and 7: fixture builds through the cluster (real cargo, real processes)."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CLI, Distbuild, copy_workspace, run_app
from tests.integration.cluster import Cluster, free_port, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "cluster")
    yield c
    c.stop()


def _build(db: Distbuild, ws: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """One `cargo distbuild build` of ``ws``; stops the master and returns its stats."""
    try:
        db.cargo("build", cwd=ws, env=env)
        return db.stats()
    finally:
        db.stop()


def _client_home(tmp_path: Path, cluster: Cluster) -> Distbuild:
    db = Distbuild(tmp_path / "client-home")
    db.env.update(DISTBUILD_SCHEDULER=cluster.addr, DISTBUILD_CONFIG=str(cluster.config_path))
    return db


def test_fixture_built_fully_remote_on_two_workers(tmp_path: Path, cluster: Cluster,
                                                   plain_app_output: str) -> None:
    """Every miss runs on the cluster, the bin prints what plain cargo's prints, and both
    workers got jobs."""
    cluster.start_scheduler()
    cluster.start_worker("w1", capacity=2)
    cluster.start_worker("w2", capacity=2)
    ws = copy_workspace(tmp_path / "ws")
    db = _client_home(tmp_path, cluster)
    stats = _build(db, ws)
    assert stats["executed_remote"] > 0, stats
    assert stats["executed_local"] == 0, stats
    assert stats["fallbacks"] == 0, stats
    assert run_app(ws) == plain_app_output
    jobs = cluster.client().list_jobs()
    assert {j.state for j in jobs} == {"COMPLETED"}
    assert {j.worker_id for j in jobs} == {"w1", "w2"}


def test_worker_killed_mid_build(tmp_path: Path, cluster: Cluster,
                                 plain_app_output: str) -> None:
    """SIGKILL a worker while it runs jobs: the build succeeds, its jobs ran on the other
    worker, and the killed worker is listed as lost."""
    # A rustc that is slow only inside w1's sandboxes, so w1 is surely busy when killed.
    slow = tmp_path / "slow-rustc"
    real = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True, text=True,
                          check=True).stdout.strip() + "/bin/rustc"
    slow.write_text(f'#!/bin/sh\ncase "$PWD" in */w1-home/*) sleep 4;; esac\n'
                    f'exec {real} "$@"\n')
    slow.chmod(0o755)
    cluster.start_scheduler()
    cluster.start_worker("w1", capacity=4)
    ws = copy_workspace(tmp_path / "ws")
    db = _client_home(tmp_path, cluster)
    build = subprocess.Popen(["cargo", "distbuild", "build"], cwd=ws,
                             env={**db.env, "RUSTC": str(slow)}, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
    try:
        client = cluster.client()
        wait_for("a job running on w1",
                 lambda: any(j.state == "RUNNING" and j.worker_id == "w1"
                             for j in client.list_jobs()), timeout=120)
        cluster.start_worker("w2", capacity=4)
        cluster.kill("w1", signal.SIGKILL)
        out, _ = build.communicate(timeout=300)
        assert build.returncode == 0, out.decode(errors="replace")
        stats = db.stats()
    finally:
        if build.poll() is None:
            build.kill()
            build.wait(timeout=30)
        db.stop()
    assert run_app(ws) == plain_app_output
    listed = json.loads(subprocess.run(
        [CLI, "workers", "list", "--json"], env=cluster.env("cli-home"), capture_output=True,
        text=True, check=True, timeout=60).stdout)
    assert {w["worker_id"]: w["state"] for w in listed} == {"w1": "LOST", "w2": "ALIVE"}
    jobs = client.list_jobs()
    retried = [j for j in jobs if j.attempts >= 2]
    assert retried, [(j.job_id, j.worker_id, j.attempts) for j in jobs]
    assert all(j.state == "COMPLETED" and j.worker_id == "w2" for j in retried)
    assert stats["executed_remote"] > 0, stats


def test_scheduler_unreachable_falls_back_locally(tmp_path: Path, plain_app_output: str) -> None:
    """With the configured scheduler down, the build completes locally and counts fallbacks."""
    ws = copy_workspace(tmp_path / "ws")
    db = Distbuild(tmp_path / "client-home")
    db.env["DISTBUILD_SCHEDULER"] = f"127.0.0.1:{free_port()}"  # nothing listens there
    stats = _build(db, ws)
    assert run_app(ws) == plain_app_output
    assert stats["executed_remote"] == 0, stats
    assert stats["executed_local"] > 0, stats
    assert stats["fallbacks"] == stats["executed_local"], stats


def test_no_suitable_worker_falls_back(tmp_path: Path, cluster: Cluster,
                                       plain_app_output: str) -> None:
    """A reachable scheduler with no worker at all: compiled locally, fallbacks counted."""
    cluster.start_scheduler()
    ws = copy_workspace(tmp_path / "ws")
    db = _client_home(tmp_path, cluster)
    stats = _build(db, ws)
    assert run_app(ws) == plain_app_output
    assert stats["executed_remote"] == 0, stats
    assert stats["fallbacks"] > 0, stats


def _embedded_dir(db: Distbuild) -> Path:
    """The embedded cluster's state (one directory per configuration served; one here)."""
    (found,) = (db.home / "embedded").iterdir()
    return found


def _embedded_jobs(db: Distbuild) -> list[tuple[str, str]]:
    """(state, worker) of every job the master's embedded scheduler ran."""
    state = sqlite3.connect(str(_embedded_dir(db) / "state.db"))
    try:
        return state.execute("SELECT state, worker_id FROM jobs").fetchall()
    finally:
        state.close()


def _sandboxed(db: Distbuild) -> Distbuild:
    db.home.mkdir(parents=True, exist_ok=True)
    (db.home / "config.toml").write_text('[master]\nexecution = "sandboxed"\n')
    return db


def test_embedded_cluster_builds_fixture_in_place(tmp_path: Path,
                                                  plain_app_output: str) -> None:
    """With no scheduler configured (the default), every miss goes through the in-process
    scheduler and local worker, which compiles in place: incremental state is kept, the bin
    is right, and nothing was sandboxed."""
    ws = copy_workspace(tmp_path / "ws")
    db = Distbuild(tmp_path / "client-home")
    stats = _build(db, ws)
    assert run_app(ws) == plain_app_output
    # The embedded worker is on this machine: its runs count as local.
    assert stats["executed_local"] == stats["cache_misses"] == 8, stats
    assert stats["executed_remote"] == 0 and stats["fallbacks"] == 0, stats
    rows = _embedded_jobs(db)
    assert sorted(set(rows)) == [("COMPLETED", "embedded")] and len(rows) == 8, rows
    assert len(list((ws / "target" / "debug" / "incremental").iterdir())) >= 6
    assert list((_embedded_dir(db) / "worker" / "sandboxes").iterdir()) == []


def test_sandboxed_embedded_cluster_builds_fixture(tmp_path: Path,
                                                   plain_app_output: str) -> None:
    """execution = "sandboxed": every miss without incremental state is materialized into a
    sandbox on the embedded worker, as on a cluster, and the bin is right."""
    ws = copy_workspace(tmp_path / "ws")
    db = _sandboxed(Distbuild(tmp_path / "client-home"))
    # Incremental compiles (workspace members in the dev profile) run in place; without
    # incremental every miss takes the embedded scheduler's path.
    stats = _build(db, ws, env={"CARGO_INCREMENTAL": "0"})
    assert run_app(ws) == plain_app_output
    assert stats["executed_local"] == stats["cache_misses"] == 8, stats
    assert stats["executed_remote"] == 0 and stats["fallbacks"] == 0, stats
    rows = _embedded_jobs(db)
    assert sorted(set(rows)) == [("COMPLETED", "embedded")] and len(rows) == 8, rows


def test_sandboxed_keeps_incremental_compiles_in_place(tmp_path: Path,
                                                       plain_app_output: str) -> None:
    """execution = "sandboxed": workspace members compiled with -C incremental bypass the
    sandbox (it would throw their state away) and keep their state."""
    ws = copy_workspace(tmp_path / "ws")
    db = _sandboxed(Distbuild(tmp_path / "client-home"))
    stats = _build(db, ws)
    assert run_app(ws) == plain_app_output
    assert stats["executed_local"] == 8, stats
    assert _embedded_jobs(db) == []
    assert len(list((ws / "target" / "debug" / "incremental").iterdir())) >= 6


def _two_member_workspace(root: Path) -> Path:
    """`inside` reads a data file of its own package; `outside` one beside the workspace."""
    root.mkdir(parents=True)
    (root / "Cargo.toml").write_text(
        '[workspace]\nresolver = "2"\nmembers = ["inside", "outside"]\n')
    (root / "NOTICE.txt").write_text("notice v1")
    for name, path in (("inside", "../data.txt"), ("outside", "../../NOTICE.txt")):
        src = root / name / "src"
        src.mkdir(parents=True)
        (root / name / "Cargo.toml").write_text(
            f'[package]\nname = "{name}"\nversion = "0.1.0"\nedition = "2021"\n')
        (root / name / "data.txt").write_text(f"{name} data")
        (src / "main.rs").write_text(f'fn main() {{ print!("{{}}", include_str!("{path}")); }}\n')
    return root


def test_sandboxed_compiles_in_place_what_reads_outside_its_package(tmp_path: Path) -> None:
    """A sandbox holds the crate's package; a crate that reads a file beyond it fails there
    on the missing file, compiles in place instead (one fallback), and the file it read is in
    its manifest: changing it misses and rebuilds."""
    ws = _two_member_workspace(tmp_path / "ws")
    db = _sandboxed(Distbuild(tmp_path / "client-home"))
    no_incremental = {"CARGO_INCREMENTAL": "0"}  # so members take the embedded path

    def output(name: str) -> str:
        return subprocess.run([str(ws / "target" / "debug" / name)], capture_output=True,
                              text=True, check=True, timeout=30).stdout

    try:
        db.cargo("build", cwd=ws, env=no_incremental)
        first = db.stats()
        assert (output("inside"), output("outside")) == ("inside data", "notice v1")
        (ws / "NOTICE.txt").write_text("notice v2")
        db.zero()
        db.cargo("build", cwd=ws, env=no_incremental)
        second = db.stats()
    finally:
        db.stop()
    assert (first["cache_misses"], first["executed_local"], first["fallbacks"]) == (2, 2, 1)
    assert output("outside") == "notice v2"
    assert (second["cache_misses"], second["fallbacks"]) == (1, 1), second
