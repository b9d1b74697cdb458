"""A real BuildGrid farm for tests: PostgreSQL + ``bgd server`` on loopback, torn down after.

Both peers are installed by ``scripts/setup.d/buildgrid.sh`` (PostgreSQL 15 from Debian,
BuildGrid 0.4.4 in ``build/buildgrid/venv``); without them ``farm_or_skip`` skips the test and
prints why. One ``BuildGridFarm`` is one farm: a PostgreSQL server of its own (initdb into a
temporary directory, a free port, its socket directory beside it), BuildGrid's schema
(``bgd migrate apply``), and a BuildGrid server with one instance serving CAS, ByteStream,
ActionCache, Execution and Bots, with the platform keys our actions send declared and a short
bot keepalive (a dead bot is forgotten in seconds, not BuildGrid's default ten minutes).

Every wait is bounded; both servers are stopped by pid (SIGTERM, then SIGKILL) and their files
removed when the farm closes, whatever happened.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import grpc
import pytest

from tests.conftest import BIN_DIR, CLI, REPO
from tests.integration.cluster import free_port, wait_for

BGD = REPO / "build" / "buildgrid" / "venv" / "bin" / "bgd"
INSTANCE = "main"
# Platform keys a job may carry. BuildGrid refuses a job naming any other key, and hands a job
# only to a bot that offers every match key's value (docs/reapi.md lists ours).
MATCH_KEYS = ("OSFamily", "ISA", "executor", "toolchain")
KEEPALIVE_S = 20  # bot-session-keepalive-timeout; BuildGrid's default is 600 s
START_TIMEOUT = 90.0

CONFIG = """\
server:
  - !channel
    address: "127.0.0.1:{port}"
    insecure-mode: true
authorization:
  method: none
# Each bot keeps one UpdateBotSession call open and each client an Execute stream: the default
# (5 threads per CPU) is exhausted by a few of them ("Concurrent RPC limit exceeded").
thread-pool-size: 64
connections:
  - !sql-connection &sql
    connection-string: {db_url}
    pool-size: 5
    max-overflow: 5
storages:
  - !disk-storage &cas
    path: {cas_dir}
caches:
  - !lru-action-cache &ac
    storage: *cas
    max-cached-refs: 100000
    allow-updates: true
    cache-failed-actions: false
schedulers:
  - !sql-scheduler &scheduler
    sql: *sql
    storage: *cas
    action-cache: *ac
    bot-session-keepalive-timeout: {keepalive}
    property-set: !dynamic-property-set
      match-property-keys: [{match_keys}]
instances:
  - name: {instance}
    services:
      - !action-cache
        cache: *ac
      - !execution
        scheduler: *scheduler
      - !cas
        storage: *cas
      - !bytestream
        storage: *cas
"""


def postgres_bin() -> Path | None:
    """The directory of Debian's PostgreSQL server programs (the newest major), if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name))
    return Path(found[-1]).parent if found else None


def missing_peer() -> str:
    """Why a farm cannot start here ("" when it can)."""
    if postgres_bin() is None:
        return "PostgreSQL is not installed (scripts/setup.d/buildgrid.sh installs it)"
    if not BGD.exists():
        return f"BuildGrid is not installed at {BGD} (scripts/setup.d/buildgrid.sh)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root, and there is no 'postgres' user to run PostgreSQL as"
    return ""


def farm_or_skip(root: Path) -> BuildGridFarm:
    """A started farm, or a skip that prints why there is none."""
    reason = missing_peer()
    if reason:
        print(f"SKIP reason: {reason}")
        pytest.skip(reason)
    return BuildGridFarm(root).start()


