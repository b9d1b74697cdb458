"""Executors run one prepared action in a sandbox: local process, Docker container, Wasm."""

from __future__ import annotations

from distbuild.cas.store import BlobStore
from distbuild.config import EXECUTORS as KINDS
from distbuild.config import Config
from distbuild.errors import ExecutorUnavailable
from distbuild.executors.base import ExecOutcome, ExecSpec, Executor


def make_executor(kind: str, cfg: Config, store: BlobStore) -> Executor:
    """Build the executor named ``kind``; heavy backends are imported only when asked for.

    ``store`` is the worker's blob store, from which docker fetches toolchains and wasm
    fetches modules by digest.
    """
    if kind == "local":
        from distbuild.executors.local import LocalExecutor

        return LocalExecutor()
    if kind == "docker":
        from distbuild.executors.docker import DockerExecutor

        return DockerExecutor(cfg, store)
    if kind == "wasm":
        from distbuild.executors.wasm import WasmExecutor

        return WasmExecutor(cfg, store)
    raise ExecutorUnavailable(f"unknown executor kind {kind!r} (choose from {', '.join(KINDS)})")


__all__ = ["KINDS", "ExecOutcome", "ExecSpec", "Executor", "make_executor"]
