"""Wasm tasks end to end: ``cargo-distbuild job submit`` in-process and through a real scheduler
with a wasm worker (separate processes on loopback), and a WASI build action routed by the
scheduler to the wasm worker (the issue's tests 4 and 5).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from distbuild.cas.digest import Digest
from distbuild.executors.wasm_toolchain import find_wasi_cc, wat_to_wasm

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "wasm"
CLI = [sys.executable, "-m", "distbuild.cli.main"]
_START_TIMEOUT_S = 30.0


def _env(home: Path, scheduler: str = "") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTBUILD_")}
    env["DISTBUILD_HOME"] = str(home)
    if scheduler:
        env["DISTBUILD_SCHEDULER"] = scheduler
    return env


def _submit(home: Path, *args: str, scheduler: str = "") -> dict[str, object]:
    proc = subprocess.run([*CLI, "job", "submit", *args], env=_env(home, scheduler),
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert isinstance(result, dict)
    return result


def _start(argv: list[str], env: dict[str, str], pattern: str, log: Path
           ) -> tuple[subprocess.Popen[str], re.Match[str]]:
    """Start a server process and wait (bounded) for the line announcing its address."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=log.open("w"),
                            text=True)
    deadline = time.monotonic() + _START_TIMEOUT_S
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        match = re.search(pattern, line)
        if match:
            return proc, match
    proc.kill()
    raise AssertionError(f"{argv} did not start: {log.read_text()[-2000:]}")


@dataclass
class Cluster:
    addr: str
    home: Path


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A scheduler, a wasm worker and a local worker, as separate processes."""
    procs: list[subprocess.Popen[str]] = []
    try:
        sched, m = _start([*CLI, "scheduler", "run", "--addr", "127.0.0.1:0"],
                          _env(tmp_path / "scheduler"), r"listening on (\S+:\d+)",
                          tmp_path / "scheduler.log")
        procs.append(sched)
        addr = m.group(1)
        for wid, kind in (("wasm-1", "wasm"), ("local-1", "local")):
            worker, _ = _start([*CLI, "worker", "run", "--id", wid, "--scheduler", addr,
                                "--executor", kind, "--capacity", "1"],
                               _env(tmp_path / wid), r"serving on", tmp_path / f"{wid}.log")
            procs.append(worker)
        yield Cluster(addr, tmp_path / "client")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture(scope="module")
def gen_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = find_wasi_cc()
    if cc is None:
        pytest.skip("no wasm32-wasi C toolchain (run scripts/setup.d/wasi-toolchain.sh)")
    out = tmp_path_factory.mktemp("gen")
    return cc.compile(FIXTURES / "gen.c", out / "gen.wasm")


@pytest.fixture(scope="module")
def probe_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = find_wasi_cc()
    if cc is None:
        pytest.skip("no wasm32-wasi C toolchain (run scripts/setup.d/wasi-toolchain.sh)")
    out = tmp_path_factory.mktemp("probe")
    return cc.compile(FIXTURES / "probe.c", out / "probe.wasm")


def _task_args(module: Path, names: Path) -> list[str]:
    return ["--wasm", str(module), "--input", f"{names}=data/names.txt", "--fuel", "100000000",
            "--wait", "--json", "--", "/data/names.txt", "/out/gen.rs"]


def test_identical_task_is_cached_with_the_same_receipt_in_process(
    gen_module: Path, tmp_path: Path
) -> None:
    """Without a scheduler: the second identical submission is cached, same receipt, no run."""
    names = tmp_path / "names.txt"
    names.write_text("alpha\nbeta\n")
    home = tmp_path / "home"
    first = _submit(home, *_task_args(gen_module, names))
    second = _submit(home, *_task_args(gen_module, names))
    assert (first["cached"], second["cached"]) == (False, True)
    assert first["receipt"] == second["receipt"]
    assert first["job_id"] != second["job_id"]
    assert (first["exit_code"], first["stdout"]) == (0, "generated 2 names\n")
    assert second["stdout"] == first["stdout"]
    assert list(first["outputs"]) == ["out/gen.rs"]  # type: ignore[call-overload]
    names.write_text("alpha\nbeta\ngamma\n")
    third = _submit(home, *_task_args(gen_module, names))
    assert third["cached"] is False and third["receipt"] != first["receipt"]


def test_identical_task_through_the_scheduler_is_cached_with_the_same_receipt(
    gen_module: Path, cluster: Cluster, tmp_path: Path
) -> None:
    """Through a scheduler and a wasm worker: same contract, outputs and receipt in its CAS."""
    from distbuild.config import Config
    from distbuild.reapi.cas_client import RemoteCAS

    names = tmp_path / "names.txt"
    names.write_text("one\ntwo\nthree\n")
    first = _submit(cluster.home, *_task_args(gen_module, names), scheduler=cluster.addr)
    second = _submit(cluster.home, *_task_args(gen_module, names), scheduler=cluster.addr)
    assert (first["cached"], second["cached"]) == (False, True)
    assert first["receipt"] == second["receipt"]
    assert first["worker"] == "wasm-1"
    assert first["stdout"] == "generated 3 names\n"
    outputs = first["outputs"]
    assert isinstance(outputs, dict) and list(outputs) == ["out/gen.rs"]
    cas = RemoteCAS(cluster.addr, Config(home=tmp_path / "reader"))
    try:
        generated = cas.get_bytes(Digest.parse(outputs["out/gen.rs"])).decode()
        receipt = json.loads(cas.get_bytes(Digest.parse(str(first["receipt"]))))
    finally:
        cas.close()
    assert '"three",' in generated
    assert (receipt["task"], receipt["worker"]) == (first["task"], "wasm-1")
    assert receipt["fuel_consumed"] == first["fuel_consumed"] > 0
    spin = tmp_path / "spin.wasm"
    spin.write_bytes(wat_to_wasm((FIXTURES / "spin.wat").read_text()))
    proc = subprocess.run([*CLI, "job", "submit", "--wasm", str(spin), "--fuel", "1000",
                           "--wait", "--json"], env=_env(cluster.home, cluster.addr),
                          capture_output=True, text=True, timeout=120, check=False)
    stopped = json.loads(proc.stdout)
    assert proc.returncode == 1
    assert (stopped["failure"], stopped["cached"]) == ("out of fuel", False)
    names.write_text("after\n")  # the worker is still healthy and runs the next task
    after = _submit(cluster.home, *_task_args(gen_module, names), scheduler=cluster.addr)
    assert (after["exit_code"], after["worker"], after["cached"]) == (0, "wasm-1", False)


def test_same_task_prints_the_same_on_a_worker_and_in_process(
    probe_module: Path, cluster: Cluster, tmp_path: Path
) -> None:
    """Time, random bytes, directory listings and file metadata are identical on a worker
    process and in an in-process executor (other sandboxes, other moments, other caches)."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("zz.txt", "aa.txt", "mm.txt"):
        (inputs / name).write_text(name)
    args = ["--wasm", str(probe_module), "--input", f"{inputs}=in", "--env", "FOO=bar",
            "--wait", "--json"]
    remote = _submit(cluster.home, *args, scheduler=cluster.addr)
    local = _submit(tmp_path / "elsewhere", *args)
    assert (remote["worker"], local["worker"]) == ("wasm-1", "local")
    assert remote["task"] == local["task"]
    assert remote["stdout"] == local["stdout"]
    assert "random " in str(local["stdout"]) and "entry aa.txt" in str(local["stdout"])


