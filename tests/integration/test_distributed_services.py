"""Issue 3, tests 3-6: scheduler restart, auth and malformed requests, digest verification,
and the REPL, against real scheduler and worker processes on loopback."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from distbuild import codec as convert
from distbuild._proto.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb
from distbuild._proto.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from distbuild.actions import Directory, FileNode
from distbuild.cas.digest import digest_bytes
from distbuild.config import AuthConfig, Config
from distbuild.errors import (
    AuthError,
    BlobTooLarge,
    CorruptBlob,
    InvalidDigest,
    InvalidRequest,
    NoSuitableWorker,
    Unavailable,
)
from distbuild.reapi.cas_client import RemoteCAS
from distbuild.rpc.server import make_channel
from distbuild.rpc.status import error_from_rpc
from distbuild.scheduler.action_builder import InputFile, prepare_action
from tests.integration.cluster import FAST_CONFIG, Cluster, wait_for

LOCAL = (("executor", "local"),)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "cluster")
    yield c
    c.stop()


def _cfg(tmp_path: Path, token: str = "") -> Config:
    return Config(home=tmp_path / "client", auth=AuthConfig(token=token))


def _scheduler_blobs(cluster: Cluster) -> set[str]:
    root = cluster.root / "scheduler-home" / "scheduler" / "cas" / "blobs"
    return {p.name for p in root.rglob("*") if p.is_file()}


def test_queued_jobs_survive_a_scheduler_restart(tmp_path: Path, cluster: Cluster) -> None:
    """Jobs queued when the scheduler is killed complete after it restarts."""
    cluster.start_scheduler()
    cluster.start_worker("w1", capacity=1)
    cas = RemoteCAS(cluster.addr, _cfg(tmp_path))
    client = cluster.client()
    job_ids = []
    for i in range(4):
        prepared = prepare_action(["/bin/sh", "-c", f"sleep 0.7; echo job{i} > out.txt"], {},
                                  output_paths=("out.txt",), platform=LOCAL)
        cas.upload(prepared.blobs)
        job_ids.append(client.submit(prepared.digest).job_id)
    assert sum(client.get_job(j).state == "QUEUED" for j in job_ids) >= 2
    cluster.kill("scheduler", signal.SIGKILL)
    time.sleep(0.5)
    cluster.start_scheduler()
    done = [client.wait(j, timeout=60) for j in job_ids]
    assert [j.state for j in done] == ["COMPLETED"] * 4
    outputs = [cas.get_bytes(j.result.output_files[0].digest) for j in done if j.result]
    assert outputs == [f"job{i}\n".encode() for i in range(4)]


def test_token_required(tmp_path: Path) -> None:
    """With a token configured, calls without it or with a wrong one are refused clearly."""
    cluster = Cluster(tmp_path / "cluster", token="s3cret")
    try:
        cluster.start_scheduler()
        for token, words in (("", "missing auth token"), ("nope", "wrong auth token")):
            with pytest.raises(AuthError, match=words):
                RemoteCAS(cluster.addr, _cfg(tmp_path, token)).put_bytes(b"x")
        assert _scheduler_blobs(cluster) == set()
        digest = RemoteCAS(cluster.addr, _cfg(tmp_path, "s3cret")).put_bytes(b"x")
        assert _scheduler_blobs(cluster) == {digest.hash}
        cluster.start_worker("w1", capacity=1)  # workers authenticate with the same token
        assert [w.state for w in cluster.client().list_workers()] == ["ALIVE"]
    finally:
        cluster.stop()


def test_malformed_requests_refused(tmp_path: Path) -> None:
    """Bad digests, oversized blobs and mismatching bytes are refused; nothing is stored."""
    cluster = Cluster(tmp_path / "cluster", config=FAST_CONFIG + "[cache]\nmax_size = 65536\n")
    try:
        cluster.start_scheduler()
        channel = make_channel(cluster.addr, _cfg(tmp_path))
        stub = re_grpc.ContentAddressableStorageStub(channel)
        cas = RemoteCAS(cluster.addr, _cfg(tmp_path), channel=channel)

        with pytest.raises(grpc.RpcError) as info:
            stub.FindMissingBlobs(re_pb.FindMissingBlobsRequest(
                blob_digests=[re_pb.Digest(hash="xyz", size_bytes=1)],
                digest_function=re_pb.DigestFunction.BLAKE3))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "malformed digest 'xyz'" in info.value.details()
        with pytest.raises(grpc.RpcError) as info:  # unnamed, and not SHA-256's length
            stub.FindMissingBlobs(re_pb.FindMissingBlobsRequest(
                blob_digests=[re_pb.Digest(hash="ab" * 20, size_bytes=1)]))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "cannot infer the digest function" in info.value.details()
        with pytest.raises(InvalidDigest, match="negative blob size"):
            _raise_from(stub.BatchUpdateBlobs, re_pb.BatchUpdateBlobsRequest(
                digest_function=re_pb.DigestFunction.BLAKE3, requests=[
                    re_pb.BatchUpdateBlobsRequest.Request(
                        digest=re_pb.Digest(hash="0" * 64, size_bytes=-1), data=b"")]))
        big = b"z" * 100_000
        with pytest.raises(BlobTooLarge, match="larger than this store's cap"):
            cas.put_bytes(big)
        good, bad = b"good bytes", b"bad bytes"
        with pytest.raises(CorruptBlob, match="not the claimed"):
            cas._batch_update([(digest_bytes(good), good), (digest_bytes(good), bad)])
        assert _scheduler_blobs(cluster) == set()
    finally:
        cluster.stop()


def _raise_from(method: object, request: object) -> None:
    try:
        method(request, timeout=10)  # type: ignore[operator]
    except grpc.RpcError as e:
        raise error_from_rpc(e) from e


def test_streamed_upload_with_wrong_bytes_refused(tmp_path: Path, cluster: Cluster) -> None:
    """A large blob streamed with bytes that do not match its digest is refused, not stored."""
    cluster.start_scheduler()
    cas = RemoteCAS(cluster.addr, _cfg(tmp_path))
    claimed = digest_bytes(b"a" * (4 << 20))
    with pytest.raises(CorruptBlob):
        cas._write_stream(claimed, b"b" * (4 << 20))
    assert _scheduler_blobs(cluster) == set()
    real = b"c" * (5 << 20)
    digest = cas.put_bytes(real)
    assert cas.get_bytes(digest) == real


def test_input_path_escape_refused(tmp_path: Path, cluster: Cluster) -> None:
    """An input tree naming '..' or a symlink out of the sandbox fails the job clearly, and
    nothing runs."""
    cluster.start_scheduler()
    cluster.start_worker("w1", capacity=1)
    cas = RemoteCAS(cluster.addr, _cfg(tmp_path))
    client = cluster.client()
    marker = tmp_path / "ran"
    payload = digest_bytes(b"evil")
    evil = Directory(files=(FileNode("..", payload),))
    evil_blob = convert.encode_directory(evil)
    prepared = prepare_action(["/bin/sh", "-c", f"touch {marker}"], {}, platform=LOCAL)
    bad_action = replace(prepared.action, input_root_digest=digest_bytes(evil_blob))
    bad_blob = convert.encode_action(bad_action)
    cas.upload({**prepared.blobs, digest_bytes(evil_blob): evil_blob, payload: b"evil",
                digest_bytes(bad_blob): bad_blob})
    job = client.wait(client.submit(digest_bytes(bad_blob)).job_id, timeout=60)
    assert job.state == "FAILED"
    assert job.error_kind == "PathEscape" and "'..'" in job.error
    assert job.attempts == 1  # an invalid request is never retried
    assert not marker.exists()
    with pytest.raises(InvalidRequest, match="escapes its sandbox"):
        prepare_action(["true"], {"../x": InputFile.of(b"x")})


def test_repl_commands(tmp_path: Path, cluster: Cluster, capsys: pytest.CaptureFixture[str],
                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The REPL runs cas put/list/get, jobs list, workers list, scheduler status and job
    status through prompt-toolkit input; errors print a message, not a traceback."""
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    from distbuild.cli.repl import run_repl

    cluster.start_scheduler()
    cluster.start_worker("w1", capacity=1)
    monkeypatch.setenv("DISTBUILD_SCHEDULER", cluster.addr)
    monkeypatch.setenv("DISTBUILD_HOME", str(tmp_path / "repl-home"))
    monkeypatch.delenv("DISTBUILD_TOKEN", raising=False)
    src = tmp_path / "hello.txt"
    src.write_bytes(b"hello repl\n")
    digest = digest_bytes(b"hello repl\n")
    out = tmp_path / "copy.txt"
    lines = [f"cas put {src}", "cas list", f"cas get {digest} {out}", "workers list",
             "jobs list", "scheduler status", "job status no-such-job", "frobnicate",
             "cas get", "help", "exit"]
    with create_pipe_input() as pipe:
        pipe.send_text("\n".join(lines) + "\n")
        assert run_repl(input=pipe, output=DummyOutput()) == 0
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert str(digest) in text
    assert out.read_bytes() == b"hello repl\n"
    assert "w1" in text and "ALIVE" in text
    assert "workers alive" in text
    assert "no job 'no-such-job'" in text
    assert "unknown command: frobnicate" in text
    assert "Traceback" not in text


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_cancel_and_timeout_kill_the_process(tmp_path: Path, cluster: Cluster) -> None:
    """Cancelling a running job, or letting it pass its timeout, kills its process."""
    cluster.start_scheduler()
    cluster.start_worker("w1", capacity=2)
    cas = RemoteCAS(cluster.addr, _cfg(tmp_path))
    client = cluster.client()
    pids = {}
    jobs = {}
    for name, timeout in (("cancelled", 0.0), ("timed-out", 1.0)):
        pidfile = tmp_path / f"{name}.pid"
        prepared = prepare_action(["/bin/sh", "-c", f"echo $$ > {pidfile}; exec sleep 60"], {},
                                  platform=LOCAL, timeout_s=timeout)
        cas.upload(prepared.blobs)
        jobs[name] = client.submit(prepared.digest).job_id
        pids[name] = int(wait_for(f"{name} to start", lambda p=pidfile: p.exists() and
                                  p.read_text().strip(), timeout=30))
    client.cancel(jobs["cancelled"])
    for name, state, kind in (("cancelled", "CANCELLED", "ActionCancelled"),
                              ("timed-out", "FAILED", "ActionTimeout")):
        job = client.wait(jobs[name], timeout=30)
        assert (job.state, job.error_kind) == (state, kind), job.error
        wait_for(f"the {name} process to be killed",
                 lambda pid=pids[name]: not _pid_alive(pid), timeout=10)


