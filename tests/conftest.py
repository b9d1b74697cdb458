"""Shared fixtures: the fixture workspace, an isolated DISTBUILD_HOME, and running the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURE_WS = REPO / "tests" / "fixtures" / "workspace"
BIN_DIR = Path(sys.executable).parent
CLI = str(BIN_DIR / "cargo-distbuild")


def copy_workspace(dest: Path) -> Path:
    shutil.copytree(FIXTURE_WS, dest, ignore=shutil.ignore_patterns("target"))
    return dest


class Distbuild:
    """Runs cargo-distbuild commands against one isolated DISTBUILD_HOME."""

    def __init__(self, home: Path):
        self.home = home
        self.env = dict(os.environ)
        self.env["DISTBUILD_HOME"] = str(home)
        self.env["PATH"] = f"{BIN_DIR}{os.pathsep}{self.env.get('PATH', '')}"
        self.env.pop("DISTBUILD_SCHEDULER", None)
        self.env.pop("RUSTC_WRAPPER", None)
        self.env.pop("CARGO_TARGET_DIR", None)
        self.env["CARGO_TERM_COLOR"] = "never"

    def run(self, *args: str, cwd: Path | None = None, check: bool = True,
            env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([CLI, *args], cwd=cwd, env={**self.env, **(env or {})},
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"cargo-distbuild {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def cargo(self, *args: str, cwd: Path, env: dict[str, str] | None = None,
              check: bool = True) -> subprocess.CompletedProcess[str]:
        """``cargo distbuild ARGS`` exactly as a user types it (Cargo finds our subcommand)."""
        proc = subprocess.run(["cargo", "distbuild", *args], cwd=cwd,
                              env={**self.env, **(env or {})}, capture_output=True, text=True,
                              timeout=600)
        if check and proc.returncode != 0:
            raise AssertionError(f"cargo distbuild {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.run("stats", "--json").stdout)
        return data

    def zero(self) -> None:
        self.run("stats", "--zero")

    def stop(self) -> None:
        self.run("master", "stop", check=False)


@pytest.fixture
def distbuild(tmp_path: Path) -> Iterator[Distbuild]:
    db = Distbuild(tmp_path / "distbuild-home")
    yield db
    db.stop()


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return copy_workspace(tmp_path / "ws")


def run_app(ws: Path) -> str:
    return subprocess.run([str(ws / "target" / "debug" / "fixture-app")], capture_output=True,
                          text=True, check=True, timeout=30).stdout


@pytest.fixture(scope="session")
def plain_app_output(tmp_path_factory: pytest.TempPathFactory) -> str:
    """What the fixture's bin prints when built by plain cargo (no wrapper)."""
    ws = copy_workspace(tmp_path_factory.mktemp("plain") / "ws")
    env = {k: v for k, v in os.environ.items() if k not in ("RUSTC_WRAPPER", "CARGO_TARGET_DIR")}
    subprocess.run(["cargo", "build", "-q"], cwd=ws, env=env, check=True, timeout=600,
                   capture_output=True)
    return run_app(ws)


@contextmanager
def tmpfs_mount(path: Path, size: str = "512m") -> Iterator[Path]:
    """A real tmpfs mounted at ``path`` (another filesystem than the tests' temp directory);
    skips the test, saying why, when mounting is refused (not root, no mount namespace)."""
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs at {path}: {proc.stderr.strip()}")
    try:
        yield path
    finally:
        # Lazy: a master that is still exiting may hold a file open for a moment.
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


COUNTING_RUSTC = """#!/bin/sh
# Logs each compiling invocation (one line: pid and arguments; not Cargo's --print probes)
# and runs the real rustc.
case " $* " in
  *" --print"*) ;;
  *" --crate-name "*) echo "$$ $*" >> "{log}" ;;
esac
exec "{rustc}" "$@"
"""


def counting_rustc(dest: Path) -> tuple[Path, Path]:
    """A rustc that logs every compilation it runs: (the script, its log)."""
    real = shutil.which("rustc")
    assert real, "rustc is not on PATH"
    log = dest.with_suffix(".log")
    log.write_text("")
    dest.write_text(COUNTING_RUSTC.format(log=log, rustc=real))
    dest.chmod(0o755)
    return dest, log


def crate_names(log: Path) -> list[str]:
    """The --crate-name of each compilation a counting rustc ran, in order."""
    names = []
    for line in log.read_text().splitlines():
        words = line.split()
        names.append(words[words.index("--crate-name") + 1])
    return names


SLOW_RUSTC = """#!/bin/sh
# Logs when each compile starts and ends (to find overlaps and work in flight), after a pause.
case " $* " in
  *" --print"*|*" -vV "*) exec "{rustc}" "$@" ;;
esac
crate=$(echo " $* " | sed 's/.* --crate-name \\([^ ]*\\) .*/\\1/')
echo "start $crate $$ $(date +%s%N)" >> "{log}"
sleep {pause}
"{rustc}" "$@"
code=$?
echo "end $crate $$ $(date +%s%N)" >> "{log}"
exit $code
"""


def slow_rustc(dest: Path, pause: float) -> tuple[Path, Path]:
    """A rustc that pauses ``pause`` seconds before each compile and logs its start and end:
    (the script, its log; see ``compile_spans``)."""
    real = shutil.which("rustc")
    assert real, "rustc is not on PATH"
    log = dest.with_suffix(".log")
    log.write_text("")
    dest.write_text(SLOW_RUSTC.format(rustc=real, log=log, pause=pause))
    dest.chmod(0o755)
    return dest, log


def compile_spans(log: Path, finished: bool = True) -> dict[str, list[tuple[int, int]]]:
    """crate -> [(start ns, end ns)] of each compile a slow rustc ran (end 0: still running,
    allowed only when not ``finished``)."""
    starts: dict[str, tuple[str, int]] = {}
    runs: dict[str, list[tuple[int, int]]] = {}
    for line in log.read_text().splitlines():
        kind, crate, pid, ns = line.split()
        if kind == "start":
            starts[pid] = (crate, int(ns))
        else:
            crate, began = starts.pop(pid)
            runs.setdefault(crate, []).append((began, int(ns)))
    assert not (finished and starts), f"compiles that never ended: {starts}"
    for crate, began in starts.values():
        runs.setdefault(crate, []).append((began, 0))
    return runs
