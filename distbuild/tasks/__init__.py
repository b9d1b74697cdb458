"""Wasm tasks: content-addressed WASI jobs with receipts (``cargo-distbuild job submit``).

``task`` turns a module digest, arguments and inputs into a REAPI-shaped Action; ``run``
executes it in-process or through a scheduler; ``receipt`` records each run by content.
"""

from __future__ import annotations

from distbuild.tasks.receipt import Receipt, ReceiptIndex
from distbuild.tasks.task import PreparedTask, TaskInput, WasmTask, prepare

__all__ = ["PreparedTask", "Receipt", "ReceiptIndex", "TaskInput", "WasmTask", "prepare"]