def test_tls_with_token(tmp_path: Path) -> None:
    """With cert/key configured the scheduler serves TLS (workers and clients verify it with
    the CA), and a plaintext client cannot talk to it."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    tls = (f'[auth]\ntoken = "t0k"\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
           f'tls_ca = "{cert}"\n')
    cluster = Cluster(tmp_path / "cluster", config=FAST_CONFIG + tls, token="t0k",
                      tls_ca=str(cert))
    try:
        cluster.start_scheduler()
        cluster.start_worker("w1", capacity=1)
        secure = Config(home=tmp_path / "client",
                        auth=AuthConfig(token="t0k", tls_ca=str(cert)))
        cas = RemoteCAS(cluster.addr, secure, timeout=10)
        digest = cas.put_bytes(b"over tls")
        assert cas.get_bytes(digest) == b"over tls"
        with pytest.raises(Unavailable):
            RemoteCAS(cluster.addr, _cfg(tmp_path, "t0k"), timeout=5).get_bytes(digest)
    finally:
        cluster.stop()


def test_worker_shutdown_hands_jobs_back(tmp_path: Path, cluster: Cluster) -> None:
    """A worker stopped with SIGTERM kills its running job and hands it back at once: it runs
    again on another worker (no heartbeat timeout to wait for)."""
    cluster.start_scheduler()
    cluster.start_worker("w1", capacity=1)
    cas = RemoteCAS(cluster.addr, _cfg(tmp_path))
    client = cluster.client()
    marker = tmp_path / "started-once"
    script = f"if [ -e {marker} ]; then echo second; else touch {marker}; exec sleep 60; fi"
    prepared = prepare_action(["/bin/sh", "-c", script], {}, platform=LOCAL)
    cas.upload(prepared.blobs)
    job_id = client.submit(prepared.digest).job_id
    wait_for("the job to start on w1", marker.exists, timeout=30)
    cluster.start_worker("w2", capacity=1)
    cluster.kill("w1", signal.SIGTERM)
    job = client.wait(job_id, timeout=30)
    assert (job.state, job.worker_id, job.attempts) == ("COMPLETED", "w2", 2)
    assert job.result is not None and job.result.stdout_digest is not None
    assert cas.get_bytes(job.result.stdout_digest) == b"second\n"


def test_worker_with_two_executors(tmp_path: Path, cluster: Cluster) -> None:
    """A worker started with two executor kinds offers both; an action picks one by its
    platform's executor property."""
    cluster.start_scheduler()
    cluster.start_worker("w1", capacity=1, args=("--executor", "local", "--executor", "wasm"))
    client = cluster.client()
    (worker,) = client.list_workers()
    assert {v for k, v in worker.platform if k == "executor"} == {"local", "wasm"}
    cas = RemoteCAS(cluster.addr, _cfg(tmp_path))
    prepared = prepare_action(["/bin/echo", "via local"], {}, platform=LOCAL)
    cas.upload(prepared.blobs)
    job = client.wait(client.submit(prepared.digest).job_id, timeout=30)
    assert job.state == "COMPLETED" and job.result is not None
    assert job.result.metadata.executor == "local"
    assert job.result.stdout_digest is not None
    assert cas.get_bytes(job.result.stdout_digest) == b"via local\n"


