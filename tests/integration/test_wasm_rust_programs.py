"""A Rust 1.63 WASI program (Debian's rustc, unpacked by scripts/setup.d/wasi-toolchain.sh)
behaves deterministically: clocks, HashMap order (seeded from random_get), read_dir, mtimes."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from distbuild.cas.store import LocalCAS
from distbuild.config import Config
from distbuild.executors import ExecSpec
from distbuild.executors.wasm import WasmExecutor
from distbuild.executors.wasm_toolchain import find_wasi_rustc

SOURCES = Path(__file__).resolve().parents[1] / "fixtures" / "wasm"


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    rustc = find_wasi_rustc()
    if rustc is None:
        pytest.skip("no Rust wasm32-wasi toolchain in build/wasi-rust "
                    "(run scripts/setup.d/wasi-toolchain.sh)")
    out = tmp_path_factory.mktemp("rust")
    return rustc.compile(SOURCES / "probe.rs", out / "probe.wasm").read_bytes()


def _sandbox(root: Path, names: list[str], mtime: int) -> Path:
    (root / "in").mkdir(parents=True)
    for name in names:
        (root / "in" / name).write_text(name)
        os.utime(root / "in" / name, (mtime, mtime))
    return root


def test_rust_program_is_deterministic_across_runs_and_workers(probe: bytes,
                                                               tmp_path: Path) -> None:
    """Two executors (two workers), two sandboxes written differently: identical stdout."""
    cas = LocalCAS(tmp_path / "cas")
    spec = ExecSpec(argv=("probe", "x"), output_paths=("out/made.txt",), timeout_s=60.0,
                    properties=(("wasm_module", str(cas.put_bytes(probe))),))
    outs = []
    for i, names in enumerate((["c.txt", "a.txt", "b.txt"], ["b.txt", "c.txt", "a.txt"])):
        ex = WasmExecutor(Config(home=tmp_path / f"worker-{i}"), cas)
        try:
            outs.append(ex.run(spec, _sandbox(tmp_path / f"s{i}", names, 1000 + i),
                               threading.Event()))
        finally:
            ex.close()
    assert outs[0].exit_code == 0, outs[0].stderr
    assert outs[0].stdout == outs[1].stdout
    text = outs[0].stdout.decode()
    assert "time 1577836800 elapsed 0ns" in text
    assert 'read_dir [".", ".."' not in text  # std skips them; the rest is sorted:
    assert 'read_dir ["a.txt", "b.txt", "c.txt"]' in text
    assert "read /etc/passwd: false" in text
    assert (tmp_path / "s0" / "out" / "made.txt").read_text() == '["probe", "x"]\n'
