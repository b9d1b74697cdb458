"""How the master starts its runner and its toolchain identities without making Cargo wait."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from distbuild.master.runner import CompileJob, CompileRun, CompileRunner, StartingRunner
from distbuild.rustc.toolchain import Toolchain, ToolchainRegistry

JOB = CompileJob(argv=["rustc", "lib.rs"], env={}, cwd="/", outputs=[])


class Named:
    """A runner that only says who it is."""

    def __init__(self, name: str):
        self.name = name

    def run(self, job: CompileJob) -> CompileRun:
        return CompileRun(0, self.name.encode(), b"", "local")


def test_a_miss_waits_for_the_runner_being_started() -> None:
    """The master is built at once; a miss waits until the runner has started, then uses it,
    and closing stops what was started."""
    release, stopped = threading.Event(), threading.Event()

    def start() -> tuple[CompileRunner, Callable[[], None]]:
        release.wait(10)
        return Named("embedded"), stopped.set

    runner = StartingRunner(start, Named("fallback"))
    results: list[bytes] = []
    miss = threading.Thread(target=lambda: results.append(runner.run(JOB).stdout))
    miss.start()
    miss.join(0.2)
    assert miss.is_alive() and results == []  # still waiting for the start
    release.set()
    miss.join(10)
    assert results == [b"embedded"]
    runner.close()
    assert stopped.is_set()


def test_a_runner_that_cannot_start_leaves_misses_to_the_fallback() -> None:
    """If the embedded cluster fails to start, misses compile on the fallback runner."""

    def start() -> tuple[CompileRunner, Callable[[], None]]:
        raise OSError("address already in use")

    runner = StartingRunner(start, Named("fallback"))
    assert runner.run(JOB).stdout == b"fallback"
    runner.close()


def test_prefetch_identifies_each_rustc_once_in_the_background(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cargo's `rustc -vV` makes the master identify that rustc in the background, once; the
    first compile then gets the same identity."""
    calls: list[str] = []
    done = threading.Event()
    registry = ToolchainRegistry(tmp_path)

    def identify_slow(rustc: str, env: dict[str, str] | None) -> Toolchain:
        calls.append(rustc)
        done.set()
        return Toolchain(rustc, "rustc 1.0", "/sysroot", "digest", "id-" + rustc)

    monkeypatch.setattr(registry, "_identify_slow", identify_slow)
    rustc = tmp_path / "rustc"
    rustc.write_text("")
    registry.prefetch(str(rustc))
    registry.prefetch(str(rustc))
    assert done.wait(10)
    assert registry.identify(str(rustc)).id == f"id-{rustc}"
    assert calls == [str(rustc)]
