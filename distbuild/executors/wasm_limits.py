"""Limits of a wasm run and what enforces them while it runs.

* fuel and memory are enforced by wasmtime itself (``Store.set_fuel``, ``Store.set_limits``);
* the wall-clock timeout, cancellation and the output-size cap by a ``Watchdog`` thread that
  bumps the run's engine epoch (the store's deadline is one tick, so the guest traps at its
  next epoch check, inside any loop);
* stdout and stderr are kept up to ``MAX_CAPTURE`` bytes each by ``Capture``.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import wasmtime

from distbuild.config import Config, parse_size
from distbuild.errors import InvalidRequest
from distbuild.executors.base import ExecSpec

MAX_CAPTURE = 16 << 20  # bytes of stdout / stderr kept; the rest is dropped and noted
DEFAULT_OUTPUT_LIMIT = 1 << 30  # bytes the output directory may hold (apparent sizes)
_POLL_S = 0.02
_MEASURE_DUTY = 0.05  # measuring the output directory may take this share of the time


@dataclass(frozen=True)
class WasmLimits:
    fuel: int
    timeout_s: float  # 0 = none
    memory_bytes: int
    output_bytes: int

    @classmethod
    def for_spec(cls, spec: ExecSpec, cfg: Config) -> WasmLimits:
        """Properties ``wasm_fuel``, ``wasm_memory``, ``wasm_output_limit``, else the config."""
        try:
            fuel = int(spec.prop("wasm_fuel") or cfg.worker.wasm_fuel)
            memory = parse_size(spec.prop("wasm_memory") or cfg.worker.memory_limit)
            output = parse_size(spec.prop("wasm_output_limit") or DEFAULT_OUTPUT_LIMIT)
        except ValueError as e:
            raise InvalidRequest(f"bad wasm limit property: {e}") from e
        if min(fuel, memory, output) <= 0:
            raise InvalidRequest("wasm_fuel, wasm_memory and wasm_output_limit must be positive")
        return cls(fuel, spec.timeout_s or cfg.scheduler.job_timeout, memory, output)

    def describe(self, failure: str) -> str:
        return {
            "out of fuel": f"fuel {self.fuel}",
            "timed out": f"timeout {self.timeout_s:g} s",
            "memory limit": f"memory cap {self.memory_bytes} bytes",
            "output limit": f"output cap {self.output_bytes} bytes",
        }.get(failure, "by request")


def tree_size(top: Path) -> int:
    """Apparent size of every file below ``top`` (a sparse file counts in full)."""
    total = 0
    stack = [top]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                else:
                    total += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
    return total


class Capture:
    """stdout or stderr of the guest, kept up to ``MAX_CAPTURE`` bytes."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self.dropped = 0

    def write(self, data: bytes) -> None:
        room = MAX_CAPTURE - self.size
        if room > 0:
            self.parts.append(bytes(data[:room]))
            self.size += min(room, len(data))
        self.dropped += max(0, len(data) - max(room, 0))

    def value(self) -> bytes:
        note = f"\n[{self.dropped} more bytes dropped]\n".encode() if self.dropped else b""
        return b"".join(self.parts) + note


class Watchdog:
    """Interrupts one run (its engine's epoch) on timeout, cancellation or too much output;
    never after the run has ended (``stop`` and the interrupt share a lock)."""

    def __init__(self, engine: wasmtime.Engine, cancel: threading.Event, limits: WasmLimits,
                 out_dir: Path | None):
        self.engine, self.cancel, self.limits, self.out_dir = engine, cancel, limits, out_dir
        timeout = limits.timeout_s
        self.deadline = time.monotonic() + timeout if timeout > 0 else float("inf")
        self.reason = ""
        self._next_measure = 0.0
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, name="wasm-watchdog", daemon=True)
        self._thread.start()

    def _why(self) -> str:
        now = time.monotonic()
        if self.cancel.is_set():
            return "cancelled"
        if now >= self.deadline:
            return "timed out"
        if self.out_dir is not None and now >= self._next_measure:
            size = tree_size(self.out_dir)
            cost = time.monotonic() - now  # a big tree is measured less often
            self._next_measure = now + cost / _MEASURE_DUTY
            if size > self.limits.output_bytes:
                return "output limit"
        return ""

    def _watch(self) -> None:
        while not self._done.wait(min(_POLL_S, max(0.0, self.deadline - time.monotonic()))):
            reason = self._why()
            if not reason:
                continue
            with self._lock:
                if not self._done.is_set():
                    self.reason = reason
                    self.engine.increment_epoch()
            return

    def stop(self) -> str:
        """End the watch; returns why the run was interrupted ("" if it was not)."""
        with self._lock:
            self._done.set()
        self._thread.join(timeout=5.0)
        return self.reason
