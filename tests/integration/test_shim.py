"""The shim never breaks a build: fallbacks, DISTBUILD_DISABLE, passthrough.

Every test runs against both builds of the shim: the Python launcher (used when rustc cannot
build the other) and the compiled one, which ``cargo distbuild`` installs and ``scripts/setup``
puts on PATH as ``distbuild-wrap``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from distbuild.master.shim import install_launcher, native_shim
from tests.conftest import BIN_DIR, Distbuild, run_app


@pytest.fixture(params=["python", "compiled"])
def shim(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "python":
        launcher = tmp_path_factory.mktemp("shim") / "bin" / "distbuild-wrap"
        install_launcher(launcher)
        return str(launcher)
    native = native_shim()
    assert native is not None, "rustc could not build wrapper/distbuild_wrap.rs"
    return str(native)


def test_setup_puts_the_compiled_shim_on_path() -> None:
    """`RUSTC_WRAPPER=distbuild-wrap` by hand gets the fast shim, not pip's console script."""
    native = native_shim(build=False)
    assert native is not None, "scripts/setup did not build the compiled shim"
    assert (BIN_DIR / "distbuild-wrap").read_bytes() == native.read_bytes()


def _rustc() -> str:
    return subprocess.run(["rustup", "which", "rustc"], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_passthrough_version_query(distbuild: Distbuild, shim: str) -> None:
    """`distbuild-wrap rustc -vV` prints exactly what rustc prints."""
    direct = subprocess.run([_rustc(), "-vV"], capture_output=True, text=True, check=True)
    wrapped = subprocess.run([shim, _rustc(), "-vV"], capture_output=True, text=True,
                             env=distbuild.env, check=True, timeout=60)
    assert wrapped.stdout == direct.stdout
    assert distbuild.stats()["passthrough"] == 1


@pytest.mark.slow
def test_unreachable_master_falls_back_and_counts(distbuild: Distbuild, workspace: Path,
                                                  plain_app_output: str, shim: str) -> None:
    """When the master cannot start, every rustc runs directly and each fallback is counted."""
    env = {**distbuild.env, "RUSTC_WRAPPER": shim, "DISTBUILD_PYTHON": "/bin/false",
           "DISTBUILD_CONNECT_WAIT": "0.1"}
    subprocess.run(["cargo", "build", "-q"], cwd=workspace, env=env, check=True, timeout=600,
                   capture_output=True)
    assert run_app(workspace) == plain_app_output
    assert not (distbuild.home / "master.sock").exists()
    stats = distbuild.stats()  # read from disk: no master is running
    assert stats["fallbacks"] >= 8
    assert stats["compile_requests"] == 0


@pytest.mark.slow
def test_disable_bypasses_everything(distbuild: Distbuild, workspace: Path,
                                     plain_app_output: str, shim: str) -> None:
    """DISTBUILD_DISABLE=1: rustc runs directly, no master is started, nothing is counted."""
    env = {**distbuild.env, "RUSTC_WRAPPER": shim, "DISTBUILD_DISABLE": "1"}
    subprocess.run(["cargo", "build", "-q"], cwd=workspace, env=env, check=True, timeout=600,
                   capture_output=True)
    assert run_app(workspace) == plain_app_output
    assert not (distbuild.home / "master.sock").exists()
    assert not (distbuild.home / "fallbacks").exists()


@pytest.mark.parametrize("answer", [b"HTTP/1.1 500 nope\r\n\r\n", b"DBR1\xff\x00\x00\x00R",
                                    b""])
def test_garbage_from_master_means_fallback(tmp_path: Path, shim: str, answer: bytes) -> None:
    """A master that answers nonsense, a truncated reply or nothing (dies mid-request) is
    treated as unavailable: rustc runs, output intact, one fallback counted."""
    home = tmp_path / "home"
    home.mkdir()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(home / "master.sock"))
    server.listen(4)
    server.settimeout(30)

    def answer_garbage() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(1 << 16)
            conn.sendall(answer)

    t = threading.Thread(target=answer_garbage, daemon=True)
    t.start()
    env = {**os.environ, "DISTBUILD_HOME": str(home)}
    out = subprocess.run([shim, _rustc(), "-vV"], capture_output=True, text=True, env=env,
                         timeout=60, check=True)
    t.join(timeout=10)
    server.close()
    assert out.stdout.startswith("rustc ")
    assert (home / "fallbacks").read_bytes() == b"f"