def test_build_action_with_a_wasi_program_runs_on_the_wasm_worker(
    gen_module: Path, cluster: Cluster, tmp_path: Path
) -> None:
    """A REAPI build action whose argv[0] is a .wasm input goes to the wasm worker; its output
    lands in the CAS."""
    from distbuild.config import Config
    from distbuild.reapi.cas_client import RemoteCAS
    from distbuild.scheduler.action_builder import InputFile, prepare_action
    from distbuild.scheduler.client import SchedulerClient

    prepared = prepare_action(
        ["tools/gen.wasm", "/data/names.txt", "/out/gen.rs"],
        files={"tools/gen.wasm": InputFile.of(gen_module),
               "data/names.txt": InputFile.of(b"red\ngreen\n")},
        output_paths=("out/gen.rs",), platform=(("executor", "wasm"),), timeout_s=60.0,
    )
    cfg = Config(home=tmp_path / "client")
    cas = RemoteCAS(cluster.addr, cfg)
    client = SchedulerClient(cluster.addr, cfg)
    try:
        cas.upload(prepared.blobs)
        job = client.wait(client.submit(prepared.digest).job_id, timeout=60.0)
        assert job.state == "COMPLETED", job.error
        assert job.worker_id == "wasm-1"
        assert job.result is not None and job.result.exit_code == 0
        assert [o.path for o in job.result.output_files] == ["out/gen.rs"]
        generated = cas.get_bytes(job.result.output_files[0].digest).decode()
        assert generated == 'pub const NAMES: &[&str] = &[\n    "red",\n    "green",\n];\n'
        assert job.result.metadata.fuel_consumed > 0
    finally:
        client.close()
        cas.close()


def test_module_given_by_digest_and_a_failing_task_is_not_cached(tmp_path: Path) -> None:
    """--wasm takes a digest of a module already in the CAS; a stopped run is not cached."""
    home = tmp_path / "home"
    module = tmp_path / "spin.wasm"
    module.write_bytes(wat_to_wasm((FIXTURES / "spin.wat").read_text()))
    put = subprocess.run([*CLI, "cas", "put", str(module)], env=_env(home), capture_output=True,
                         text=True, timeout=60, check=True)
    digest = put.stdout.strip()
    args = ["--wasm", digest, "--fuel", "1000", "--wait", "--json"]
    first = subprocess.run([*CLI, "job", "submit", *args], env=_env(home), capture_output=True,
                           text=True, timeout=60, check=False)
    again = subprocess.run([*CLI, "job", "submit", *args], env=_env(home), capture_output=True,
                           text=True, timeout=60, check=False)
    one, two = json.loads(first.stdout), json.loads(again.stdout)
    assert (first.returncode, one["failure"], one["cached"]) == (1, "out of fuel", False)
    assert (two["failure"], two["cached"]) == ("out of fuel", False)
