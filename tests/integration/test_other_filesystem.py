"""DISTBUILD_HOME on another filesystem than target/ (a tmpfs, a second disk, a bind mount)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from distbuild.cas.store import LocalCAS
from tests.conftest import Distbuild, copy_workspace, counting_rustc, crate_names, run_app
from tests.conftest import tmpfs_mount as mount

FULL_BUILD = 8


def test_copies_cross_filesystems(tmp_path: Path) -> None:
    """Storing a file from one filesystem into a CAS on a tmpfs, and copying it back out,
    work although copy_file_range refuses (EXDEV) between them."""
    with mount(tmp_path / "tmpfs", "64m") as fs:
        assert os.stat(fs).st_dev != os.stat(tmp_path).st_dev
        src = tmp_path / "big"
        src.write_bytes(os.urandom(5 << 20) + b"tail")
        cas = LocalCAS(fs / "cas")
        digest = cas.put_file(src)
        out = tmp_path / "out"
        cas.copy_to(digest, out)
        assert out.read_bytes() == src.read_bytes()
        assert cas.get_bytes(digest) == src.read_bytes()


@pytest.mark.slow
def test_cold_and_warm_build_with_the_cache_on_a_tmpfs(tmp_path: Path,
                                                       plain_app_output: str) -> None:
    """With DISTBUILD_HOME on a tmpfs and the workspace on the temp disk, a cold build compiles
    each crate exactly once (no retries, no fallbacks, no second rustc), and the build after
    `cargo clean` restores everything from the tmpfs."""
    with mount(tmp_path / "tmpfs") as fs:
        db = Distbuild(fs / "home")
        ws = copy_workspace(tmp_path / "ws")
        rustc, log = counting_rustc(tmp_path / "rustc")
        env = {"RUSTC": str(rustc)}
        try:
            db.cargo("build", cwd=ws, env=env)
            assert run_app(ws) == plain_app_output
            stats = db.stats()
            assert (stats["cache_misses"], stats["executed_local"], stats["fallbacks"]) == (
                FULL_BUILD, FULL_BUILD, 0), stats
            compiled = crate_names(log)
            assert len(compiled) == FULL_BUILD, compiled
            subprocess.run(["cargo", "clean", "-q"], cwd=ws, check=True, timeout=60)
            db.zero()
            db.cargo("build", cwd=ws, env=env)
            stats = db.stats()
            assert stats["cache_hits"] == stats["compile_requests"] == FULL_BUILD, stats
            assert len(crate_names(log)) == FULL_BUILD, "a hit ran rustc"
            assert run_app(ws) == plain_app_output
        finally:
            db.stop()
