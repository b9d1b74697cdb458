"""Receipts: content-addressed records of task runs (after IPVM/homestar).

A receipt names the task it ran (the Action digest), the module, the outputs by digest, the exit
code, stdout/stderr digests, the fuel used, the worker and the timing. It is canonical JSON
stored in the CAS, so its digest identifies it. A receipt is derived from the task digest and
the ActionResult alone; an identical task served from the cache gets the same ActionResult and
therefore the very same receipt.

The local ``ReceiptIndex`` maps a task digest to its receipt's digest (files written atomically)
and only answers while the receipt and every blob it names are still in the store.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distbuild.actions import ActionResult, OutputFile
from distbuild.cas.digest import Digest
from distbuild.cas.store import BlobStore
from distbuild.errors import DistbuildError

RECEIPT_VERSION = 1


@dataclass(frozen=True)
class Receipt:
    task: Digest
    module: Digest | None
    exit_code: int
    outputs: tuple[OutputFile, ...]
    stdout: Digest | None
    stderr: Digest | None
    fuel_consumed: int
    worker: str
    executor: str
    started_at: float
    completed_at: float
    version: int = RECEIPT_VERSION

    @classmethod
    def from_result(cls, task: Digest, module: Digest | None, result: ActionResult) -> Receipt:
        meta = result.metadata
        return cls(
            task=task, module=module, exit_code=result.exit_code, outputs=result.output_files,
            stdout=result.stdout_digest, stderr=result.stderr_digest,
            fuel_consumed=meta.fuel_consumed, worker=meta.worker, executor=meta.executor,
            started_at=meta.started_at, completed_at=meta.completed_at,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version, "task": str(self.task),
            "module": str(self.module) if self.module else None,
            "exit_code": self.exit_code,
            "outputs": [{"path": o.path, "digest": str(o.digest), "is_executable": o.is_executable}
                        for o in self.outputs],
            "stdout": str(self.stdout) if self.stdout else None,
            "stderr": str(self.stderr) if self.stderr else None,
            "fuel_consumed": self.fuel_consumed, "worker": self.worker,
            "executor": self.executor, "started_at": self.started_at,
            "completed_at": self.completed_at,
        }

    def encode(self) -> bytes:
        """Canonical bytes: sorted keys, no whitespace."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> Receipt:
        raw = json.loads(data)

        def opt(value: str | None) -> Digest | None:
            return Digest.parse(value) if value else None

        return cls(
            task=Digest.parse(raw["task"]), module=opt(raw["module"]),
            exit_code=raw["exit_code"],
            outputs=tuple(OutputFile(o["path"], Digest.parse(o["digest"]), o["is_executable"])
                          for o in raw["outputs"]),
            stdout=opt(raw["stdout"]), stderr=opt(raw["stderr"]),
            fuel_consumed=raw["fuel_consumed"], worker=raw["worker"], executor=raw["executor"],
            started_at=raw["started_at"], completed_at=raw["completed_at"],
            version=raw["version"],
        )

    def blobs(self) -> list[Digest]:
        """Every blob the receipt names (for presence checks)."""
        named = [o.digest for o in self.outputs] + [self.stdout, self.stderr]
        return [d for d in named if d is not None]


class ReceiptIndex:
    """task digest -> receipt digest, on local disk."""

    def __init__(self, root: Path, store: BlobStore):
        self.root = root
        self.store = store
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, task: Digest) -> Path:
        return self.root / task.hash

    def lookup(self, task: Digest) -> tuple[Digest, Receipt] | None:
        """The task's receipt, or None when unknown or when a blob it names is gone."""
        try:
            digest = Digest.parse(self._path(task).read_text())
            receipt = Receipt.decode(self.store.get_bytes(digest))
        except (OSError, ValueError, KeyError, TypeError, DistbuildError):
            return None  # unknown, damaged or evicted: a miss
        if receipt.task != task or self.store.find_missing(receipt.blobs()):
            return None
        return digest, receipt

    def record(self, receipt: Receipt, index: bool = True) -> Digest:
        """Store a receipt; with ``index``, later lookups of its task return it."""
        digest = self.store.put_bytes(receipt.encode())
        if not index:
            return digest
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-")
        with os.fdopen(fd, "w") as f:
            f.write(str(digest))
        os.replace(tmp, self._path(receipt.task))
        return digest
