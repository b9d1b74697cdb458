"""The terminal's width is presentation, not input: resizing or piping a build still hits."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Distbuild

pytestmark = pytest.mark.slow

FULL_BUILD = 8


def _build_in_terminal(distbuild: Distbuild, ws: Path, cols: int | None) -> str:
    """`cargo distbuild build -v` under a pseudo-terminal ``cols`` wide (None: piped)."""
    if cols is None:
        proc = subprocess.run(["cargo", "distbuild", "build", "-v"], cwd=ws, env=distbuild.env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stderr
    inner = f"stty cols {cols}; cargo distbuild build -v; echo exit=$?"
    proc = subprocess.run(["script", "-qec", inner, "/dev/null"], cwd=ws, env=distbuild.env,
                          capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL)
    assert "exit=0" in proc.stdout, proc.stdout + proc.stderr
    return proc.stdout


def test_other_terminal_width_and_piped_build_hit(distbuild: Distbuild,
                                                   workspace: Path) -> None:
    """A build at 100 columns, then one at 200 columns, then a piped one (no width at all),
    each after `cargo clean`: Cargo passes --diagnostic-width=100/200/nothing, and the second
    and third builds are all hits, with the warning still shown."""
    if shutil.which("script") is None:
        pytest.skip("`script` (util-linux) is not installed: no pseudo-terminal to test with")
    first = _build_in_terminal(distbuild, workspace, 100)
    assert "--diagnostic-width=100" in first, "cargo did not see a 100-column terminal"
    for cols in (200, None):
        subprocess.run(["cargo", "clean", "-q"], cwd=workspace, check=True, timeout=60)
        distbuild.zero()
        out = _build_in_terminal(distbuild, workspace, cols)
        if cols is not None:
            assert f"--diagnostic-width={cols}" in out
        else:
            assert "--diagnostic-width" not in out
        stats = distbuild.stats()
        assert (stats["cache_hits"], stats["compile_requests"]) == (FULL_BUILD, FULL_BUILD), (
            cols, stats, shlex.join(["tail", out[-2000:]]))
        assert "unused variable: `unused_fixture_variable`" in out
