"""``cargo distbuild build`` on a real BuildGrid farm, with our worker as the farm's bot.

The master is configured with ``[remote]`` only (no scheduler of ours): it negotiates SHA-256
with BuildGrid through Capabilities, sends every miss to BuildGrid's Execution service, and
BuildGrid leases it to the one bot it has, ``cargo-distbuild worker join``. A second machine
(a fresh DISTBUILD_HOME, the workspace checked out at another path) then builds the same
workspace and is answered from BuildGrid's action cache.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Distbuild, copy_workspace, run_app
from tests.integration.buildgrid import Bot, BuildGridFarm
from tests.integration.cluster import free_port

pytestmark = pytest.mark.slow


def _machine(tmp_path: Path, name: str, farm: BuildGridFarm) -> tuple[Distbuild, Path]:
    """A fresh DISTBUILD_HOME whose config names the farm, and a checkout of the fixture."""
    config = tmp_path / f"{name}.toml"
    config.write_text(f'[remote]\nendpoint = "{farm.addr}"\ninstance = "{farm.instance}"\n')
    db = Distbuild(tmp_path / f"{name}-home")
    db.env["DISTBUILD_CONFIG"] = str(config)
    return db, copy_workspace(tmp_path / name / "checkout" / "ws")


def _build(db: Distbuild, ws: Path) -> dict[str, Any]:
    try:
        db.cargo("build", cwd=ws)
        return db.stats()
    finally:
        db.stop()


def _leases(bot: Bot) -> int:
    return len(re.findall(r"lease \S+ done", bot.log()))


def test_fixture_misses_run_on_buildgrid_and_a_second_machine_hits_its_cache(
        buildgrid_farm: BuildGridFarm, tmp_path: Path, plain_app_output: str) -> None:
    """Machine A's misses all execute on BuildGrid's bot (none locally, no fallback) and its
    binary prints what plain Cargo's prints; machine B, another home and checkout path, gets
    every compile that A's bot ran from BuildGrid's action cache: its bot runs nothing new,
    and B's binary prints the same."""
    bot = Bot(buildgrid_farm, tmp_path, "bot-build", capacity=2)
    try:
        db_a, ws_a = _machine(tmp_path, "machine-a", buildgrid_farm)
        stats_a = _build(db_a, ws_a)
        assert stats_a["executed_remote"] > 0, stats_a
        assert stats_a["executed_local"] == 0, stats_a
        assert stats_a["fallbacks"] == 0, stats_a
        assert run_app(ws_a) == plain_app_output
        ran_for_a = _leases(bot)
        assert ran_for_a == stats_a["executed_remote"], bot.log()

        db_b, ws_b = _machine(tmp_path, "machine-b", buildgrid_farm)
        stats_b = _build(db_b, ws_b)
        assert stats_b["fallbacks"] == 0, stats_b
        assert stats_b["executed_local"] == 0, stats_b
        assert run_app(ws_b) == plain_app_output
        assert _leases(bot) == ran_for_a, "machine B's compiles ran again:\n" + bot.log()
    finally:
        assert bot.stop() == 0, bot.log()


def test_unreachable_farm_never_fails_the_build(tmp_path: Path, plain_app_output: str) -> None:
    """With ``[remote]`` naming a farm that does not answer, the build still succeeds, every
    compile runs here, and the binary prints what plain Cargo's prints."""
    config = tmp_path / "config.toml"
    config.write_text(f'[remote]\nendpoint = "127.0.0.1:{free_port()}"\n')
    db = Distbuild(tmp_path / "home")
    db.env["DISTBUILD_CONFIG"] = str(config)
    ws = copy_workspace(tmp_path / "ws")
    stats = _build(db, ws)
    assert stats["executed_remote"] == 0, stats
    assert stats["executed_local"] == stats["cache_misses"] > 0, stats
    assert run_app(ws) == plain_app_output
    assert "did not start" in (db.home / "master.log").read_text()
