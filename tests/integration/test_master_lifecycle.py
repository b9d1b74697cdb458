"""A master that cannot start costs no time; a running one serves the configuration asked for."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Distbuild, copy_workspace, run_app
from tests.integration.cluster import Cluster

pytestmark = pytest.mark.slow

FULL_BUILD = 8


def _start_attempts(home: Path) -> int:
    """How many masters tried to start and failed, from master.log."""
    log = (home / "master.log").read_text(errors="replace")
    return len(re.findall(r"^Traceback|could not start", log, re.MULTILINE))


def _plain_cargo_build(db: Distbuild, ws: Path, **env: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["cargo", "build"], cwd=ws, capture_output=True, text=True,
                          timeout=600, env={**db.env, "RUSTC_WRAPPER": "distbuild-wrap", **env})
    assert proc.returncode == 0, proc.stderr
    return proc


def test_broken_config_costs_one_start_not_one_per_rustc(tmp_path: Path,
                                                         plain_app_output: str) -> None:
    """RUSTC_WRAPPER=distbuild-wrap with a config the master refuses: the first shim sees its
    master exit and runs rustc; the next ones do not start another, each falling back at once
    (before, each waited 10 s for a master that never came). The reason is recorded."""
    db = Distbuild(tmp_path / "home")
    db.home.mkdir()
    (db.home / "config.toml").write_text('[master]\nexecution = "turbo"\n')
    ws = copy_workspace(tmp_path / "ws")
    _plain_cargo_build(db, ws)
    assert run_app(ws) == plain_app_output
    assert _start_attempts(db.home) <= 2, (db.home / "master.log").read_text()
    assert "execution must be one of" in (db.home / "master.failed").read_text()
    assert (db.home / "fallbacks").stat().st_size >= FULL_BUILD


def test_cargo_distbuild_prints_why_the_master_did_not_start(tmp_path: Path,
                                                             plain_app_output: str) -> None:
    """A master that dies at start (here its lock file is a directory): `cargo distbuild build`
    says why at once (not "did not start within 15 s"), and the build succeeds on plain rustc
    without a start attempt per invocation."""
    db = Distbuild(tmp_path / "home")
    (db.home / "master.lock").mkdir(parents=True)
    ws = copy_workspace(tmp_path / "ws")
    proc = db.cargo("build", cwd=ws)
    assert "the master could not start: IsADirectoryError" in proc.stderr, proc.stderr
    assert "did not start within" not in proc.stderr
    assert "master.lock" in proc.stderr
    assert run_app(ws) == plain_app_output
    assert _start_attempts(db.home) <= 2, (db.home / "master.log").read_text()
    assert re.search(r"fallbacks\s+(\d+)", proc.stderr), proc.stderr


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "cluster")
    yield c
    c.stop()


def _status(db: Distbuild, **env: str) -> dict[str, object]:
    data: dict[str, object] = json.loads(db.run("master", "status", "--json", env=env).stdout)
    return data


def test_running_master_follows_scheduler_and_config_changes(
        tmp_path: Path, cluster: Cluster, plain_app_output: str) -> None:
    """A master started for a local build, then a build whose shell sets DISTBUILD_SCHEDULER
    (by hand, RUSTC_WRAPPER): its misses run on that cluster, not in the old mode; then the
    config file changes to execution = "direct" and the next build is served so. `master
    status` says which mode and scheduler each configuration uses."""
    cluster.start_scheduler()
    cluster.start_worker("w1", capacity=2)
    db = Distbuild(tmp_path / "home")
    ws = copy_workspace(tmp_path / "ws")
    try:
        _plain_cargo_build(db, ws)
        local = db.stats()
        assert (local["executed_local"], local["executed_remote"]) == (FULL_BUILD, 0), local
        first = _status(db)
        assert [c["execution"] for c in first["configs"]] == ["embedded"], first  # type: ignore

        remote_env = {"DISTBUILD_SCHEDULER": cluster.addr,
                      "DISTBUILD_CONFIG": str(cluster.config_path)}
        db.zero()
        _plain_cargo_build(db, copy_workspace(tmp_path / "ws2"),
                           RUSTFLAGS="--cfg distbuild_other", **remote_env)
        remote = db.stats()
        assert remote["executed_remote"] > 0 and remote["fallbacks"] == 0, remote
        assert {j.state for j in cluster.client().list_jobs()} == {"COMPLETED"}
        status = _status(db, **remote_env)
        newest = status["configs"][0]  # type: ignore[index]
        assert (newest["execution"], newest["scheduler"]) == ("remote", cluster.addr), status
        assert status["this_shell"]["identity"] == newest["identity"]  # type: ignore[index]

        (db.home / "config.toml").write_text('[master]\nexecution = "direct"\n')
        ws3 = copy_workspace(tmp_path / "ws3")
        _plain_cargo_build(db, ws3, RUSTFLAGS="--cfg distbuild_third")
        assert run_app(ws3) == plain_app_output
        newest = _status(db)["configs"][0]  # type: ignore[index]
        assert newest["execution"] == "direct", newest
        assert newest["identity"] != first["configs"][0]["identity"]  # type: ignore[index]
    finally:
        db.stop()
