"""The master daemon: warm state behind a Unix socket, one thread per shim connection.

Started by the shim (or ``cargo-distbuild master start``) as ``python -m
distbuild.master.daemon``. A lock file makes it a singleton per DISTBUILD_HOME; the socket is
bound under a temporary name and renamed into place once listening, so a shim never connects
to a half-started master. It exits after ``master.idle_timeout`` seconds without requests.
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

from distbuild.cas import local_cas
from distbuild.cas.action_cache import ActionCache
from distbuild.config import Config, load_config
from distbuild.master import protocol
from distbuild.master.compile import CompileService
from distbuild.master.runner import make_runners
from distbuild.master.stats import Stats
from distbuild.rustc.toolchain import ToolchainRegistry

log = logging.getLogger("distbuild.master")
GC_EVERY = 500  # compile requests between size-cap checks


class Master:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.stats = Stats(cfg.home)
        self.cas = local_cas(cfg)
        self.runners = make_runners(cfg, self.cas)
        self.service = CompileService(
            cas=self.cas, ac=ActionCache(cfg.home / "ac", self.cas),
            runner=self.runners.primary, local=self.runners.local, stats=self.stats,
            toolchains=ToolchainRegistry(cfg.home),
        )
        self.last_activity = time.monotonic()
        self.active = 0
        self._lock = threading.Lock()
        self._requests = 0
        self.stopping = threading.Event()

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
            reply = self.service.handle(req.argv, req.cwd, req.env)
            self._after_compile()
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
            return protocol.encode_json(json.dumps({"pid": os.getpid()}).encode())
        if req.kind == b"Q":
            self.stopping.set()
            return protocol.encode_json(b"{}")
        raise ValueError(f"unknown request kind {req.kind!r}")

    def _after_compile(self) -> None:
        with self._lock:
            self._requests += 1
            due = self._requests % GC_EVERY == 0
        if due:
            threading.Thread(target=self.cas.gc, daemon=True).start()

    def housekeeping(self) -> None:
        """Save stats every second; stop when idle too long."""
        while not self.stopping.wait(1.0):
            self.stats.save()
            idle = time.monotonic() - self.last_activity
            if self.active == 0 and idle > self.cfg.master.idle_timeout:
                log.info("idle for %.0f s, exiting", idle)
                self.stopping.set()
        self.stats.save()


def serve(cfg: Config) -> int:
    """Run the daemon until stopped. Returns 0, or 0 at once if another master holds the lock."""
    cfg.home.mkdir(parents=True, exist_ok=True)
    lock = open(cfg.home / "master.lock", "a")  # noqa: SIM115 - held for the process lifetime
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0
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
    os.replace(tmp_path, sock_path)
    (cfg.home / "master.pid").write_text(str(os.getpid()))
    log.warning("master %d listening on %s", os.getpid(), sock_path)
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
    master.runners.close()
    return 0


def _same_socket_owner(cfg: Config) -> bool:
    try:
        return int((cfg.home / "master.pid").read_text()) == os.getpid()
    except (OSError, ValueError):
        return False


def main() -> int:
    logging.basicConfig(level=logging.INFO if os.environ.get("DISTBUILD_LOG") else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return serve(load_config())


if __name__ == "__main__":
    sys.exit(main())
