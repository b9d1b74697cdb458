"""End-to-end behaviour of the cache on real cargo builds of the fixture workspace."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import Distbuild, copy_workspace, run_app

pytestmark = pytest.mark.slow

# Compilations in one full build of the fixture: base, mid, macros, gen (lib + build script),
# warny, cdy, app.
FULL_BUILD = 8


def _clean(ws: Path) -> None:
    subprocess.run(["cargo", "clean", "-q"], cwd=ws, check=True, timeout=60)


def test_bin_output_matches_plain_cargo(distbuild: Distbuild, workspace: Path,
                                        plain_app_output: str) -> None:
    """Built through the wrapper, the bin prints exactly what a plain cargo build's bin prints."""
    distbuild.cargo("build", cwd=workspace)
    assert run_app(workspace) == plain_app_output
    stats = distbuild.stats()
    assert stats["compile_requests"] == FULL_BUILD
    assert stats["cache_misses"] == FULL_BUILD
    assert stats["executed_local"] == FULL_BUILD
    cdylib = workspace / "target" / "debug" / "libfixture_cdy.so"
    symbols = subprocess.run(["nm", "-D", str(cdylib)], capture_output=True, text=True).stdout
    assert "fixture_cdy_answer" in symbols


def test_rebuild_after_clean_is_all_hits_and_keeps_warning(
        distbuild: Distbuild, workspace: Path, plain_app_output: str) -> None:
    """After `cargo clean`, every compilation is a hit and the warning is still shown."""
    distbuild.cargo("build", cwd=workspace)
    _clean(workspace)
    distbuild.zero()
    second = distbuild.cargo("build", cwd=workspace)
    stats = distbuild.stats()
    assert (stats["compile_requests"], stats["cache_hits"], stats["cache_misses"]) == (
        FULL_BUILD, FULL_BUILD, 0)
    assert stats["executed_local"] == 0
    assert "unused variable: `unused_fixture_variable`" in second.stderr
    assert "crates/warny/src/lib.rs:3:9" in second.stderr
    assert run_app(workspace) == plain_app_output
    # Cargo considers the restored target/ fresh: a third build compiles nothing.
    distbuild.zero()
    distbuild.cargo("build", cwd=workspace)
    assert distbuild.stats()["compile_requests"] == 0


def test_other_checkout_path_hits(distbuild: Distbuild, workspace: Path, tmp_path: Path,
                                  plain_app_output: str) -> None:
    """The same workspace copied elsewhere hits everything; outputs name the new location."""
    distbuild.cargo("build", cwd=workspace)
    other = copy_workspace(tmp_path / "elsewhere" / "checkout")
    distbuild.zero()
    distbuild.cargo("build", cwd=other)
    stats = distbuild.stats()
    assert stats["cache_hits"] == stats["compile_requests"] == FULL_BUILD
    assert run_app(other) == plain_app_output
    dep_info = next((other / "target" / "debug" / "deps").glob("fixture_gen-*.d")).read_text()
    assert str(other) in dep_info and str(workspace) not in dep_info
    assert "@@" not in dep_info


def test_edit_misses_exactly_the_crate_and_dependents(distbuild: Distbuild,
                                                      workspace: Path) -> None:
    """Editing fixture-base misses base, mid and app; the rest hit; the output changes."""
    distbuild.cargo("build", cwd=workspace)
    lib = workspace / "crates" / "base" / "src" / "lib.rs"
    original = lib.read_text()
    lib.write_text(original.replace("    40\n", "    41\n"))
    _clean(workspace)
    distbuild.zero()
    distbuild.cargo("build", cwd=workspace)
    stats = distbuild.stats()
    assert stats["cache_misses"] == 3, stats
    assert stats["cache_hits"] == FULL_BUILD - 3
    assert "base=41\n" in run_app(workspace) and "mid=43\n" in run_app(workspace)
    # Reverting the edit brings every old entry back.
    lib.write_text(original)
    _clean(workspace)
    distbuild.zero()
    distbuild.cargo("build", cwd=workspace)
    assert distbuild.stats()["cache_misses"] == 0


@pytest.mark.parametrize(
    ("change", "expected_misses"),
    [("feature", 3), ("rustflags", FULL_BUILD), ("build-input", 2)],
)
def test_changes_miss_what_they_must(distbuild: Distbuild, workspace: Path, change: str,
                                     expected_misses: int) -> None:
    """A feature, RUSTFLAGS or the build script's input file miss the crates they affect."""
    distbuild.cargo("build", cwd=workspace)
    _clean(workspace)
    distbuild.zero()
    args: list[str] = ["build"]
    env: dict[str, str] = {}
    if change == "feature":
        args += ["--features", "fixture-app/fancy"]
    elif change == "rustflags":
        env["RUSTFLAGS"] = "--cfg distbuild_test_flag"
    else:
        (workspace / "crates" / "gen" / "input.txt").write_text("changed-greeting\n")
    distbuild.cargo(*args, cwd=workspace, env=env)
    stats = distbuild.stats()
    assert stats["cache_misses"] == expected_misses, stats
    assert stats["cache_hits"] == FULL_BUILD - expected_misses
    out = run_app(workspace)
    if change == "feature":
        assert "style=fancy" in out
    if change == "build-input":
        assert "greeting=changed-greeting" in out
    # The same change built again from clean is now all hits.
    _clean(workspace)
    distbuild.zero()
    distbuild.cargo(*args, cwd=workspace, env=env)
    assert distbuild.stats()["cache_misses"] == 0


