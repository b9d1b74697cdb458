"""Talking to the local master from CLI commands: start, ping, stats, stop."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from distbuild.config import Config, config_path
from distbuild.errors import Unavailable
from distbuild.master import protocol
from distbuild.master.protocol import start_failure_file


def _call(cfg: Config, kind: bytes, timeout: float = 10.0, build_id: str = "") -> dict[str, Any]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(str(cfg.socket_path))
        protocol.write_frame(s, protocol.REQUEST_MAGIC, protocol.encode_request(
            protocol.Request(kind, build_id=build_id)))
        body = protocol.read_frame(s, protocol.REPLY_MAGIC)
    except OSError as e:
        raise Unavailable(f"no master at {cfg.socket_path}: {e}") from e
    finally:
        s.close()
    if body[:1] != b"J":
        raise Unavailable(f"unexpected reply from the master: {body[:20]!r}")
    result: dict[str, Any] = json.loads(body[1:])
    return result


def ping(cfg: Config) -> int | None:
    """The master's pid, or None when none is running."""
    try:
        return int(_call(cfg, b"P", timeout=2.0)["pid"])
    except Unavailable:
        return None


def status(cfg: Config) -> dict[str, Any] | None:
    """The running master's pid, home and the configurations it serves (each with its mode
    and scheduler, the most recently used first), or None when none is running."""
    try:
        return _call(cfg, b"P", timeout=2.0)
    except Unavailable:
        return None


def stats(cfg: Config) -> dict[str, Any]:
    return _call(cfg, b"S")


def build_stats(cfg: Config, build_id: str) -> dict[str, Any]:
    """The counters of one build (the requests that carried ``DISTBUILD_BUILD_ID``)."""
    return _call(cfg, b"B", build_id=build_id)


def zero_stats(cfg: Config) -> None:
    _call(cfg, b"Z")


def stop(cfg: Config, timeout: float = 10.0) -> bool:
    """Ask the master to exit and wait until it stops answering; False if none was running."""
    if ping(cfg) is None:
        return False
    _call(cfg, b"Q")
    deadline = time.monotonic() + timeout
    # Its process may linger as a zombie until init reaps it; the socket going away is what
    # matters to the next command.
    while time.monotonic() < deadline and ping(cfg) is not None:
        time.sleep(0.02)
    return True


def ensure_running(cfg: Config, timeout: float = 15.0) -> int:
    """Start the master if needed; returns its pid. Raises Unavailable with the master's own
    reason as soon as it fails to start."""
    pid = ping(cfg)
    if pid is not None:
        return pid
    cfg.home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARGO_", "RUSTC"))}
    # The daemon runs in "/": the paths it is given must not be relative to ours.
    env["DISTBUILD_HOME"] = str(cfg.home)
    if env.get("DISTBUILD_CONFIG"):
        env["DISTBUILD_CONFIG"] = str(config_path(cfg.home))
    failed = start_failure_file(cfg.home)
    with open(cfg.home / "master.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "distbuild.master.daemon"], cwd="/",
                                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = ping(cfg)
        if pid is not None:
            return pid
        if proc.poll() not in (None, 0):  # 0: another master holds the lock; it will answer
            raise Unavailable(f"the master could not start: {_reason(failed)}")
        time.sleep(0.05)
    failed.write_text(f"the master did not start within {timeout:.0f} s\n")
    raise Unavailable(f"the master did not start within {timeout:.0f} s; see "
                      f"{cfg.home}/master.log")


def _reason(failed: Path) -> str:
    try:
        return failed.read_text().strip() or "see master.log"
    except OSError:
        return "see master.log"
