"""Running prepared tasks: in-process (local CAS, local receipts) or through a scheduler.

Both runners return the same ``TaskRun``; ``cargo-distbuild job submit`` prints it as JSON.
Only clean runs (exit code 0, no limit hit) are cached: a timeout or an out-of-fuel stop says
more about the budget than about the task.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distbuild.actions import ActionResult, ExecutionMetadata
from distbuild.cas.digest import Digest
from distbuild.cas.store import BlobStore, LocalCAS
from distbuild.config import Config
from distbuild.executors.base import Executor
from distbuild.tasks.receipt import Receipt, ReceiptIndex
from distbuild.tasks.task import PreparedTask
from distbuild.tasks.tree import collect_outputs, materialize, upload


@dataclass
class TaskRun:
    job_id: str
    task: Digest
    receipt_digest: Digest
    receipt: Receipt
    cached: bool
    stdout: bytes
    stderr: bytes
    failure: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id, "task": str(self.task), "receipt": str(self.receipt_digest),
            "cached": self.cached, "exit_code": self.receipt.exit_code,
            "stdout": self.stdout.decode(errors="replace"),
            "stderr": self.stderr.decode(errors="replace"),
            "outputs": {o.path: str(o.digest) for o in self.receipt.outputs},
            "fuel_consumed": self.receipt.fuel_consumed, "worker": self.receipt.worker,
            "failure": self.failure,
        }


def _blob(store: BlobStore, digest: Digest | None) -> bytes:
    return store.get_bytes(digest) if digest is not None else b""


class LocalTaskRunner:
    """Runs tasks on an in-process executor against the local CAS; receipts in ``home``."""

    def __init__(self, cfg: Config, store: LocalCAS, executor: Executor, worker: str = "local"):
        self.cfg, self.store, self.executor, self.worker = cfg, store, executor, worker
        self.receipts = ReceiptIndex(cfg.home / "receipts", store)
        self.sandboxes = cfg.home / "sandboxes"

    def run(self, prepared: PreparedTask, cancel: threading.Event | None = None) -> TaskRun:
        job_id = f"local-{uuid.uuid4().hex[:12]}"
        upload(self.store, prepared.blobs)
        hit = self.receipts.lookup(prepared.action_digest)
        if hit is not None:
            digest, receipt = hit
            return TaskRun(job_id, prepared.action_digest, digest, receipt, True,
                           _blob(self.store, receipt.stdout), _blob(self.store, receipt.stderr))
        self.sandboxes.mkdir(parents=True, exist_ok=True)
        sandbox = Path(tempfile.mkdtemp(dir=self.sandboxes, prefix="task-"))
        try:
            materialize(self.store, prepared.action.input_root_digest, sandbox)
            started = time.time()
            outcome = self.executor.run(prepared.exec_spec(), sandbox, cancel or threading.Event())
            completed = time.time()
            outputs = () if outcome.failure else collect_outputs(
                self.store, sandbox, prepared.task.output_dir)
        finally:
            shutil.rmtree(sandbox, ignore_errors=True)
        result = ActionResult(
            output_files=outputs, exit_code=outcome.exit_code,
            stdout_digest=self.store.put_bytes(outcome.stdout),
            stderr_digest=self.store.put_bytes(outcome.stderr),
            metadata=ExecutionMetadata(
                worker=self.worker, executor=self.executor.kind, started_at=started,
                completed_at=completed, fuel_consumed=int(outcome.extra.get("fuel_consumed", 0)),
            ),
        )
        receipt = Receipt.from_result(prepared.action_digest, prepared.task.module, result)
        cacheable = outcome.exit_code == 0 and not outcome.failure
        digest = self.receipts.record(receipt, index=cacheable)
        return TaskRun(job_id, prepared.action_digest, digest, receipt, False, outcome.stdout,
                       outcome.stderr, outcome.failure, dict(outcome.extra))