def test_corrupt_blob_is_detected_and_build_succeeds(distbuild: Distbuild, workspace: Path,
                                                     plain_app_output: str) -> None:
    """Flipping bytes in the largest CAS blob: detected, never served, output still right."""
    distbuild.cargo("build", cwd=workspace)
    blobs = [p for p in (distbuild.home / "cas" / "blobs").rglob("*") if p.is_file()]
    victim = max(blobs, key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    _clean(workspace)
    distbuild.zero()
    distbuild.cargo("build", cwd=workspace)
    stats = distbuild.stats()
    assert stats["corrupt_blobs"] >= 1
    assert stats["cache_misses"] >= 1
    assert run_app(workspace) == plain_app_output
    verify = distbuild.run("cas", "verify", "--json")
    assert '"corrupt": []' in verify.stdout


def test_master_killed_mid_build(distbuild: Distbuild, workspace: Path,
                                 plain_app_output: str) -> None:
    """SIGKILL to the master during a build: the build still succeeds with correct output."""
    distbuild.run("master", "start")
    old_pid = int((distbuild.home / "master.pid").read_text())
    env = {**distbuild.env, "CARGO_BUILD_JOBS": "1"}
    build = subprocess.Popen(["cargo", "distbuild", "build"], cwd=workspace, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deps = workspace / "target" / "debug" / "deps"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(deps.glob("*.rlib")) and build.poll() is None:
        time.sleep(0.01)
    assert build.poll() is None, "the build finished before the master could be killed"
    os.kill(old_pid, signal.SIGKILL)
    out, _ = build.communicate(timeout=600)
    assert build.returncode == 0, out
    assert run_app(workspace) == plain_app_output
    stats = distbuild.stats()
    new_pid = int((distbuild.home / "master.pid").read_text())
    assert stats["fallbacks"] > 0 or new_pid != old_pid


def test_two_builds_share_one_cache_concurrently(distbuild: Distbuild, tmp_path: Path,
                                                 plain_app_output: str) -> None:
    """Two different workspaces built at once against one cache are both correct."""
    a = copy_workspace(tmp_path / "a")
    b = copy_workspace(tmp_path / "b")
    (b / "crates" / "gen" / "input.txt").write_text("greeting-b\n")
    procs = [subprocess.Popen(["cargo", "distbuild", "build"], cwd=ws, env=distbuild.env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for ws in (a, b)]
    for p in procs:
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, out
    assert run_app(a) == plain_app_output
    assert run_app(b) == plain_app_output.replace("generated-greeting", "greeting-b")


def test_cargo_distbuild_test_runs_unit_tests(distbuild: Distbuild, workspace: Path) -> None:
    """`cargo distbuild test` builds test harnesses through the wrapper and runs them."""
    first = distbuild.cargo("test", cwd=workspace)
    assert "test tests::base_value_is_forty ... ok" in first.stdout
    assert "test tests::derive_works ... ok" in first.stdout
    assert distbuild.stats()["executed_local"] > 0
    _clean(workspace)
    distbuild.zero()
    second = distbuild.cargo("test", cwd=workspace)
    assert "test tests::mid_adds_two ... ok" in second.stdout
    stats = distbuild.stats()
    assert stats["cache_hits"] == stats["compile_requests"] > 0


def test_workspace_only_wrapper(distbuild: Distbuild, workspace: Path,
                                plain_app_output: str) -> None:
    """--workspace-only sets RUSTC_WORKSPACE_WRAPPER; members are cached all the same."""
    distbuild.cargo("build", "--workspace-only", cwd=workspace)
    _clean(workspace)
    distbuild.zero()
    distbuild.cargo("build", "--workspace-only", cwd=workspace)
    stats = distbuild.stats()
    assert stats["cache_hits"] == stats["compile_requests"] == FULL_BUILD
    assert run_app(workspace) == plain_app_output


def test_rustc_wrapper_env_var_directly(distbuild: Distbuild, workspace: Path) -> None:
    """Setting RUSTC_WRAPPER=distbuild-wrap by hand works like `cargo distbuild build`."""
    env = {**distbuild.env, "RUSTC_WRAPPER": "distbuild-wrap"}
    subprocess.run(["cargo", "build", "-q"], cwd=workspace, env=env, check=True, timeout=600,
                   capture_output=True)
    _clean(workspace)
    distbuild.zero()
    subprocess.run(["cargo", "build", "-q"], cwd=workspace, env=env, check=True, timeout=600,
                   capture_output=True)
    stats = distbuild.stats()
    assert stats["cache_hits"] == stats["compile_requests"] == FULL_BUILD
    shutil.rmtree(workspace / "target")
