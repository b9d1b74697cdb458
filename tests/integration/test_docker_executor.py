"""The Docker executor against a real engine: isolation, capture, limits, real compilations.

The host toolchain is packaged once into ``.pytest_cache`` and its image
(``distbuild-toolchain:<hash16>``) is deliberately kept between runs; every container these
tests create is removed, which the last test checks.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from distbuild.cas.store import LocalCAS
from distbuild.config import Config, WorkerConfig
from distbuild.errors import InvalidRequest
from distbuild.executors.base import ExecOutcome, ExecSpec
from distbuild.executors.local import LocalExecutor
from distbuild.toolchain import Toolchain

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

docker_mod = pytest.importorskip("docker")

from distbuild.executors.docker import DockerExecutor, connect  # noqa: E402
from distbuild.executors.docker_testing import (  # noqa: E402
    build_probe,
    host_rustc,
    host_toolchain,
    leftover_containers,
)
from tests.integration.docker_engine import connect_or_skip  # noqa: E402

WORKER_ID = f"test-exec-{uuid.uuid4().hex[:8]}"


@dataclass
class Env:
    executor: DockerExecutor
    store: LocalCAS
    toolchain: Toolchain
    probe: Path
    home: Path

    def spec(self, *argv: str, outputs: tuple[str, ...] = ("out/done",), timeout: float = 60,
             **kw: object) -> ExecSpec:
        return ExecSpec(argv=argv, output_paths=outputs, timeout_s=timeout,
                        properties=(self.toolchain.platform_property,), **kw)  # type: ignore[arg-type]

    def sandbox(self, tmp: Path) -> Path:
        box = tmp / f"sandbox-{uuid.uuid4().hex[:6]}"
        (box / "bin").mkdir(parents=True)
        shutil.copy2(self.probe, box / "bin" / "probe")
        (box / "src").mkdir()
        (box / "src" / "input.txt").write_text("an input\n")
        return box

    def run(self, spec: ExecSpec, box: Path, cancel: threading.Event | None = None) -> ExecOutcome:
        return self.executor.run(spec, box, cancel or threading.Event())


@pytest.fixture(scope="module")
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[Env]:
    api = connect_or_skip()
    cache = Path(request.config.cache.mkdir("distbuild-docker"))
    store, tc = host_toolchain(cache)
    home = tmp_path_factory.mktemp("docker-home")
    cfg = Config(home=home, worker=WorkerConfig(memory_limit="512m", pids_limit=128))
    probe = build_probe(tmp_path_factory.mktemp("probe") / "probe")
    executor = DockerExecutor(cfg, store, worker_id=WORKER_ID, api=api)
    yield Env(executor, store, tc, probe, home)
    executor.close()
    left = leftover_containers(connect(), WORKER_ID)
    assert left == [], f"containers left behind: {left}"


def _host_address() -> str:
    """A non-loopback IPv4 address of this host (what a container on a bridge could reach);
    loopback on a machine without any route (then the test is weaker but still meaningful)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))  # UDP connect sends nothing; it only picks a route
            return str(s.getsockname()[0])
    except OSError:
        return "127.0.0.1"


def test_network_is_unreachable(env: Env, tmp_path: Path) -> None:
    """An action cannot open a TCP connection to the host, which the local executor can."""
    host_ip = _host_address()
    server = socket.create_server((host_ip, 0))
    addr = f"{host_ip}:{server.getsockname()[1]}"
    box = env.sandbox(tmp_path)
    try:
        local = LocalExecutor().run(env.spec("bin/probe", "connect", addr), box,
                                    threading.Event())
        assert (local.exit_code, local.stdout) == (0, f"connected to {addr}\n".encode())
        docker = env.run(env.spec("bin/probe", "connect", addr), box)
    finally:
        server.close()
    assert docker.exit_code == 3, docker
    if host_ip != "127.0.0.1":
        assert b"Network is unreachable" in docker.stderr


def test_writes_outside_the_output_directory_fail(env: Env, tmp_path: Path) -> None:
    """Only the output directory is writable: inputs, the sandbox root and the image are not."""
    box = env.sandbox(tmp_path)
    targets = ["out/done", "src/input.txt", "src/new.txt", "new-at-root", "/toolchain/x",
               "/usr/bin/evil", "/evil"]
    result = env.run(env.spec("bin/probe", "write", *targets), box)
    assert result.exit_code == 4
    assert result.stdout == b"wrote out/done\n"
    for t in targets[1:]:
        assert f"write {t} failed: Read-only file system".encode() in result.stderr, t
    assert (box / "out" / "done").read_text() == "written by the probe\n"
    assert (box / "src" / "input.txt").read_text() == "an input\n"
    assert not (box / "src" / "new.txt").exists() and not (box / "new-at-root").exists()