def test_cluster_workers_never_run_actions_in_place(tmp_path: Path, cluster: Cluster) -> None:
    """An action asking for execution=in-place (the embedded worker's way) is refused by a
    cluster with no such worker, and a job runner not made for it refuses it too: nothing
    runs outside a sandbox."""
    from distbuild.cas.store import LocalCAS
    from distbuild.executors.local import LocalExecutor
    from distbuild.worker.blob_cache import CachedStore
    from distbuild.worker.job_runner import IN_PLACE, JobRunner

    cluster.start_scheduler()
    cluster.start_worker("w1", capacity=1)
    marker = tmp_path / "ran-in-place"
    action = prepare_action(["/bin/sh", "-c", f"touch {marker}"], {},
                            platform=(*LOCAL, IN_PLACE), do_not_cache=True)
    cas = RemoteCAS(cluster.addr, _cfg(tmp_path))
    cas.upload(action.blobs)
    with pytest.raises(NoSuitableWorker):
        cluster.client().submit(action.digest)

    local = LocalCAS(tmp_path / "runner-cas")
    for blob in action.blobs.values():
        local.put_bytes(blob if isinstance(blob, bytes) else blob.read_bytes())
    runner = JobRunner("w2", CachedStore(local, cas), {"local": LocalExecutor()},
                       tmp_path / "sandboxes")
    outcome = runner.run("job-1", action.action, threading.Event())
    runner.close()
    assert (outcome.kind, outcome.retryable) == ("InvalidRequest", False), outcome
    assert "does not run actions in place" in outcome.error
    assert not marker.exists()


