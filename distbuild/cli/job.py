"""``cargo-distbuild job submit --wasm MODULE [--input PATH ...] [--fuel N] [--timeout S]
[--memory SIZE] [--env K=V ...] --wait --json [-- ARGS...]``.

MODULE is a ``.wasm`` file (stored in the CAS first) or a digest (``hash/size``, or a bare
hash of a blob the local store holds). With a scheduler configured the task goes to a wasm
worker; without one it runs in-process with the local CAS and receipts. Either way the JSON
has ``job_id``, ``exit_code``, ``stdout``, ``stderr``, ``cached`` and ``receipt``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distbuild.cas import local_cas
from distbuild.cas.digest import Digest, digest_file
from distbuild.cas.store import LocalCAS
from distbuild.cli.render import print_json
from distbuild.config import Config, load_config
from distbuild.errors import BlobNotFound, InvalidRequest

if TYPE_CHECKING:  # the task machinery (wasmtime, protobuf) loads only when a job is submitted
    from distbuild.tasks.run import TaskRun
    from distbuild.tasks.task import WasmTask


def register(sub: Any) -> None:
    job = sub.add_parser("job", help="submit Wasm tasks (content-addressed, with receipts)")
    job_sub = job.add_subparsers(dest="job_command", metavar="JOB_COMMAND", required=True)
    p = job_sub.add_parser(
        "submit", help="run a WASI module as a task: cached by content, answered with a receipt",
        description="Run a WASI (preview 1) module deterministically. Arguments after `--` go "
        "to the module. Prints the result; --json prints job_id, exit_code, stdout, stderr, "
        "cached, receipt.")
    add_submit_arguments(p)
    p.set_defaults(func=cmd_submit)


def add_submit_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``job submit`` (the REPL's ``job submit --wasm`` comes here too)."""
    p.add_argument("--wasm", required=True, metavar="MODULE",
                   help="a .wasm file, or the digest (hash/size) of one in the CAS")
    p.add_argument("--input", action="append", default=[], metavar="PATH[=GUEST]",
                   help="file or directory visible read-only at /GUEST (default: its name)")
    p.add_argument("--env", action="append", default=[], metavar="K=V",
                   help="environment variable for the module (nothing else is inherited)")
    p.add_argument("--fuel", type=int, default=0, help="instruction budget (default: worker's)")
    p.add_argument("--timeout", type=float, default=0.0, metavar="S",
                   help="wall-clock limit in seconds (default: the job timeout)")
    p.add_argument("--memory", default="", metavar="SIZE", help="memory cap, e.g. 256MiB")
    p.add_argument("--seed", default="", metavar="HEX",
                   help="seed of the module's random bytes (default: derived from the task)")
    p.add_argument("--output-dir", default="out", metavar="DIR",
                   help="the one writable directory (default: out); its files are outputs")
    p.add_argument("--local", action="store_true",
                   help="run in-process even when a scheduler is configured")
    p.add_argument("--wait", action="store_true", help="wait for the result (scheduler only; "
                   "in-process runs always wait)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("args", nargs="*", metavar="ARGS", help="arguments for the module (after --)")


def _module(store: LocalCAS, text: str) -> tuple[Digest, Path | None]:
    path = Path(text).expanduser()
    if path.is_file():
        return store.put_file(path), path
    if "/" in text and not text.endswith(".wasm"):
        return Digest.parse(text), None
    if len(text) == 64 and all(c in "0123456789abcdef" for c in text.lower()):
        blob = store.path_of(Digest(text.lower(), 0))
        if blob.exists():
            return Digest(text.lower(), blob.stat().st_size), None
        raise BlobNotFound(f"no blob {text} in the local CAS (give hash/size or a file)")
    raise InvalidRequest(f"--wasm {text!r} is neither a file nor a digest")


def build_task(args: argparse.Namespace, store: LocalCAS) -> tuple[WasmTask, Path | None]:
    from distbuild.tasks.task import TaskInput, WasmTask

    module, module_file = _module(store, args.wasm)
    env = []
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidRequest(f"--env wants K=V, got {item!r}")
        env.append((key, value))
    extra = [a for a in getattr(args, "extra", []) if a != "--"]
    task = WasmTask(
        module=module, args=tuple(args.args) + tuple(extra), env=tuple(env),
        inputs=tuple(TaskInput.parse(i) for i in args.input), fuel=args.fuel,
        timeout_s=args.timeout, memory=args.memory, output_dir=args.output_dir,
        program=Path(module_file).name if module_file else "task.wasm", seed=args.seed,
    )
    if module_file is not None and digest_file(module_file) != module:
        raise InvalidRequest(f"{module_file} changed while being read")
    return task, module_file


def submit(args: argparse.Namespace, cfg: Config) -> tuple[TaskRun | None, dict[str, Any]]:
    from distbuild.tasks.task import prepare

    """Run (or queue) the task; returns the run, or None and the queued job's JSON."""
    store = local_cas(cfg)
    task, module_file = build_task(args, store)
    if module_file is None and store.contains(task.module):
        module_file = store.path_of(task.module)  # a digest we hold: upload it if missing
    prepared = prepare(task, module_file)
    if cfg.scheduler.addr and not args.local:
        from distbuild.tasks.remote import RemoteTaskRunner

        runner = RemoteTaskRunner(cfg, cfg.scheduler.addr)
        try:
            if not args.wait:
                job = runner.submit(prepared)
                return None, {"job_id": job.job_id, "state": job.state,
                              "task": str(prepared.action_digest)}
            return runner.run(prepared), {}
        finally:
            runner.close()
    from distbuild.executors import make_executor
    from distbuild.tasks.run import LocalTaskRunner

    executor = make_executor("wasm", cfg, store)
    try:
        return LocalTaskRunner(cfg, store, executor).run(prepared), {}
    finally:
        executor.close()


def cmd_submit(args: argparse.Namespace) -> int:
    run, queued = submit(args, load_config())
    if run is None:
        print_json(queued) if args.json else print(f"queued job {queued['job_id']}")
        return 0
    if args.json:
        print_json(run.to_json())
    else:
        sys.stdout.write(run.stdout.decode(errors="replace"))
        sys.stderr.write(run.stderr.decode(errors="replace"))
        where = "cached" if run.cached else run.receipt.worker
        print(f"[job {run.job_id}] exit {run.receipt.exit_code} ({where}); receipt "
              f"{run.receipt_digest}" + (f"; {run.failure}" if run.failure else ""),
              file=sys.stderr)
    return 0 if run.receipt.exit_code == 0 and not run.failure else 1


__all__ = ["add_submit_arguments", "cmd_submit", "register"]