def test_an_output_at_the_top_of_the_sandbox_can_be_written(env: Env, tmp_path: Path) -> None:
    """With an output at the top level the root is writable (one mount, not two)."""
    box = env.sandbox(tmp_path)
    result = env.run(env.spec("bin/probe", "write", "top.txt", outputs=("top.txt",)), box)
    assert (result.exit_code, result.stdout) == (0, b"wrote top.txt\n")
    assert (box / "top.txt").read_text() == "written by the probe\n"


def test_runs_as_non_root_without_capabilities(env: Env, tmp_path: Path) -> None:
    """The action's process is not root and holds no capabilities."""
    out = env.run(env.spec("bin/probe", "status"), env.sandbox(tmp_path))
    status = dict(line.split(":", 1) for line in out.stdout.decode().splitlines() if ":" in line)
    assert status["Uid"].split()[0] != "0"
    assert status["CapEff"].strip() == "0000000000000000"


def test_stdout_stderr_and_exit_code_are_captured_exactly(env: Env, tmp_path: Path) -> None:
    """Binary stdout (1 MiB), non-UTF-8 stderr and the exit code match the local executor's."""
    box = env.sandbox(tmp_path)
    spec = env.spec("bin/probe", "bytes", str(1 << 20), "7")
    local = LocalExecutor().run(spec, box, threading.Event())
    docker = env.run(spec, box)
    assert (docker.exit_code, docker.stdout, docker.stderr) == (
        local.exit_code, local.stdout, local.stderr)
    assert docker.exit_code == 7 and len(docker.stdout) == 1 << 20


def test_timeout_kills_the_container(env: Env, tmp_path: Path) -> None:
    """Past its timeout the action is killed and reported like the local executor does."""
    start = time.monotonic()
    out = env.run(env.spec("bin/probe", "sleep", "60", timeout=1.0), env.sandbox(tmp_path))
    assert (out.failure, out.exit_code) == ("timed out", -9)
    assert time.monotonic() - start < 15


def test_cancel_kills_the_container(env: Env, tmp_path: Path) -> None:
    """Setting the cancel event kills the running container promptly."""
    cancel = threading.Event()
    threading.Timer(1.0, cancel.set).start()
    start = time.monotonic()
    out = env.run(env.spec("bin/probe", "sleep", "60"), env.sandbox(tmp_path), cancel)
    assert out.failure == "cancelled"
    assert time.monotonic() - start < 15


def test_memory_limit_is_enforced(env: Env, tmp_path: Path) -> None:
    """An action allocating past the worker's memory limit (512 MiB here) is killed."""
    out = env.run(env.spec("bin/probe", "alloc", "1024"), env.sandbox(tmp_path))
    assert out.exit_code == -9, out
    assert out.failure == "memory limit"
    small = env.run(env.spec("bin/probe", "alloc", "64"), env.sandbox(tmp_path))
    assert (small.exit_code, small.stdout) == (0, b"allocated 64 MiB\n")


def test_pids_limit_is_enforced(env: Env, tmp_path: Path) -> None:
    """An action cannot start more tasks than the worker's pids limit (128 here)."""
    out = env.run(env.spec("bin/probe", "threads", "400"), env.sandbox(tmp_path))
    assert out.exit_code == 5, out
    assert b"Resource temporarily unavailable" in out.stderr
    ok = env.run(env.spec("bin/probe", "threads", "50"), env.sandbox(tmp_path))
    assert (ok.exit_code, ok.stdout) == (0, b"50 threads\n")


def test_cpu_limit_is_applied(env: Env, tmp_path: Path) -> None:
    """cpu_limit = 0.5 gives the container a CFS quota of half a CPU (cgroup v1 or v2)."""
    cfg = Config(home=env.home, worker=WorkerConfig(cpu_limit=0.5))
    executor = DockerExecutor(cfg, env.store, worker_id=WORKER_ID, api=connect())
    try:
        box = env.sandbox(tmp_path)
        v1 = executor.run(env.spec("bin/probe", "cat", "/sys/fs/cgroup/cpu/cpu.cfs_quota_us"),
                          box, threading.Event())
        v2 = executor.run(env.spec("bin/probe", "cat", "/sys/fs/cgroup/cpu.max"), box,
                          threading.Event())
    finally:
        executor.close()
    assert v1.stdout.strip() == b"50000" or v2.stdout.split()[:1] == [b"50000"], (v1, v2)


