"""A normal (non-editable) install from a wheel gets the compiled shim, not only the Python one."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import REPO, copy_workspace

pytestmark = pytest.mark.slow


def _run(*args: str | Path, env: dict[str, str] | None = None,
         cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    # Never from the checkout, whose distbuild/ `python -c` would import first.
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600,
                          env=env, cwd=cwd or Path("/"))
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_wheel_in_a_fresh_venv_builds_the_compiled_shim(tmp_path: Path) -> None:
    """`pip wheel` of the checkout, installed into a fresh venv: the Rust source is in the
    package, `python -m distbuild.master.shim` builds the compiled shim, and `cargo distbuild
    build` runs Cargo with it (an ELF binary, not the Python launcher)."""
    wheels = tmp_path / "wheels"
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", wheels, REPO)
    wheel = next(wheels.glob("cargo_distbuild-*.whl"))
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv)
    # The dependencies (grpcio, wasmtime...) come from this environment, through a plain path
    # entry: its .pth files, the editable install's finder among them, are not processed.
    py = venv / "bin" / "python"
    site = _run(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout
    (Path(site.strip()) / "deps-from-test-env.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n")
    _run(py, "-m", "pip", "install", "--no-deps", "--no-index", "-q", wheel)
    where = _run(py, "-c", "import distbuild; print(distbuild.__file__)").stdout
    assert where.startswith(str(venv)), f"distbuild imported from {where}, not the wheel"

    built = _run(py, "-m", "distbuild.master.shim").stdout
    assert built.startswith("compiled shim: ") and "not built" not in built, built

    home = tmp_path / "home"
    ws = copy_workspace(tmp_path / "ws")
    env = {k: v for k, v in os.environ.items() if k not in ("RUSTC_WRAPPER", "CARGO_TARGET_DIR")}
    env.update(DISTBUILD_HOME=str(home), PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}")
    try:
        _run("cargo", "distbuild", "build", env=env, cwd=ws)
        shim = home / "bin" / "distbuild-wrap"
        assert shim.read_bytes()[:4] == b"\x7fELF", "Cargo was given the Python shim"
        stats = _run(venv / "bin" / "cargo-distbuild", "stats", "--json", env=env).stdout
        assert '"cache_misses": 8' in stats, stats
    finally:
        subprocess.run([venv / "bin" / "cargo-distbuild", "master", "stop"], env=env,
                       capture_output=True, timeout=60)
