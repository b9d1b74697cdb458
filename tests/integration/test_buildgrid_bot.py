"""Our worker as a bot of a real BuildGrid farm (Remote Workers API), fed by a plain REAPI client.

BuildGrid 0.4.4 and PostgreSQL run as real processes on loopback (``buildgrid.py``); the bot is
``cargo-distbuild worker join``, a real process; the client is BuildGrid's own ``bgd execute``,
which knows nothing of cargo-distbuild: it uploads an input tree with SHA-256 digests, asks
for execution, and downloads the outputs.
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest

from tests.integration.buildgrid import BGD, Bot, BuildGridFarm
from tests.integration.cluster import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def farm(buildgrid_farm: BuildGridFarm) -> BuildGridFarm:
    return buildgrid_farm


def bgd_execute(farm: BuildGridFarm, input_root: Path, out_dir: Path, outputs: list[str],
                command: list[str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """``bgd execute command``: BuildGrid's own REAPI client runs one command on the farm."""
    args = [str(BGD), "execute", "--remote", f"http://{farm.addr}", "--instance-name",
            farm.instance, "command", str(input_root), "--output-directory", str(out_dir),
            "-p", "OSFamily", "linux"]
    for out in outputs:
        args += ["--output-file", out]
    proc = subprocess.run([*args, "--", *command], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"bgd execute failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_plain_reapi_client_action_runs_on_our_bot(farm: BuildGridFarm, tmp_path: Path) -> None:
    """An action a plain REAPI client (bgd execute) submits to BuildGrid is leased to our bot,
    which fetches its SHA-256 input tree from BuildGrid's CAS, runs it and uploads its outputs:
    the client downloads the output it asked for, computed from both input files."""
    bot = Bot(farm, tmp_path, "bot-plain")
    try:
        src = tmp_path / "src"
        (src / "sub").mkdir(parents=True)
        (src / "in.txt").write_text("hello farm\n")
        (src / "sub" / "more.txt").write_text("from a subdirectory\n")
        out = tmp_path / "out"
        proc = bgd_execute(farm, src, out, ["result/upper.txt"], [
            "/bin/sh", "-c", "mkdir -p result && cat in.txt sub/more.txt | tr a-z A-Z "
                             "> result/upper.txt"])
        assert (out / "result" / "upper.txt").read_text() == "HELLO FARM\nFROM A SUBDIRECTORY\n"
        assert "bot-plain" in proc.stdout, proc.stdout  # the worker BuildGrid names
    finally:
        assert bot.stop() == 0, bot.log()


def test_stopped_bot_hands_its_lease_back(farm: BuildGridFarm, tmp_path: Path) -> None:
    """A bot stopped while running a lease kills it and reports it as retryable at once, and
    tells BuildGrid it is terminating: BuildGrid gives the action to the next bot, which runs
    it to completion (no wait for a keepalive to expire)."""
    first = Bot(farm, tmp_path, "bot-first", capacity=1)
    second: Bot | None = None
    src = tmp_path / "src"
    src.mkdir()
    (src / "marker").write_text("x\n")
    out = tmp_path / "out"
    result: dict[str, subprocess.CompletedProcess[str]] = {}

    def client() -> None:
        result["proc"] = bgd_execute(farm, src, out, ["done.txt"], [
            "/bin/sh", "-c", "sleep 3 && echo finished > done.txt"])

    thread = threading.Thread(target=client)
    thread.start()
    try:
        sandboxes = tmp_path / "bot-first-home" / "bots" / "bot-first" / "sandboxes"
        wait_for("the first bot to start the action",
                 lambda: sandboxes.is_dir() and any(sandboxes.iterdir()), timeout=60)
        assert first.stop() == 0, first.log()
        second = Bot(farm, tmp_path, "bot-second", capacity=1)
        thread.join(timeout=120)
        assert not thread.is_alive(), "the action never completed"
        assert (out / "done.txt").read_text() == "finished\n"
        assert "bot-second" in result["proc"].stdout
    finally:
        first.stop()
        if second is not None:
            assert second.stop() == 0, second.log()
        thread.join(timeout=180)


def test_bot_survives_a_farm_restart(farm: BuildGridFarm, tmp_path: Path) -> None:
    """BuildGrid restarted under a running bot: the bot retries until the farm is back (opening
    a new session if the farm lost its own) and runs the next client's action."""
    bot = Bot(farm, tmp_path, "bot-restart")
    try:
        farm.restart_buildgrid()
        src = tmp_path / "src"
        src.mkdir()
        (src / "in.txt").write_text("after restart\n")
        out = tmp_path / "out"
        bgd_execute(farm, src, out, ["copy.txt"], ["/bin/cp", "in.txt", "copy.txt"])
        assert (out / "copy.txt").read_text() == "after restart\n"
        assert bot.proc.poll() is None, bot.log()
    finally:
        assert bot.stop() == 0, bot.log()
