"""Real WASI programs (C, compiled with Debian's clang for wasm32-wasi) on the wasm executor.

The issue's tests 1-3: identical output on two runs and two workers; loops and memory bombs
stopped by fuel, timeout and memory cap with the worker still healthy; no writes into inputs
and no reads outside the preopens.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from distbuild.cas.digest import Digest
from distbuild.cas.store import LocalCAS
from distbuild.config import Config
from distbuild.executors import ExecOutcome, ExecSpec
from distbuild.executors.wasm import WasmExecutor
from distbuild.executors.wasm_toolchain import find_wasi_cc

SOURCES = Path(__file__).resolve().parents[1] / "fixtures" / "wasm"
PROGRAMS = ("probe", "escape", "spin", "membomb")


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    cc = find_wasi_cc()
    if cc is None:
        pytest.skip("no wasm32-wasi C toolchain (run scripts/setup.d/wasi-toolchain.sh)")
    out = tmp_path_factory.mktemp("wasm-programs")
    return {name: cc.compile(SOURCES / f"{name}.c", out / f"{name}.wasm").read_bytes()
            for name in PROGRAMS}


@pytest.fixture
def cas(tmp_path: Path) -> LocalCAS:
    return LocalCAS(tmp_path / "cas")


def _executor(home: Path, cas: LocalCAS) -> WasmExecutor:
    cfg = Config(home=home)
    return WasmExecutor(replace(cfg, worker=replace(cfg.worker, memory_limit="256MiB",
                                                    wasm_fuel=10**10)), cas)


@pytest.fixture
def executor(tmp_path: Path, cas: LocalCAS) -> Iterator[WasmExecutor]:
    ex = _executor(tmp_path / "worker-1", cas)
    yield ex
    ex.close()


def _sandbox(root: Path, names: list[str], mtime: int) -> Path:
    """An input dir written in the given order with the given mtimes, and an output dir."""
    (root / "in").mkdir(parents=True)
    (root / "out").mkdir()
    for name in names:
        path = root / "in" / name
        path.write_text(f"content of {name}\n")
        os.utime(path, (mtime, mtime))
    return root


def _spec(module: Digest, *args: str, props: tuple[tuple[str, str], ...] = (),
          timeout_s: float = 30.0) -> ExecSpec:
    return ExecSpec(argv=("prog", *args), env=(("FOO", "bar"),), output_paths=("out/made.txt",),
                    timeout_s=timeout_s, properties=(("wasm_module", str(module)), *props))


def _run(ex: WasmExecutor, spec: ExecSpec, sandbox: Path) -> ExecOutcome:
    return ex.run(spec, sandbox, threading.Event())


def test_time_and_random_output_is_identical_on_two_runs_and_two_workers(
    programs: dict[str, bytes], cas: LocalCAS, executor: WasmExecutor, tmp_path: Path
) -> None:
    """Clocks, random bytes, directory order, inodes and file times do not leak host state."""
    module = cas.put_bytes(programs["probe"])
    names = ["zeta.txt", "alpha.txt", "mid.txt", "beta.txt"]
    first = _run(executor, _spec(module), _sandbox(tmp_path / "s1", names, 1_000_000))
    second = _run(executor, _spec(module), _sandbox(tmp_path / "s2", names[::-1], 2_000_000))
    other_worker = _executor(tmp_path / "worker-2", cas)
    try:
        third = _run(other_worker, _spec(module), _sandbox(tmp_path / "third", names[1:] +
                                                           names[:1], 3_000_000))
    finally:
        other_worker.close()
    assert first.exit_code == 0, first.stderr
    assert first.stdout == second.stdout == third.stdout
    text = first.stdout.decode()
    assert "time 1577836800.000000000 mono 1.000000000" in text
    listed = [line.split()[1] for line in text.splitlines() if line.startswith("entry ")]
    assert listed == [".", "..", "alpha.txt", "beta.txt", "mid.txt", "zeta.txt"]
    assert "mtime=1577836800 ctime=1577836800 nlink=1" in text
    assert "output mtime=1577836800" in text
    assert "env FOO=bar" in text
    assert first.extra["fuel_consumed"] == third.extra["fuel_consumed"]


def test_random_bytes_change_with_the_seed(programs: dict[str, bytes], cas: LocalCAS,
                                           executor: WasmExecutor, tmp_path: Path) -> None:
    """Another action digest (seed) gives other random bytes, same clocks."""
    module = cas.put_bytes(programs["probe"])
    a = _run(executor, _spec(module, props=(("wasm_seed", "01" * 32),)),
             _sandbox(tmp_path / "a", ["x"], 1))
    b = _run(executor, _spec(module, props=(("wasm_seed", "02" * 32),)),
             _sandbox(tmp_path / "b", ["x"], 1))
    random_a = [ln for ln in a.stdout.decode().splitlines() if ln.startswith("random")]
    random_b = [ln for ln in b.stdout.decode().splitlines() if ln.startswith("random")]
    assert random_a != random_b


def test_limits_stop_loops_and_memory_bombs_and_the_worker_goes_on(
    programs: dict[str, bytes], cas: LocalCAS, executor: WasmExecutor, tmp_path: Path
) -> None:
    """Fuel and timeout stop an endless loop, the cap stops a memory bomb; then a task runs."""
    spin, bomb = cas.put_bytes(programs["spin"]), cas.put_bytes(programs["membomb"])
    sandbox = _sandbox(tmp_path / "s", ["x"], 1)
    fuel = _run(executor, _spec(spin, props=(("wasm_fuel", "20000000"),)), sandbox)
    assert (fuel.failure, fuel.extra["fuel_consumed"]) == ("out of fuel", "20000000")
    timed = _run(executor, _spec(spin, props=(("wasm_fuel", str(10**15)),), timeout_s=0.5),
                 sandbox)
    assert timed.failure == "timed out"
    memory = _run(executor, _spec(bomb, props=(("wasm_memory", "32MiB"),)), sandbox)
    assert memory.failure == "memory limit"
    assert b"out of memory after" in memory.stderr
    after = _run(executor, _spec(cas.put_bytes(programs["probe"])), sandbox)
    assert (after.exit_code, after.failure) == (0, "")


def test_inputs_are_read_only_and_nothing_outside_the_preopens_is_reachable(
    programs: dict[str, bytes], cas: LocalCAS, executor: WasmExecutor, tmp_path: Path
) -> None:
    """Writes into the input dir fail, reads outside (/etc, .., a symlink out) fail."""
    sandbox = _sandbox(tmp_path / "s", ["data.txt"], 1)
    (sandbox / "in" / "link").symlink_to("/etc/passwd")
    outcome = _run(executor, _spec(cas.put_bytes(programs["escape"])), sandbox)
    results = dict(line.split() for line in outcome.stdout.decode().splitlines())
    expected = {name: "denied" for name in results}
    expected.update({"read-input": "ALLOWED", "write-output": "ALLOWED"})
    assert results == expected
    assert len(results) == 10
    assert (sandbox / "in" / "data.txt").read_text() == "content of data.txt\n"
    assert sorted(p.name for p in (sandbox / "in").iterdir()) == ["data.txt", "link"]


def test_a_large_directory_is_listed_whole_and_sorted(
    programs: dict[str, bytes], cas: LocalCAS, executor: WasmExecutor, tmp_path: Path
) -> None:
    """A listing bigger than wasi-libc's readdir buffer comes back complete, sorted, once each."""
    names = [f"file-{i * 7919 % 400:04d}-{'x' * 40}.txt" for i in range(400)]
    sandbox = _sandbox(tmp_path / "s", names, 1)
    outcome = _run(executor, _spec(cas.put_bytes(programs["probe"])), sandbox)
    listed = [line.split()[1] for line in outcome.stdout.decode().splitlines()
              if line.startswith("entry ")]
    assert listed == [".", ".."] + sorted(names)
    inodes = [line.split()[2] for line in outcome.stdout.decode().splitlines()
              if line.startswith("entry ") and ".txt" in line]
    assert len(set(inodes)) == 400
    assert inodes == sorted(inodes, key=lambda ino: int(ino.split("=")[1]))  # first-seen order
