"""The executor interface: run one prepared action inside a sandbox directory.

A worker materializes an action's input tree into ``sandbox`` and then calls
``executor.run(spec, sandbox, cancel)``. Executors know nothing of gRPC, the CLI or the cache.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class ExecSpec:
    """What to run. Paths are relative to the sandbox root unless noted."""

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    working_directory: str = ""
    output_paths: tuple[str, ...] = ()
    timeout_s: float = 0.0  # 0 = no timeout
    # Executor-specific knobs (docker: toolchain digest/image; wasm: fuel, memory, seed).
    properties: tuple[tuple[str, str], ...] = ()

    def prop(self, name: str, default: str = "") -> str:
        return dict(self.properties).get(name, default)


@dataclass
class ExecOutcome:
    exit_code: int
    stdout: bytes = b""
    stderr: bytes = b""
    duration_s: float = 0.0
    # Set when the executor stopped the action: "timed out", "cancelled", "out of fuel",
    # "memory limit". A compile error is not a failure reason: it is just exit_code != 0.
    failure: str = ""
    extra: dict[str, str] = field(default_factory=dict)  # e.g. {"fuel_consumed": "123"}


class Executor(Protocol):
    """Runs an ExecSpec in a materialized sandbox directory."""

    kind: str  # "local" | "docker" | "wasm"

    def run(self, spec: ExecSpec, sandbox: Path, cancel: threading.Event) -> ExecOutcome: ...

    def close(self) -> None: ...
