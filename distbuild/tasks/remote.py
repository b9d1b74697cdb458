"""Running tasks through a scheduler: upload what is missing, submit, follow, build the receipt.

The scheduler's action cache answers an identical task without running it (``cached``), with
the ActionResult of the first run, so the receipt derived from it is the same one.
"""

from __future__ import annotations

import posixpath
from dataclasses import replace

from distbuild.actions import ActionResult, ExecutionMetadata, OutputFile
from distbuild.codec import tree_files
from distbuild.config import Config
from distbuild.errors import ExecutionError
from distbuild.executors.wasm import EXIT_STOPPED
from distbuild.reapi.cas_client import RemoteCAS
from distbuild.scheduler.client import JobView, SchedulerClient
from distbuild.tasks.receipt import Receipt
from distbuild.tasks.run import TaskRun
from distbuild.tasks.task import PreparedTask
from distbuild.tasks.tree import upload


class RemoteTaskRunner:
    def __init__(self, cfg: Config, addr: str, timeout: float = 3600.0):
        self.cfg, self.addr, self.timeout = cfg, addr, timeout
        self.cas = RemoteCAS(addr, cfg)
        self.client = SchedulerClient(addr, cfg)

    def close(self) -> None:
        self.client.close()
        self.cas.close()

    def submit(self, prepared: PreparedTask) -> JobView:
        """Upload and queue; returns at once."""
        upload(self.cas, prepared.blobs)
        return self.client.submit(prepared.action_digest)

    def run(self, prepared: PreparedTask) -> TaskRun:
        """Upload, submit, wait for the end; a job that fails without a result raises."""
        job = self.submit(prepared)
        view = job if job.done else self.client.wait(job.job_id, timeout=self.timeout)
        result = view.result
        if result is None:  # stopped by a limit, cancelled, or refused: still a receipt
            if not view.done:
                raise ExecutionError(f"job {view.job_id} still {view.state} after waiting")
            result = ActionResult(exit_code=EXIT_STOPPED, metadata=ExecutionMetadata(
                worker=view.worker_id, executor="wasm", started_at=view.started_at,
                completed_at=view.completed_at))
        result = self._with_files(result)
        receipt = Receipt.from_result(prepared.action_digest, prepared.task.module, result)
        digest = self.cas.put_bytes(receipt.encode())
        stdout = self.cas.get_bytes(result.stdout_digest) if result.stdout_digest else b""
        stderr = self.cas.get_bytes(result.stderr_digest) if result.stderr_digest else b""
        failure = failure_name(view) if view.state != "COMPLETED" else ""
        return TaskRun(view.job_id, prepared.action_digest, digest, receipt, view.cached,
                       stdout, stderr, failure)


    def _with_files(self, result: ActionResult) -> ActionResult:
        """``result`` with each output directory (a REAPI Tree) listed as the files below it:
        a receipt names files, as the local runner's does."""
        if not result.output_directories:
            return result
        files = list(result.output_files)
        for d in result.output_directories:
            for rel, node in tree_files(self.cas.get_bytes(d.tree_digest), self.cas.function):
                files.append(OutputFile(posixpath.join(d.path, rel), node.digest,
                                        node.is_executable))
        return replace(result, output_files=tuple(sorted(files, key=lambda o: o.path)),
                       output_directories=())


def failure_name(view: JobView) -> str:
    """The executor's failure name ("out of fuel", "timed out"...) behind a failed job."""
    kind, detail = view.error_kind, view.error
    if kind == "ActionTimeout":
        return "timed out"
    if kind == "ActionCancelled" or view.state == "CANCELLED":
        return "cancelled"
    if kind == "LimitExceeded":
        return detail.partition(":")[0].strip()
    lines = view.error.strip().splitlines()
    return lines[0] if lines else view.state.lower()
