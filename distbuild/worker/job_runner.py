"""Run one leased job: materialize, execute, upload outputs, and say how it went.

Returns a ``JobOutcome``: either an ActionResult (the action ran, whatever its exit code) or an
error with a kind and whether another worker might succeed (``retryable``).

An action whose platform says ``execution=in-place`` is not materialized: its input root is
this machine's own ``/`` and it runs in its working directory there, writing its outputs where
they belong (Bazel's "local" strategy). Only a worker started with ``in_place=True`` (the
master's embedded worker, which shares the master's files and CAS and takes work from nobody
else) accepts such actions and advertises ``execution=in-place``, so a cluster never gets them.
An in-place run holds its output paths (``distbuild/inplace.py``) so that no other run of the
same compilation overlaps it, and none of its failures is retryable: its files are this
machine's, and another attempt could only collide with a run that may still be writing. If
storing its outputs fails (a full cache disk), the result is returned without them: the
compile succeeded and its outputs are in place.
"""

from __future__ import annotations

import logging
import posixpath
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from distbuild.actions import Action, ActionResult, Command, ExecutionMetadata
from distbuild.cas.digest import BLAKE3, Digest, DigestFunction, digest_bytes
from distbuild.codec import decode_command, encode_action
from distbuild.errors import (
    ActionCancelled,
    ActionTimeout,
    BlobNotFound,
    DistbuildError,
    ExecutionError,
    ExecutorUnavailable,
    InvalidRequest,
    LimitExceeded,
    LocalError,
)
from distbuild.executors.base import ExecSpec, Executor
from distbuild.inplace import IN_PLACE, IN_PLACE_OUTPUTS
from distbuild.sandbox import check_relative, resolve_inside
from distbuild.worker.blob_cache import CachedStore, CachedStores
from distbuild.worker.materialize import (
    SANDBOX_ROOT,
    materialize,
    prepare_outputs,
    substitute,
    unsubstitute,
)
from distbuild.worker.outputs import Outputs, collect_outputs

log = logging.getLogger(__name__)
# Executor failures that end the same way on every attempt (wasm limits, an invalid module).
DETERMINISTIC_FAILURES = frozenset({"out of fuel", "memory limit", "output limit",
                                    "invalid module"})


@dataclass
class JobOutcome:
    result: ActionResult | None = None
    error: str = ""
    kind: str = ""
    retryable: bool = False


