"""Local process executor: the action's argv as a child process in its sandbox directory.

The environment is exactly the action's (plus a minimal PATH when it has none): nothing from
the worker's own environment leaks in. The child gets its own process group so a timeout or a
cancellation kills everything it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from distbuild.executors.base import ExecOutcome, ExecSpec
from distbuild.sandbox import resolve_inside
from distbuild.spawnlock import SPAWN_LOCK

_POLL_S = 0.05
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


class LocalExecutor:
    kind = "local"

    def run(self, spec: ExecSpec, sandbox: Path, cancel: threading.Event) -> ExecOutcome:
        cwd = resolve_inside(sandbox, spec.working_directory)
        env = dict(spec.env)
        env.setdefault("PATH", DEFAULT_PATH)
        start = time.monotonic()
        with SPAWN_LOCK.spawning():  # see distbuild/spawnlock.py
            proc = subprocess.Popen(
                list(spec.argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
            )
        out: list[bytes] = []
        err: list[bytes] = []
        readers = [
            threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True),  # type: ignore[union-attr]
            threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True),  # type: ignore[union-attr]
        ]
        for t in readers:
            t.start()
        failure: list[str] = []
        done = threading.Event()
        deadline = start + spec.timeout_s if spec.timeout_s > 0 else None

        def watchdog() -> None:
            # Only the kill waits on this loop; the action's own exit is seen at once below.
            while not done.wait(_POLL_S):
                if cancel.is_set():
                    failure.append("cancelled")
                elif deadline is not None and time.monotonic() > deadline:
                    failure.append("timed out")
                else:
                    continue
                _kill_group(proc)
                return

        guard = threading.Thread(target=watchdog, daemon=True)
        guard.start()
        proc.wait()
        done.set()
        guard.join()
        for t in readers:
            t.join()
        return ExecOutcome(
            exit_code=proc.returncode, stdout=b"".join(out), stderr=b"".join(err),
            duration_s=time.monotonic() - start, failure=failure[0] if failure else "",
        )

    def close(self) -> None:
        pass


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
