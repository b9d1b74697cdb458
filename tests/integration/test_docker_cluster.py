"""Issue 4, test 1: the fixture workspace built with every miss run by a docker worker.

The scheduler and the worker (``worker run`` with ``[worker] executor = "docker"``) are real
processes; the client's master ships its toolchain (``[scheduler] executor = "docker"``). The
host toolchain's image is kept between runs (docs/docker.md); no container is left.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Distbuild, copy_workspace, run_app
from tests.integration.cluster import FAST_CONFIG, Cluster

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(900)]

pytest.importorskip("docker")

from distbuild.executors.docker import connect  # noqa: E402
from distbuild.executors.docker_cleanup import default_worker_id  # noqa: E402
from distbuild.executors.docker_testing import leftover_containers  # noqa: E402
from tests.integration.docker_engine import connect_or_skip  # noqa: E402

DOCKER_CONFIG = FAST_CONFIG.replace("[scheduler]\n", '[scheduler]\nexecutor = "docker"\n') + """
[worker]
executor = "docker"
memory_limit = "2g"
"""
# Compilations in one full build of the fixture: base, mid, macros (proc-macro), gen (lib and
# its build script, a linked bin), warny, cdy (cdylib), app (bin).
FULL_BUILD = 8


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    connect_or_skip().close()
    c = Cluster(tmp_path / "cluster", config=DOCKER_CONFIG)
    yield c
    c.stop()


def _crate_kinds(cluster: Cluster, jobs: list) -> set[str]:  # type: ignore[type-arg]
    """What each job compiled, read back from the commands in the scheduler's CAS."""
    from distbuild.codec import decode_action, decode_command
    from distbuild.config import Config
    from distbuild.reapi.cas_client import RemoteCAS

    cas = RemoteCAS(cluster.addr, Config(home=cluster.root / "reader"))
    kinds = set()
    for job in jobs:
        action = decode_action(cas.get_bytes(job.action_digest))
        args = decode_command(cas.get_bytes(action.command_digest)).arguments
        crate_type = args[args.index("--crate-type") + 1]
        name = args[args.index("--crate-name") + 1]
        kinds.add("build-script" if name.startswith("build_script") else crate_type)
    return kinds


def test_fixture_built_with_every_miss_in_docker(tmp_path: Path, cluster: Cluster,
                                                 plain_app_output: str) -> None:
    """All 8 compilations (proc-macro, build script and bins included) ran in containers of
    the shipped toolchain; the bin prints what plain cargo's prints; no container is left."""
    cluster.start_scheduler()
    cluster.start_worker("dw1", capacity=2)
    ws = copy_workspace(tmp_path / "ws")
    db = Distbuild(tmp_path / "client-home")
    db.env.update(DISTBUILD_SCHEDULER=cluster.addr, DISTBUILD_CONFIG=str(cluster.config_path))
    try:
        db.cargo("build", cwd=ws)
        stats = db.stats()
    finally:
        db.stop()
    assert (stats["executed_remote"], stats["executed_local"], stats["fallbacks"]) == (
        FULL_BUILD, 0, 0), stats
    assert run_app(ws) == plain_app_output
    jobs = cluster.client().list_jobs()
    assert len(jobs) == FULL_BUILD
    assert {j.state for j in jobs} == {"COMPLETED"}
    assert {j.result.metadata.executor for j in jobs if j.result} == {"docker"}
    toolchains = {dict(j.platform)["toolchain"] for j in jobs}
    assert len(toolchains) == 1 and "/" in toolchains.pop(), "actions name the archive digest"
    assert _crate_kinds(cluster, jobs) == {"lib", "proc-macro", "build-script", "cdylib", "bin"}
    worker_home = cluster.root / "dw1-home"
    assert leftover_containers(connect(), default_worker_id(worker_home)) == []