def test_remote_runner_compiles_and_reports_errors(tmp_path: Path, cluster: Cluster) -> None:
    """RemoteRunner on real rustc jobs: a good crate's binary comes back runnable with its
    dep-info naming local paths; a compile error comes back as the exit code and message."""
    from distbuild.master.remote_runner import RemoteRunner
    from distbuild.master.runner import CompileJob

    cluster.start_scheduler()
    cluster.start_worker("w1", capacity=2)
    src = tmp_path / "src"
    out = tmp_path / "target"
    src.mkdir()
    out.mkdir()
    (src / "good.rs").write_text('fn main() { println!("{}", include_str!("msg.txt")); }\n')
    (src / "msg.txt").write_text("hello from the worker")
    (src / "bad.rs").write_text('fn main() { let x: u32 = "text"; }\n')
    rustc = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True, text=True,
                           check=True).stdout.strip() + "/bin/rustc"
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME")}
    runner = RemoteRunner(cluster_config(cluster), addr=cluster.addr)

    def job(name: str) -> CompileJob:
        return CompileJob(
            argv=[rustc, "--crate-name", name, "--edition=2021", f"src/{name}.rs",
                  "--crate-type", "bin", "--emit=dep-info,link", "--out-dir", str(out)],
            env=env, cwd=str(tmp_path), outputs=[str(out / name), str(out / f"{name}.d")])

    good = runner.run(job("good"))
    assert (good.where, good.exit_code, good.worker) == ("remote", 0, "w1")
    assert subprocess.run([str(out / "good")], capture_output=True, text=True,
                          check=True).stdout == "hello from the worker\n"
    dep_info = (out / "good.d").read_text()
    assert dep_info.startswith(f"{out / 'good.d'}: src/good.rs src/msg.txt")
    assert "@@SANDBOX@@" not in dep_info
    bad = runner.run(job("bad"))
    assert (bad.where, bad.exit_code) == ("remote", 1)
    assert b"mismatched types" in bad.stderr and b"@@SANDBOX@@" not in bad.stderr
    (failed,) = [j for j in cluster.client().list_jobs() if j.result and j.result.exit_code]
    assert failed.attempts == 1  # a compile error is never retried


