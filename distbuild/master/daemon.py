"""The master daemon: warm state behind a Unix socket, one thread per shim connection.

Started by the shim (or ``cargo-distbuild master start``) as ``python -m
distbuild.master.daemon``. A lock file makes it a singleton per DISTBUILD_HOME; the socket is
bound under a temporary name and renamed into place once listening, so a shim never connects
to a half-started master. It exits after ``master.idle_timeout`` seconds without requests.
A master that cannot start writes why to ``master.failed`` (``protocol.start_failure_file``)
and exits 1; whoever started it reports that. Each compile is served with the configuration
its request's environment names (``configs.py``).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO

from distbuild.cas import local_cas
from distbuild.config import Config, default_home, load_config
from distbuild.errors import ConfigError, DistbuildError
from distbuild.master import protocol
from distbuild.master.compile import Reply
from distbuild.master.configs import Configurations
from distbuild.master.protocol import start_failure_file
from distbuild.master.stats import BUILD_ID_VAR, Stats, Tally, valid_build_id
from distbuild.rustc.toolchain import ToolchainRegistry

log = logging.getLogger("distbuild.master")
GC_EVERY = 500  # compile requests between size-cap checks


class Master:
    def __init__(self, cfg: Config):
        self.cfg = cfg  # the configuration it started with (idle timeout, logging)
        self.stats = Stats(cfg.home)
        self.cas = local_cas(cfg)
        self.configs = Configurations(cfg.home, self.cas, self.stats, ToolchainRegistry(cfg.home))
        self.last_activity = time.monotonic()
        self.active = 0
        self._lock = threading.Lock()
        self._requests = 0
        self.stopping = threading.Event()

    def warm_up(self) -> None:
        """Start serving this process's own configuration (the one its starter's builds name)
        now, so its embedded cluster starts while Cargo is still asking ``rustc -vV``."""
        served = self.configs.acquire(os.environ, "/")
        if isinstance(served, str):
            raise ConfigError(served)
        self.configs.release(served)

    def handle_connection(self, conn: socket.socket) -> None:
        with self._lock:
            self.active += 1
        try:
            with conn:
                req = protocol.decode_request(protocol.read_frame(conn, protocol.REQUEST_MAGIC))
                protocol.write_frame(conn, protocol.REPLY_MAGIC, self._dispatch(req))
        except (ConnectionError, OSError, ValueError) as e:
            log.info("connection dropped: %s", e)
        except Exception:  # a bug must not kill the daemon: the shim falls back
            log.exception("request failed")
        finally:
            with self._lock:
                self.active -= 1
                self.last_activity = time.monotonic()

    def _dispatch(self, req: protocol.Request) -> bytes:
        if req.kind == b"C":
            assert req.argv is not None and req.env is not None
            reply = self._compile(req.argv, req.cwd, req.env)
            if reply.exec_rustc:
                return protocol.encode_exec()
            return protocol.encode_result(reply.exit_code, reply.stdout, reply.stderr)
        if req.kind == b"S":
            return protocol.encode_json(json.dumps(self.stats.snapshot()).encode())
        if req.kind == b"B":
            return protocol.encode_json(json.dumps(self.stats.build(req.build_id)).encode())
        if req.kind == b"Z":
            self.stats.zero()
            return protocol.encode_json(b"{}")
        if req.kind == b"P":
            status = {"pid": os.getpid(), "home": str(self.cfg.home),
                      "configs": self.configs.describe()}
            return protocol.encode_json(json.dumps(status).encode())
        if req.kind == b"Q":
            self.stopping.set()
            return protocol.encode_json(b"{}")
        raise ValueError(f"unknown request kind {req.kind!r}")

    def _compile(self, argv: list[str], cwd: str, env: dict[str, str]) -> Reply:
        """Serve a compile with the configuration its environment names (``configs.py``)."""
        served = self.configs.acquire(env, cwd)
        if isinstance(served, str):  # that configuration is broken: rustc runs it plainly
            tally = Tally()
            tally.fallback("config-error")
            build_id = env.get(BUILD_ID_VAR, "")
            self.stats.commit(tally, build_id if valid_build_id(build_id) else "")
            return Reply(exec_rustc=True, outcome="config-error")
        try:
            reply = served.service.handle(argv, cwd, env)
        finally:
            self.configs.release(served)
        self._after_compile()
        return reply

    def _after_compile(self) -> None:
        with self._lock:
            self._requests += 1
            due = self._requests % GC_EVERY == 0
        if due:
            threading.Thread(target=self.cas.gc, daemon=True).start()

    def housekeeping(self) -> None:
        """Save stats every second, close configurations no longer used, stop when idle
        too long."""
        ticks = 0
        while not self.stopping.wait(1.0):
            self.stats.save()
            ticks += 1
            if ticks % 10 == 0:
                self.configs.retire_idle()
            idle = time.monotonic() - self.last_activity
            if self.active == 0 and idle > self.cfg.master.idle_timeout:
                log.info("idle for %.0f s, exiting", idle)
                self.stopping.set()
        self.stats.save()


@dataclass
class Listening:
    """A master that has taken the lock and bound its socket."""

    server: socket.socket
    master: Master
    lock: IO[str]  # master.lock, held (flock) for the life of the process


def listen(cfg: Config) -> Listening | None:
    """Take the singleton lock, build the master and bind its socket; None if another master
    holds the lock. Raises whatever prevents this master from starting."""
    cfg.home.mkdir(parents=True, exist_ok=True)
    lock = open(cfg.home / "master.lock", "a")  # noqa: SIM115 - held for the process lifetime
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return None
    sock_path = cfg.socket_path
    tmp_path = sock_path.with_name(f".master.{os.getpid()}.sock")
    for p in (sock_path, tmp_path):
        try:
            p.unlink()
        except FileNotFoundError:
            pass
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(tmp_path))
    server.listen(256)
    master = Master(cfg)
    master.warm_up()
    os.replace(tmp_path, sock_path)
    (cfg.home / "master.pid").write_text(str(os.getpid()))
    start_failure_file(cfg.home).unlink(missing_ok=True)
    log.warning("master %d listening on %s (%s)", os.getpid(), sock_path,
                master.configs.describe()[0])
    return Listening(server, master, lock)


def serve(cfg: Config, listening: Listening) -> int:
    """Answer requests until stopped."""
    server, master = listening.server, listening.master
    sock_path = cfg.socket_path
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: master.stopping.set())
    keeper = threading.Thread(target=master.housekeeping, daemon=True)
    keeper.start()
    server.settimeout(0.5)
    while not master.stopping.is_set():
        try:
            conn, _ = server.accept()
        except TimeoutError:
            continue
        except OSError:
            if master.stopping.is_set():
                break
            raise
        conn.settimeout(None)
        threading.Thread(target=master.handle_connection, args=(conn,), daemon=True).start()
    server.close()
    if _same_socket_owner(cfg):  # not when a newer master took over the socket meanwhile
        for path in (sock_path, cfg.home / "master.pid"):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
    keeper.join(timeout=5)
    master.configs.close()
    return 0


def _same_socket_owner(cfg: Config) -> bool:
    try:
        return int((cfg.home / "master.pid").read_text()) == os.getpid()
    except (OSError, ValueError):
        return False


def main() -> int:
    logging.basicConfig(level=logging.INFO if os.environ.get("DISTBUILD_LOG") else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config()
        started = listen(cfg)
    except Exception as e:  # noqa: BLE001 - reported to whoever started us, then exit 1
        reason = str(e) if isinstance(e, DistbuildError) else f"{type(e).__name__}: {e}"
        log.error("the master could not start: %s", reason, exc_info=not isinstance(
            e, DistbuildError))
        try:
            default_home().mkdir(parents=True, exist_ok=True)
            start_failure_file(default_home()).write_text(reason + "\n")
        except OSError:
            pass
        return 1
    if started is None:
        return 0  # another master holds the lock
    return serve(cfg, started)


if __name__ == "__main__":
    sys.exit(main())