class JobRunner:
    def __init__(self, worker_id: str, store: CachedStore | CachedStores,
                 executors: dict[str, Executor], work_dir: Path, keep_sandboxes: bool = False,
                 in_place: bool = False):
        """``store``: the worker's cache (BLAKE3), or one per digest function."""
        self.worker_id = worker_id
        self.in_place = in_place
        self.stores = store if isinstance(store, CachedStores) else CachedStores(store)
        self.executors = executors  # by kind; the first is used when an action names none
        self.work_dir = work_dir
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.keep_sandboxes = keep_sandboxes
        # Removing a sandbox of a few thousand files takes a while: not on the job's path.
        self._cleaner = ThreadPoolExecutor(1, thread_name_prefix="sandbox-cleaner")

    def close(self) -> None:
        """Wait for finished sandboxes to be removed."""
        self._cleaner.shutdown(wait=True)

    def run(self, job_id: str, action: Action, cancel: threading.Event,
            function: DigestFunction = BLAKE3, action_digest: Digest | None = None
            ) -> JobOutcome:
        """Run ``action``, every digest of which (and of its outputs) is of ``function``."""
        sandbox: Path | None = None
        in_place = False
        store = self.stores.get(function)
        digest = action_digest or digest_bytes(encode_action(action), function)
        try:
            command = decode_command(store.get_bytes(action.command_digest))
            if IN_PLACE in command.platform + action.platform:
                if not self.in_place:
                    raise InvalidRequest(f"worker {self.worker_id} does not run actions in "
                                         "place (execution=in-place)")
                in_place = True
                with IN_PLACE_OUTPUTS.hold("/" + p for p in rooted_outputs(command)):
                    return JobOutcome(result=self._run(action, digest, command, Path("/"),
                                                       cancel, store))
            sandbox = Path(tempfile.mkdtemp(prefix=f"job-{job_id}-", dir=self.work_dir))
            root = sandbox / "root"
            materialize(action.input_root_digest, root, store)
            return JobOutcome(result=self._run(action, digest, command, root, cancel, store,
                                               sandbox=True))
        except (InvalidRequest, BlobNotFound) as e:
            return JobOutcome(error=str(e), kind=type(e).__name__, retryable=False)
        except (ActionTimeout, ActionCancelled, LimitExceeded) as e:
            return JobOutcome(error=str(e), kind=type(e).__name__, retryable=False)
        except DistbuildError as e:
            return JobOutcome(error=str(e), kind=type(e).__name__, retryable=not in_place)
        except OSError as e:
            if in_place:  # this machine's own files: another attempt cannot fare better
                return JobOutcome(error=f"worker {self.worker_id}: {e}",
                                  kind=LocalError.__name__)
            return JobOutcome(error=f"worker {self.worker_id}: {e}", kind="ExecutionError",
                              retryable=True)
        finally:
            if sandbox is not None and not self.keep_sandboxes:
                self._cleaner.submit(shutil.rmtree, sandbox, ignore_errors=True)

    def _executor(self, kind: str) -> Executor:
        if not kind:
            return next(iter(self.executors.values()))
        executor = self.executors.get(kind)
        if executor is None:
            raise ExecutorUnavailable(f"worker {self.worker_id} has no {kind!r} executor "
                                      f"(it offers {', '.join(self.executors)})")
        return executor

    def _run(self, action: Action, action_digest: Digest, command: Command, root: Path,
             cancel: threading.Event, store: CachedStore, sandbox: bool = False) -> ActionResult:
        """Execute in ``root`` (a materialized sandbox, or ``/`` in place) and collect.

        Outputs and stdio of an action that names the sandbox placeholder get the sandbox's
        path written back as the placeholder (see materialize.py); others (a REAPI client's)
        are returned as they are.
        """
        started = time.time()
        # REAPI: output paths are relative to the working directory; below, they are taken
        # relative to the input root (which they may not leave) and given back as named.
        wd = command.working_directory
        outputs = rooted_outputs(command)
        prepare_outputs(root, outputs)
        if wd:
            resolve_inside(root, wd).mkdir(parents=True, exist_ok=True)
        # action_digest: what a deterministic executor seeds its randomness with (wasm).
        props = tuple({**dict(command.platform + action.platform),
                       "action_digest": action_digest.hash}.items())
        spec = ExecSpec(
            argv=tuple(substitute(a, root) for a in command.arguments),
            env=tuple((k, substitute(v, root)) for k, v in command.environment),
            working_directory=command.working_directory, output_paths=outputs,
            timeout_s=action.timeout_s, properties=props,
        )
        if cancel.is_set():
            raise ActionCancelled("cancelled before it started")
        executor = self._executor(dict(props).get("executor", ""))
        outcome = executor.run(spec, root, cancel)
        if outcome.failure == "timed out":
            raise ActionTimeout(f"killed after its {action.timeout_s:.0f}s timeout on "
                                f"worker {self.worker_id}")
        if outcome.failure == "cancelled":
            raise ActionCancelled(f"cancelled; its process on {self.worker_id} was killed")
        if outcome.failure:
            tail = outcome.stderr[-2000:].decode(errors="replace")
            deterministic = outcome.failure in DETERMINISTIC_FAILURES
            raise (LimitExceeded if deterministic else ExecutionError)(
                f"{outcome.failure}: {tail}")
        placeholder = sandbox and _uses_placeholder(command)
        try:
            collected = collect_outputs(root, outputs, store, placeholder=placeholder)
        except OSError as e:
            if sandbox:
                raise
            # In place the outputs are where they belong: the compile succeeded, return it
            # (the master stores them itself, or returns the result uncached).
            log.warning("outputs of an in-place run not stored (%s); returned without them", e)
            collected = Outputs()
        files = tuple(replace(f, path=posixpath.relpath(f.path, wd)) if wd else f
                      for f in collected.files)
        dirs = tuple(replace(d, path=posixpath.relpath(d.path, wd)) if wd else d
                     for d in collected.directories)
        stdout, stderr = outcome.stdout, outcome.stderr
        if placeholder:  # results never name the worker's private directory
            stdout, stderr = unsubstitute(stdout, root), unsubstitute(stderr, root)
        blobs: dict[Digest, bytes | Path] = {}
        std_digests: list[Digest | None] = []
        for data in (stdout, stderr):
            if data:
                d = digest_bytes(data, store.function)
                blobs[d] = data
                std_digests.append(d)
            else:
                std_digests.append(None)
        store.upload(blobs)
        return ActionResult(
            output_files=files, output_directories=dirs, exit_code=outcome.exit_code,
            stdout_digest=std_digests[0],
            stderr_digest=std_digests[1],
            metadata=ExecutionMetadata(
                worker=self.worker_id, executor=executor.kind, started_at=started,
                completed_at=time.time(), toolchain=dict(props).get("toolchain", ""),
                fuel_consumed=int(outcome.extra.get("fuel_consumed", 0) or 0)),
        )


def rooted_outputs(command: Command) -> tuple[str, ...]:
    """The output paths relative to the input root (REAPI names them relative to the working
    directory); PathEscape for one that would leave the root."""
    wd = command.working_directory
    return tuple(check_relative(posixpath.normpath(posixpath.join(wd, out))).as_posix()
                 for out in command.output_paths) if wd else command.output_paths


def _uses_placeholder(command: Command) -> bool:
    return any(SANDBOX_ROOT in a for a in command.arguments) or any(
        SANDBOX_ROOT in v for _, v in command.environment)