def cluster_config(cluster: Cluster) -> Config:
    return Config(home=cluster.root / "runner-home", auth=AuthConfig(token=cluster.token))


def test_burst_from_one_client_does_not_starve_another(tmp_path: Path, cluster: Cluster) -> None:
    """Client A queues 500 jobs, then client B queues 5: B's jobs run next, long before A's
    burst drains."""
    from distbuild.scheduler.client import SchedulerClient

    cluster.start_scheduler()
    cluster.start_worker("w1", capacity=2)
    cfg = cluster_config(cluster)
    cas = RemoteCAS(cluster.addr, cfg)
    burst = [prepare_action(["/bin/sh", "-c", "sleep 0.2", f"a{i}"], {}, platform=LOCAL)
             for i in range(500)]
    small = [prepare_action(["/bin/true", f"b{i}"], {}, platform=LOCAL) for i in range(5)]
    cas.upload({d: b for p in burst + small for d, b in p.blobs.items()})
    a = SchedulerClient(cluster.addr, cfg, client_id="client-a")
    b = SchedulerClient(cluster.addr, cfg, client_id="client-b")
    a_jobs = [a.submit(p.digest).job_id for p in burst]
    b_jobs = [b.submit(p.digest).job_id for p in small]
    done_b = [b.wait(j, timeout=120) for j in b_jobs]
    assert [j.state for j in done_b] == ["COMPLETED"] * 5
    a_done = sum(a.get_job(j).done for j in a_jobs)
    assert a_done < 150, f"B waited for {a_done} of A's jobs"
    for j in a_jobs:
        a.cancel(j)  # no need to run the rest


def test_remote_runner_rides_out_a_scheduler_restart(tmp_path: Path, cluster: Cluster) -> None:
    """A compile in flight when the scheduler restarts still completes remotely: the worker
    reports after the restart and the runner rejoins the job."""
    import threading

    from distbuild.master.remote_runner import RemoteRunner
    from distbuild.master.runner import CompileJob

    cluster.start_scheduler()
    cluster.start_worker("w1", capacity=1)
    real = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True, text=True,
                          check=True).stdout.strip() + "/bin/rustc"
    slow = tmp_path / "slow-rustc"
    slow.write_text(f'#!/bin/sh\ncase "$PWD" in */w1-home/*) sleep 3;; esac\nexec {real} "$@"\n')
    slow.chmod(0o755)
    (tmp_path / "main.rs").write_text('fn main() { println!("survived"); }\n')
    out = tmp_path / "out"
    out.mkdir()
    job = CompileJob(argv=[str(slow), "--crate-name", "main", "main.rs", "--crate-type", "bin",
                           "--emit=link", "--out-dir", str(out)],
                     env={"PATH": os.environ["PATH"]}, cwd=str(tmp_path),
                     outputs=[str(out / "main")])
    runner = RemoteRunner(cluster_config(cluster), addr=cluster.addr, match_toolchain=False)
    runs: list[object] = []
    thread = threading.Thread(target=lambda: runs.append(runner.run(job)))
    thread.start()
    client = cluster.client()
    wait_for("the compile to run", lambda: any(j.state == "RUNNING"
                                               for j in client.list_jobs()), timeout=60)
    cluster.kill("scheduler", signal.SIGKILL)
    cluster.start_scheduler()
    thread.join(timeout=120)
    assert not thread.is_alive()
    (run,) = runs
    assert (run.where, run.exit_code) == ("remote", 0)  # type: ignore[attr-defined]
    assert subprocess.run([str(out / "main")], capture_output=True, text=True,
                          check=True).stdout == "survived\n"
