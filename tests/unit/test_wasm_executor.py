"""WasmExecutor on hand-written WAT programs: determinism, limits, exit codes, module cache."""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from distbuild.cas.digest import Digest
from distbuild.cas.store import LocalCAS
from distbuild.config import Config
from distbuild.executors import ExecOutcome, ExecSpec, make_executor
from distbuild.executors.wasm import WasmExecutor
from distbuild.executors.wasm_toolchain import wat_to_wasm
from distbuild.executors.wasm_wasi import FIXED_MONOTONIC_NS, FIXED_REALTIME_NS

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "wasm"


def _cfg(home: Path) -> Config:
    cfg = Config(home=home)
    return replace(cfg, worker=replace(cfg.worker, memory_limit="64MiB", wasm_fuel=10**9))


@pytest.fixture
def cas(tmp_path: Path) -> LocalCAS:
    return LocalCAS(tmp_path / "cas")


@pytest.fixture
def executor(tmp_path: Path, cas: LocalCAS) -> Iterator[WasmExecutor]:
    ex = WasmExecutor(_cfg(tmp_path / "home"), cas)
    yield ex
    ex.close()


def _module(cas: LocalCAS, name: str) -> Digest:
    return cas.put_bytes(wat_to_wasm((FIXTURES / name).read_text()))


def _spec(module: Digest, *props: tuple[str, str], timeout_s: float = 10.0) -> ExecSpec:
    return ExecSpec(argv=("prog",), timeout_s=timeout_s,
                    properties=(("wasm_module", str(module)), *props))


def _run(ex: WasmExecutor, spec: ExecSpec, sandbox: Path,
         cancel: threading.Event | None = None) -> ExecOutcome:
    sandbox.mkdir(exist_ok=True)
    return ex.run(spec, sandbox, cancel or threading.Event())


def test_clocks_are_fixed_and_random_is_seeded(executor: WasmExecutor, cas: LocalCAS,
                                               tmp_path: Path) -> None:
    """Clocks read the fixed values; random bytes repeat for the same seed, differ for another."""
    module = _module(cas, "clock_random.wat")
    first = _run(executor, _spec(module, ("wasm_seed", "aa" * 32)), tmp_path / "a")
    again = _run(executor, _spec(module, ("wasm_seed", "aa" * 32)), tmp_path / "b")
    other = _run(executor, _spec(module, ("wasm_seed", "bb" * 32)), tmp_path / "c")
    realtime, monotonic = struct.unpack("<QQ", first.stdout[:16])
    assert (realtime, monotonic) == (FIXED_REALTIME_NS, FIXED_MONOTONIC_NS)
    assert first.stdout == again.stdout
    assert first.stdout[16:] != other.stdout[16:]
    assert len(first.stdout) == 32


def test_exit_code_stdout_and_fuel_are_reported(executor: WasmExecutor, cas: LocalCAS,
                                                tmp_path: Path) -> None:
    """proc_exit's status is the exit code; stdout is captured; fuel consumed is counted."""
    outcome = _run(executor, _spec(_module(cas, "hello_exit.wat")), tmp_path / "s")
    assert (outcome.exit_code, outcome.stdout, outcome.failure) == (3, b"hello\n", "")
    assert 0 < int(outcome.extra["fuel_consumed"]) < 1000


def test_infinite_loop_runs_out_of_fuel(executor: WasmExecutor, cas: LocalCAS,
                                        tmp_path: Path) -> None:
    """A loop is stopped by its fuel budget, named, with all the fuel reported as used."""
    outcome = _run(executor, _spec(_module(cas, "spin.wat"), ("wasm_fuel", "5000000")),
                   tmp_path / "s")
    assert outcome.failure == "out of fuel"
    assert outcome.extra["fuel_consumed"] == "5000000"
    assert b"out of fuel" in outcome.stderr


def test_infinite_loop_times_out(executor: WasmExecutor, cas: LocalCAS, tmp_path: Path) -> None:
    """With fuel to spare, the wall-clock timeout (epoch interruption) stops the loop."""
    start = time.monotonic()
    outcome = _run(executor, _spec(_module(cas, "spin.wat"), ("wasm_fuel", str(10**15)),
                                   timeout_s=0.3), tmp_path / "s")
    assert outcome.failure == "timed out"
    assert time.monotonic() - start < 5.0


