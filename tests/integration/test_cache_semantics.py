"""Cache semantics beyond the basic build: no rustc on a hit, failures, check builds, CAS CLI."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Distbuild

pytestmark = pytest.mark.slow


def _clean(ws: Path) -> None:
    subprocess.run(["cargo", "clean", "-q"], cwd=ws, check=True, timeout=60)


def test_no_rustc_process_on_a_hit(distbuild: Distbuild, workspace: Path, tmp_path: Path) -> None:
    """With a warm cache, a rustc that refuses to compile is never asked to: all hits."""
    real = subprocess.run(["rustup", "which", "rustc"], capture_output=True, text=True,
                          check=True).stdout.strip()
    marker = tmp_path / "compiled"
    fake = tmp_path / "bin" / "rustc"
    fake.parent.mkdir()
    # Answers version/print queries like the real rustc; any compilation leaves a mark and fails.
    fake.write_text(f"""#!/bin/sh
for a in "$@"; do
  case "$a" in -vV|-V|--version|--print*|-) exec {real} "$@";; esac
done
echo "$@" >> {marker}
exit 99
""")
    fake.chmod(0o755)
    distbuild.cargo("build", cwd=workspace)
    _clean(workspace)
    distbuild.zero()
    distbuild.cargo("build", cwd=workspace, env={"RUSTC": str(fake)})
    assert not marker.exists(), marker.read_text()
    stats = distbuild.stats()
    assert stats["cache_hits"] == stats["compile_requests"] == 8


def test_failed_compilation_is_not_cached(distbuild: Distbuild, workspace: Path) -> None:
    """A compile error fails the build every time; it is never served from the cache."""
    lib = workspace / "crates" / "warny" / "src" / "lib.rs"
    lib.write_text(lib.read_text() + "\npub fn broken() -> u32 { \"not a number\" }\n")
    serial = {"CARGO_BUILD_JOBS": "1"}  # so the failure stops the build at the same point
    first = distbuild.cargo("build", cwd=workspace, check=False, env=serial)
    assert first.returncode != 0 and "mismatched types" in first.stderr
    distbuild.zero()
    second = distbuild.cargo("build", cwd=workspace, check=False, env=serial)
    assert second.returncode != 0 and "mismatched types" in second.stderr
    stats = distbuild.stats()
    # Cargo retries only the broken crate: it must be compiled again, not served.
    assert (stats["compile_requests"], stats["cache_misses"], stats["cache_hits"]) == (1, 1, 0)


def test_check_builds_are_cached(distbuild: Distbuild, workspace: Path) -> None:
    """`cargo distbuild check` (metadata-only compiles) hits after a clean."""
    distbuild.cargo("check", cwd=workspace)
    _clean(workspace)
    distbuild.zero()
    proc = distbuild.cargo("check", cwd=workspace)
    stats = distbuild.stats()
    assert stats["cache_hits"] == stats["compile_requests"] > 0
    assert "unused variable" in proc.stderr


def test_cas_cli_roundtrip(distbuild: Distbuild, tmp_path: Path) -> None:
    """cas put prints the digest, get writes the bytes back, list/gc/verify report in JSON."""
    src = tmp_path / "blob.bin"
    src.write_bytes(os.urandom(4096))
    digest = distbuild.run("cas", "put", str(src)).stdout.strip()
    assert digest.endswith("/4096")
    out = tmp_path / "out.bin"
    distbuild.run("cas", "get", digest, str(out))
    assert out.read_bytes() == src.read_bytes()
    listed = json.loads(distbuild.run("cas", "list", "--json").stdout)
    assert digest in [b["digest"] for b in listed]
    gc = json.loads(distbuild.run("cas", "gc", "--max-size", "1", "--json").stdout)
    assert gc["removed"] == 1
    missing = distbuild.run("cas", "get", digest, str(tmp_path / "x"), check=False)
    assert missing.returncode == 1 and "not in" in missing.stderr
    bad = distbuild.run("cas", "get", "nothex/12", str(tmp_path / "y"), check=False)
    assert bad.returncode == 1 and "BLAKE3" in bad.stderr