class BuildGridFarm:
    """PostgreSQL + BuildGrid, started by ``start()`` and stopped by ``close()``."""

    def __init__(self, root: Path, keepalive_s: int = KEEPALIVE_S):
        self.root = root  # logs and the config (the test's own directory)
        root.mkdir(parents=True, exist_ok=True)
        self.keepalive_s = keepalive_s
        self.instance = INSTANCE
        self.port = 0
        self.addr = ""
        self.db_url = ""
        self._pg_bin = postgres_bin()
        # PostgreSQL refuses to run as root, and pytest's directories are private to their
        # owner: its data lives in a directory of its own, owned by the user it runs as.
        self._pg_dir = Path(tempfile.mkdtemp(prefix="distbuild-pg-"))
        self._pg_user = "postgres" if os.geteuid() == 0 else ""
        self._pg_started = False
        self._bgd: subprocess.Popen[bytes] | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> BuildGridFarm:
        try:
            self._start_postgres()
            self._migrate()
            self._start_buildgrid()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop BuildGrid, then PostgreSQL, and remove the database's files."""
        if self._bgd is not None:
            _stop(self._bgd, timeout=5)
            self._bgd = None
        if self._pg_started:
            self._pg("pg_ctl", "-D", str(self._pg_dir / "data"), "-m", "immediate", "-w",
                     "-t", "30", "stop", check=False)
            self._pg_started = False
        shutil.rmtree(self._pg_dir, ignore_errors=True)

    def __enter__(self) -> BuildGridFarm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log(self) -> str:
        """BuildGrid's output so far (for assertion messages)."""
        path = self.root / "bgd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def restart_buildgrid(self) -> None:
        """Kill the BuildGrid server and start it again on the same port and database."""
        if self._bgd is not None:
            _stop(self._bgd, timeout=5)
        self._start_buildgrid(port=self.port)

    # -- PostgreSQL -------------------------------------------------------------------------
    def _pg(self, program: str, *args: str, check: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        assert self._pg_bin is not None
        argv = [str(self._pg_bin / program), *args]
        if self._pg_user:
            argv = ["runuser", "-u", self._pg_user, "--", *argv]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              cwd=self._pg_dir, stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"{program} {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def _start_postgres(self) -> None:
        if self._pg_user:
            shutil.chown(self._pg_dir, self._pg_user, self._pg_user)
        data = self._pg_dir / "data"
        self._pg("initdb", "-D", str(data), "-U", "bgd", "--auth=trust", "-E", "UTF8",
                 "--no-sync")
        for attempt in range(3):  # a free port may be taken before the server binds it
            port = free_port()
            proc = self._pg("pg_ctl", "-D", str(data), "-l", str(self._pg_dir / "postgres.log"),
                            "-w", "-t", "30", "start", "-o",
                            f"-p {port} -k {self._pg_dir} -c listen_addresses=127.0.0.1 "
                            "-c fsync=off -c max_connections=200", check=attempt == 2)
            if proc.returncode == 0:
                break
        self._pg_started = True
        self._pg("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "bgd", "bgd")
        # psycopg2 through SQLAlchemy: BuildGrid's job-completion notifications need it
        # (a plain postgresql:// URL picks another driver, and operations never complete).
        self.db_url = f"postgresql+psycopg2://bgd@127.0.0.1:{port}/bgd"

    def _migrate(self) -> None:
        proc = subprocess.run([str(BGD), "migrate", "apply", self.db_url], capture_output=True,
                              text=True, timeout=120, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise AssertionError(f"bgd migrate apply failed:\n{proc.stdout}\n{proc.stderr}")

    # -- BuildGrid --------------------------------------------------------------------------
    def _start_buildgrid(self, port: int = 0) -> None:
        cas_dir = self.root / "cas"
        cas_dir.mkdir(exist_ok=True)
        self.port = port or free_port()
        self.addr = f"127.0.0.1:{self.port}"
        config = self.root / "bgd.yml"
        config.write_text(CONFIG.format(
            port=self.port, db_url=self.db_url, cas_dir=cas_dir, keepalive=self.keepalive_s,
            match_keys=", ".join(MATCH_KEYS), instance=self.instance))
        log = open(self.root / "bgd.log", "ab")  # noqa: SIM115 - lives with the process
        self._bgd = subprocess.Popen([str(BGD), "server", "start", str(config)], stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        proc = self._bgd
        wait_for("BuildGrid to answer GetCapabilities",
                 lambda: _exited(proc) or self._capabilities_ok(), timeout=START_TIMEOUT,
                 interval=0.3)
        if proc.poll() is not None:
            raise AssertionError(f"bgd server exited with {proc.returncode}:\n{self.log()}")

    def _capabilities_ok(self) -> bool:
        """One GetCapabilities call, as raw bytes: no stubs needed to know it is up."""
        request = b"\x0a" + bytes([len(self.instance)]) + self.instance.encode()
        with grpc.insecure_channel(self.addr) as channel:
            call = channel.unary_unary(
                "/build.bazel.remote.execution.v2.Capabilities/GetCapabilities")
            call(request, timeout=2)
        return True


class Bot:
    """``cargo-distbuild worker join`` as a process, with its own DISTBUILD_HOME and log."""

    def __init__(self, farm: BuildGridFarm, root: Path, bot_id: str, capacity: int = 2):
        self.log_path = root / f"{bot_id}.log"
        env = dict(os.environ, DISTBUILD_HOME=str(root / f"{bot_id}-home"),
                   PATH=f"{BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [CLI, "-v", "worker", "join", "--farm", farm.addr, "--instance", farm.instance,
                 "--id", bot_id, "--capacity", str(capacity)],
                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for(f"bot {bot_id} to open its session",
                 lambda: self.proc.poll() is not None or "session" in self.log(), timeout=60)
        assert self.proc.poll() is None, f"bot {bot_id} exited:\n{self.log()}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


def _exited(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is not None


def _stop(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM the process group, SIGKILL it if it lingers."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    proc.wait(timeout=30)