def test_cancellation_interrupts_a_running_module(executor: WasmExecutor, cas: LocalCAS,
                                                  tmp_path: Path) -> None:
    """Setting the cancel event stops a spinning module promptly."""
    cancel = threading.Event()
    timer = threading.Timer(0.2, cancel.set)
    timer.start()
    start = time.monotonic()
    outcome = _run(executor, _spec(_module(cas, "spin.wat"), ("wasm_fuel", str(10**15)),
                                   timeout_s=30.0), tmp_path / "s", cancel)
    timer.join()
    assert outcome.failure == "cancelled"
    assert time.monotonic() - start < 5.0


def test_memory_bomb_hits_the_cap(executor: WasmExecutor, cas: LocalCAS, tmp_path: Path) -> None:
    """Growing memory without end is refused at the cap and reported as the memory limit."""
    outcome = _run(executor, _spec(_module(cas, "grow.wat"), ("wasm_memory", "16MiB")),
                   tmp_path / "s")
    assert outcome.failure == "memory limit"
    assert int(outcome.extra["memory_bytes"]) <= 16 << 20


def test_executor_runs_the_next_task_after_each_stop(executor: WasmExecutor, cas: LocalCAS,
                                                     tmp_path: Path) -> None:
    """After fuel, timeout and memory stops, the same executor still runs a task normally."""
    spin, grow = _module(cas, "spin.wat"), _module(cas, "grow.wat")
    _run(executor, _spec(spin, ("wasm_fuel", "1000")), tmp_path / "a")
    _run(executor, _spec(spin, ("wasm_fuel", str(10**15)), timeout_s=0.1), tmp_path / "b")
    _run(executor, _spec(grow, ("wasm_memory", "8MiB")), tmp_path / "c")
    outcome = _run(executor, _spec(_module(cas, "hello_exit.wat")), tmp_path / "d")
    assert (outcome.exit_code, outcome.stdout, outcome.failure) == (3, b"hello\n", "")


def test_invalid_and_non_command_modules_fail_cleanly(executor: WasmExecutor, cas: LocalCAS,
                                                      tmp_path: Path) -> None:
    """Garbage bytes, a module without _start, and unknown imports: 'invalid module'."""
    garbage = cas.put_bytes(b"\0asm not really")
    library = cas.put_bytes(wat_to_wasm('(module (memory (export "memory") 1))'))
    alien = cas.put_bytes(wat_to_wasm(
        '(module (import "env" "launch_missiles" (func)) (func (export "_start")))'))
    for module in (garbage, library, alien):
        outcome = _run(executor, _spec(module), tmp_path / module.hash[:8])
        assert outcome.failure == "invalid module", outcome.stderr
        assert outcome.exit_code == 126


def test_module_from_the_sandbox_when_no_digest_is_given(executor: WasmExecutor,
                                                         tmp_path: Path) -> None:
    """Without wasm_module, argv[0] names the module inside the sandbox (a build action)."""
    sandbox = tmp_path / "s"
    (sandbox / "tools").mkdir(parents=True)
    (sandbox / "tools" / "hello.wasm").write_bytes(
        wat_to_wasm((FIXTURES / "hello_exit.wat").read_text()))
    outcome = executor.run(ExecSpec(argv=("tools/hello.wasm",)), sandbox, threading.Event())
    assert (outcome.exit_code, outcome.stdout) == (3, b"hello\n")


def test_compiled_modules_are_reused_from_disk(tmp_path: Path, cas: LocalCAS) -> None:
    """A second executor (another worker process) loads the serialized module from disk."""
    module = _module(cas, "hello_exit.wat")
    cfg = _cfg(tmp_path / "home")
    sources = []
    for _ in range(2):
        ex = make_executor("wasm", cfg, cas)
        outcome = ex.run(_spec(module), tmp_path, threading.Event())
        sources.append(outcome.extra["module_source"])
        ex.close()
    assert sources == ["compiled", "disk"]


def test_output_directory_bomb_hits_the_output_limit(executor: WasmExecutor, cas: LocalCAS,
                                                     tmp_path: Path) -> None:
    """Writing without end into the output directory is stopped as 'output limit'."""
    spec = ExecSpec(argv=("filler",), output_paths=("out/big",), timeout_s=30.0,
                    properties=(("wasm_module", str(_module(cas, "filler.wat"))),
                                ("wasm_fuel", str(10**15)), ("wasm_output_limit", "1MiB")))
    start = time.monotonic()
    outcome = _run(executor, spec, tmp_path / "s")
    assert outcome.failure == "output limit", outcome.stderr
    assert time.monotonic() - start < 10.0
    assert (tmp_path / "s" / "out" / "big").stat().st_size > 1 << 20