def test_action_without_toolchain_is_refused(env: Env, tmp_path: Path) -> None:
    """The docker executor refuses an action that does not name its toolchain."""
    with pytest.raises(InvalidRequest):
        env.run(replace(env.spec("bin/probe", "status"), properties=()), env.sandbox(tmp_path))


CRATE_LIB = "pub fn answer() -> u32 { 6 * 7 }\n"
CRATE_MACRO = """extern crate proc_macro;
use proc_macro::TokenStream;
#[proc_macro]
pub fn twice(input: TokenStream) -> TokenStream {
    format!("({0}) + ({0})", input).parse().unwrap()
}
"""
CRATE_BIN = """fn main() {
    println!("answer={} twice={}", lib::answer(), mac::twice!(21));
}
"""


def _compile_steps(rustc: str) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    common = ("--edition=2021", "-C", "debuginfo=1", "--out-dir", "out")
    return [
        ((rustc, "--crate-name", "lib", "--crate-type", "rlib", "src/lib.rs", *common),
         ("out/liblib.rlib",)),
        ((rustc, "--crate-name", "mac", "--crate-type", "proc-macro", "src/mac.rs", *common),
         ("out/libmac.so",)),
        ((rustc, "--crate-name", "app", "--crate-type", "bin", "src/main.rs", *common,
          "--extern", "lib=out/liblib.rlib", "--extern", "mac=out/libmac.so"), ("out/app",)),
    ]


def test_compiles_and_links_a_crate_like_the_host(env: Env, tmp_path: Path) -> None:
    """rlib, proc-macro and a linked bin built in containers run, and equal the host's bytes."""
    box = tmp_path / "crate"
    (box / "src").mkdir(parents=True)
    (box / "src" / "lib.rs").write_text(CRATE_LIB)
    (box / "src" / "mac.rs").write_text(CRATE_MACRO)
    (box / "src" / "main.rs").write_text(CRATE_BIN)
    built: dict[str, dict[str, bytes]] = {}
    for name, executor in (("local", LocalExecutor()), ("docker", env.executor)):
        shutil.rmtree(box / "out", ignore_errors=True)
        for argv, outputs in _compile_steps(host_rustc()):
            spec = env.spec(*argv, outputs=outputs, env=(("PATH", "/usr/bin:/bin"),))
            out = executor.run(spec, box, threading.Event())
            assert out.exit_code == 0, (name, out.stderr.decode())
        built[name] = {p.name: p.read_bytes() for p in sorted((box / "out").iterdir())}
        run = subprocess.run([str(box / "out" / "app")], capture_output=True, text=True)
        assert run.stdout == "answer=42 twice=42\n"
    assert sorted(built["docker"]) == sorted(built["local"])
    for name in built["local"]:
        assert built["docker"][name] == built["local"][name], f"{name} differs"


def test_image_removed_behind_the_executors_back_is_rebuilt(env: Env, tmp_path: Path) -> None:
    """After `docker rmi` of a toolchain image the next action re-imports it and runs."""
    from distbuild.executors.docker_image import remove_toolchain_image

    assert remove_toolchain_image(env.executor.api, env.toolchain.digest)
    out = env.run(env.spec("bin/probe", "sleep", "0"), env.sandbox(tmp_path))
    assert (out.exit_code, out.failure) == (0, "")


def test_unknown_toolchain_is_reported_missing(env: Env, tmp_path: Path) -> None:
    """A toolchain digest the CAS does not hold fails with BlobNotFound (not retried)."""
    from distbuild.cas.digest import digest_bytes
    from distbuild.errors import BlobNotFound

    spec = replace(env.spec("bin/probe", "status"),
                   properties=(("toolchain", str(digest_bytes(b"no such toolchain"))),))
    with pytest.raises(BlobNotFound):
        env.run(spec, env.sandbox(tmp_path))


def test_no_container_is_left(env: Env) -> None:
    """After all of the above, this worker id has no container left, running or stopped."""
    env.executor.wait_removed()
    assert leftover_containers(env.executor.api, WORKER_ID) == []
