"""The local process executor: exact capture, scrubbed environment, timeouts, cancellation."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from distbuild.errors import PathEscape
from distbuild.executors.base import ExecSpec
from distbuild.executors.local import LocalExecutor


def _run(spec: ExecSpec, sandbox: Path, cancel: threading.Event | None = None):  # type: ignore[no-untyped-def]
    return LocalExecutor().run(spec, sandbox, cancel or threading.Event())


def test_captures_output_and_exit_code_exactly(tmp_path: Path) -> None:
    """stdout, stderr (bytes, not text) and the exit code come back unchanged."""
    out = _run(ExecSpec(("sh", "-c", "printf 'a\\0b'; printf 'err\\n' >&2; exit 3")), tmp_path)
    assert (out.exit_code, out.stdout, out.stderr, out.failure) == (3, b"a\0b", b"err\n", "")


def test_environment_is_only_the_actions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing from the worker's environment leaks into the action."""
    monkeypatch.setenv("WORKER_SECRET", "leak")
    out = _run(ExecSpec(("sh", "-c", "env"), env=(("ONLY", "this"),)), tmp_path)
    lines = set(out.stdout.decode().splitlines())
    assert "ONLY=this" in lines
    assert not any(line.startswith("WORKER_SECRET=") for line in lines)


def test_runs_in_its_working_directory(tmp_path: Path) -> None:
    """The working directory is resolved inside the sandbox."""
    (tmp_path / "sub").mkdir()
    out = _run(ExecSpec(("pwd",), working_directory="sub"), tmp_path)
    assert out.stdout.decode().strip() == os.path.realpath(tmp_path / "sub")
    with pytest.raises(PathEscape):
        _run(ExecSpec(("pwd",), working_directory="../.."), tmp_path)


def test_timeout_kills_the_process_group(tmp_path: Path) -> None:
    """A timed-out action and the children it started are killed; the failure is named."""
    start = time.monotonic()
    out = _run(ExecSpec(("sh", "-c", "sleep 30 & sleep 30"), timeout_s=0.3), tmp_path)
    assert out.failure == "timed out"
    assert time.monotonic() - start < 10


def test_cancel_kills(tmp_path: Path) -> None:
    """Setting the cancel event kills a running action."""
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    out = _run(ExecSpec(("sleep", "30")), tmp_path, cancel)
    assert out.failure == "cancelled"
    assert out.exit_code != 0
