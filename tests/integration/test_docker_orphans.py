"""A worker killed mid-job leaves a container behind; the restarted worker removes it.

The "worker" here is a real separate process that builds a ``DockerExecutor`` for a home
directory (hence a worker id) and runs one long action; it is killed with SIGKILL, so nothing
in it gets a chance to clean up. A second process for the same home is the restarted worker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

pytest.importorskip("docker")

from distbuild.executors.docker_cleanup import default_worker_id  # noqa: E402
from distbuild.executors.docker_testing import (  # noqa: E402
    build_probe,
    host_toolchain,
    leftover_containers,
)
from tests.integration.docker_engine import connect_or_skip  # noqa: E402

WORKER = textwrap.dedent("""
    import sys, threading
    from pathlib import Path
    from distbuild.cas.store import LocalCAS
    from distbuild.config import Config
    from distbuild.executors.base import ExecSpec
    from distbuild.executors.docker import DockerExecutor

    home, cas, toolchain, sandbox, mode = sys.argv[1:6]
    executor = DockerExecutor(Config(home=Path(home)), LocalCAS(cas))
    print("removed", len(executor.orphans_removed), flush=True)
    if mode == "run":
        spec = ExecSpec(argv=("bin/probe", "sleep", "120"), output_paths=("out/x",),
                        properties=(("toolchain", toolchain),))
        executor.run(spec, Path(sandbox), threading.Event())
""")


def _start(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", WORKER, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def test_restarted_worker_removes_containers_of_its_killed_predecessor(
        request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """SIGKILL a worker mid-job: its container survives; the restarted worker removes it."""
    api = connect_or_skip()
    cache = Path(request.config.cache.mkdir("distbuild-docker"))
    store, tc = host_toolchain(cache)
    home = tmp_path / "worker-home"
    worker_id = default_worker_id(home)
    sandbox = tmp_path / "sandbox"
    (sandbox / "bin").mkdir(parents=True)
    build_probe(sandbox / "bin" / "probe")
    args = [str(home), str(store.root), str(tc.digest), str(sandbox)]
    first = _start([*args, "run"])
    try:
        deadline = time.monotonic() + 120
        while not leftover_containers(api, worker_id):
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the action's container never appeared"
            time.sleep(0.2)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
        time.sleep(1.0)
        orphans = leftover_containers(api, worker_id)
        assert len(orphans) == 1, "the killed worker's container should still be there"
        restarted = subprocess.run([sys.executable, "-c", WORKER, *args, "idle"],
                                   capture_output=True, text=True, timeout=120)
        assert restarted.returncode == 0, restarted.stderr
        assert restarted.stdout == "removed 1\n"
        assert leftover_containers(api, worker_id) == []
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        for cid in leftover_containers(api, worker_id):
            api.remove_container(cid, force=True)


def test_worker_process_killed_mid_job_then_restarted(request: pytest.FixtureRequest,
                                                      tmp_path: Path) -> None:
    """The real thing: `worker run --executor docker` under a scheduler, SIGKILLed while its
    container runs a job; restarted with the same id and home, it removes the orphan."""
    api = connect_or_skip()
    from distbuild.config import Config
    from distbuild.reapi.cas_client import RemoteCAS
    from distbuild.scheduler.action_builder import InputFile, prepare_action
    from tests.integration.cluster import FAST_CONFIG, Cluster, wait_for

    cache = Path(request.config.cache.mkdir("distbuild-docker"))
    store, tc = host_toolchain(cache)
    probe = build_probe(tmp_path / "probe")
    config = FAST_CONFIG + '\n[worker]\nexecutor = "docker"\n'
    cluster = Cluster(tmp_path / "cluster", config=config)
    worker_id = default_worker_id(cluster.root / "dw-home")
    try:
        cluster.start_scheduler()
        cluster.start_worker("dw", capacity=1)
        prepared = prepare_action(
            ["bin/probe", "sleep", "120"], {"bin/probe": InputFile.of(probe, is_executable=True)},
            output_paths=("out/x",), platform=(("executor", "docker"), tc.platform_property))
        cas = RemoteCAS(cluster.addr, Config(home=tmp_path / "client"))
        cas.upload({**prepared.blobs, tc.digest: store.path_of(tc.digest)})
        job = cluster.client().submit(prepared.digest)
        wait_for("the job's container", lambda: leftover_containers(api, worker_id), timeout=120)
        cluster.kill("dw", signal.SIGKILL)
        time.sleep(1.0)
        assert len(leftover_containers(api, worker_id)) == 1, "the orphan should outlive it"
        cluster.client().cancel(job.job_id)  # else the restarted worker would get it again
        cluster.start_worker("dw", capacity=1)
        wait_for("the orphan's removal", lambda: not leftover_containers(api, worker_id),
                 timeout=30)
    finally:
        cluster.stop()
        for cid in leftover_containers(api, worker_id):
            api.remove_container(cid, force=True)
    assert leftover_containers(api, worker_id) == []
