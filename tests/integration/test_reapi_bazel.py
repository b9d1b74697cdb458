"""Issue 14: Bazel as a client of our scheduler (a real REAPI v2 peer).

Debian's bazel-bootstrap (Bazel 4.2.3, SHA-256 only, the v2.0 output fields) builds
tests/fixtures/bazel (a genrule and a C binary) with --remote_executor and --remote_cache
pointed at a real scheduler process with a real worker process. Installed by
scripts/setup.d/bazel.sh; the test skips with the reason when Bazel is absent.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from distbuild.cas.digest import SHA256
from tests.integration.cluster import Cluster

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "bazel"


TOKEN = "bazel-test-token"


def _workspace(tmp_path: Path) -> Path:
    if shutil.which("bazel") is None:
        pytest.skip("bazel is not installed (scripts/setup.d/bazel.sh installs Debian's "
                    "bazel-bootstrap)")
    ws = tmp_path / "ws"
    shutil.copytree(FIXTURE, ws)
    return ws


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "cluster", token=TOKEN)
    yield c
    c.stop()


def _bazel(root: Path, ws: Path, *args: str, addr: str = "", execute: bool = True) -> str:
    """One Bazel command in batch mode (no server is left behind), its output as text.

    With ``addr``: our scheduler as remote cache, and as executor unless ``execute`` is off
    (then Bazel runs actions itself and uploads their results). The system rc file stays:
    Debian's names the install base; the user's is ignored.
    """
    remote = [f"--remote_cache=grpc://{addr}", "--remote_timeout=120",
              f"--remote_header=authorization=Bearer {TOKEN}"] if addr else []
    if addr and execute:
        remote += [f"--remote_executor=grpc://{addr}", "--spawn_strategy=remote",
                   "--remote_default_exec_properties=executor=local"]
    elif addr:
        remote += ["--spawn_strategy=local"]
    proc = subprocess.run(
        ["bazel", "--batch", "--nohome_rc", f"--output_user_root={root}",
         *args[:1], *remote, *args[1:]],
        cwd=ws, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"bazel {' '.join(args)} failed:\n{out[-4000:]}"
    return out


def test_bazel_builds_on_our_workers_and_hits_our_action_cache(tmp_path: Path,
                                                               cluster: Cluster) -> None:
    """Bazel 4 runs a genrule and a C compile and link on our worker through REAPI (SHA-256,
    Operations, ByteStream/batches; our shared token sent as a --remote_header), gets correct
    outputs, and after `bazel clean` the same build is served entirely from our action cache:
    every action a remote cache hit, no new job on any worker."""
    ws = _workspace(tmp_path)
    root = tmp_path / "bazel-root"
    cluster.start_scheduler()
    cluster.start_worker("w1", capacity=2)
    client = cluster.client()

    first = _bazel(root, ws, "build", "//:greeting", "//:hello", addr=cluster.addr)
    assert (ws / "bazel-bin" / "greeting.txt").read_text() == "hello from a genrule\n"
    run = subprocess.run([str(ws / "bazel-bin" / "hello")], capture_output=True, text=True,
                         timeout=30, check=True)
    assert run.stdout == "hello from C\n"
    ran = re.search(r"(\d+) processes: .*?(\d+) remote[.,]", first)
    assert ran is not None, first[-2000:]
    jobs = client.list_jobs()
    executed = [j for j in jobs if j.state == "COMPLETED" and not j.cached]
    # genrule, compile, link: each ran on our worker, hashed with SHA-256 (Bazel 4's only)
    assert len(executed) == int(ran.group(2)) == 3, first[-2000:]
    assert {(j.worker_id, j.digest_function) for j in executed} == {("w1", SHA256)}
    assert all(("executor", "local") in j.platform for j in executed)
    assert all(j.result is not None and j.result.exit_code == 0 for j in executed)

    _bazel(root, ws, "clean")
    second = _bazel(root, ws, "build", "//:greeting", "//:hello", addr=cluster.addr)
    assert re.search(r"\b3 remote cache hit\b", second), second[-2000:]
    assert not re.search(r"\d+ remote[.,]", second.replace("remote cache hit", "")), \
        second[-2000:]
    assert len(client.list_jobs()) == len(jobs)  # nothing executed again
    run = subprocess.run([str(ws / "bazel-bin" / "hello")], capture_output=True, text=True,
                         timeout=30, check=True)
    assert run.stdout == "hello from C\n"


def test_bazel_uploads_local_results_to_our_cache(tmp_path: Path, cluster: Cluster) -> None:
    """Bazel 4 with our scheduler as its remote cache only: it runs the actions itself and
    uploads their outputs (CAS, ByteStream) and results (UpdateActionResult, SHA-256); after
    `bazel clean` every action is a remote cache hit, and no job ever ran on a worker."""
    ws = _workspace(tmp_path)
    root = tmp_path / "bazel-root"
    cluster.start_scheduler()
    _bazel(root, ws, "build", "//:greeting", "//:hello", addr=cluster.addr, execute=False)
    blobs = list((cluster.root / "scheduler-home" / "scheduler" / "sha256" / "cas" / "blobs")
                 .rglob("*"))
    assert any(p.is_file() for p in blobs)  # the uploads went to the SHA-256 store
    _bazel(root, ws, "clean")
    again = _bazel(root, ws, "build", "//:greeting", "//:hello", addr=cluster.addr,
                   execute=False)
    assert re.search(r"\b3 remote cache hit\b", again), again[-2000:]
    assert cluster.client().list_jobs() == []
    run = subprocess.run([str(ws / "bazel-bin" / "hello")], capture_output=True, text=True,
                         timeout=30, check=True)
    assert run.stdout == "hello from C\n"
