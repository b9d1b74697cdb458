"""Docker executor: each action in a throw-away container of its toolchain's image.

The action names its toolchain with the platform property ``toolchain=<hash>/<size>`` (see
``distbuild.toolchain``). The first action needing a toolchain fetches the archive from the
worker's store and imports it as an image (``docker_image.py``); later actions reuse it.

Per action: one container, created with the mounts of ``docker_plan.py``, ``--network none``,
a non-root user, a read-only root filesystem, no capabilities, ``no-new-privileges``, the
worker's memory / CPU / pids limits and no core dumps; attached before it starts, so stdout and
stderr arrive as raw bytes (never through a log driver, which is disabled); killed on timeout
or cancellation; always removed (by a background thread once the action has exited, which
takes the removal off the action's latency; ``close`` waits for it). Containers are labelled
(``docker_cleanup.py``) so a worker restarted after dying mid-job removes what it left behind.

Exit codes follow the local executor: a process killed by signal ``n`` reports ``-n`` (Docker
says ``128+n``; an action that deliberately exits with 129..192 is read the same way).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests
from docker.types import LogConfig, Mount, Ulimit
from docker.utils.socket import frames_iter

from distbuild.cas.digest import Digest
from distbuild.cas.store import BlobStore
from distbuild.config import Config, WorkerConfig, cpu_count
from distbuild.errors import ExecutionError, ExecutorUnavailable, InvalidRequest
from distbuild.executors.base import ExecOutcome, ExecSpec
from distbuild.executors.docker_cleanup import action_labels, default_worker_id, remove_orphans
from distbuild.executors.docker_image import ACTION_USER, ToolchainImages
from distbuild.executors.docker_plan import ContainerPlan, grant_read, plan_container
from distbuild.toolchain import PROPERTY, RUSTC_IN_IMAGE

log = logging.getLogger(__name__)

_POLL_S = 0.05
_TMPFS = "rw,nosuid,nodev,noexec,size=1g,mode=1777"
_NOBODY = 65534


def connect(pool_size: int = 16) -> docker.APIClient:
    """A low-level client for the engine named by DOCKER_HOST (default: the local socket).

    Raises:
        ExecutorUnavailable: no engine answers.
    """
    try:
        api = docker.APIClient(version="auto", max_pool_size=pool_size,
                               **docker.utils.kwargs_from_env())
        api.ping()
    except (docker.errors.DockerException, requests.RequestException) as e:
        raise ExecutorUnavailable(f"no Docker engine reachable: {e}") from e
    return api


class DockerExecutor:
    """Runs ExecSpecs in containers; see the module docstring."""

    kind = "docker"

    def __init__(self, cfg: Config, store: BlobStore, *, worker_id: str | None = None,
                 api: docker.APIClient | None = None):
        self._limits: WorkerConfig = cfg.worker
        capacity = cfg.worker.capacity or cpu_count()
        self._api = api or connect(pool_size=max(32, 3 * capacity + 4))  # attach+wait per job
        self._images = ToolchainImages(self._api, store, cfg.home / "docker")
        self.worker_id = worker_id or default_worker_id(cfg.home)
        self._live: set[str] = set()
        self._live_lock = threading.Lock()
        self.orphans_removed = remove_orphans(self._api, self.worker_id)
        self._removals: queue.Queue[str | None] = queue.Queue()
        self._reaper = threading.Thread(target=self._reap, name="docker-reaper", daemon=True)
        self._reaper.start()

    @property
    def api(self) -> docker.APIClient:
        return self._api

    def prepare(self, toolchain: Digest) -> None:
        """Fetch and import a toolchain ahead of its first action (optional)."""
        self._images.ensure(toolchain)

    def run(self, spec: ExecSpec, sandbox: Path, cancel: threading.Event) -> ExecOutcome:
        """Run ``spec`` in a fresh container; see the module docstring.

        Raises:
            InvalidRequest: no toolchain property, or a path that would escape.
            ExecutorUnavailable: the engine or the toolchain is unavailable.
            ExecutionError: the engine failed while running the action.
        """
        prop = spec.prop(PROPERTY)
        if not prop:
            raise InvalidRequest("the docker executor needs the action's toolchain "
                                 f"(platform property {PROPERTY!r})")
        digest = Digest.parse(prop)
        plan = plan_container(spec, sandbox, RUSTC_IN_IMAGE)
        user = self._user_for(plan)
        start = time.monotonic()
        try:
            cid = self._create(self._images.ensure(digest).ref, plan, user)
        except docker.errors.ImageNotFound:  # removed behind our back (docker rmi, prune)
            self._images.forget(digest)
            try:
                cid = self._create(self._images.ensure(digest).ref, plan, user)
            except docker.errors.ImageNotFound as e:
                raise ExecutorUnavailable(f"toolchain image {digest} keeps vanishing") from e
        try:
            return self._attach_and_wait(cid, spec, cancel, start)
        except (docker.errors.APIError, requests.RequestException) as e:
            raise ExecutionError(f"docker engine failed running the action: {e}") from e
        finally:
            self._removals.put(cid)  # off the critical path: the outputs are already on disk

    def wait_removed(self) -> None:
        """Block until every finished action's container has been removed."""
        self._removals.join()

    def close(self) -> None:
        """Kill and remove every container still running (a worker shutting down)."""
        self._removals.put(None)
        self._reaper.join(timeout=60)
        with self._live_lock:
            live = list(self._live)
        for cid in live:
            self._remove(cid)
        self._api.close()

    def _reap(self) -> None:
        while True:
            cid = self._removals.get()
            try:
                if cid is None:
                    return
                self._remove(cid)
            finally:
                self._removals.task_done()

    # -- steps -------------------------------------------------------------------------------
    def _user_for(self, plan: ContainerPlan) -> str:
        """Never root: the worker's own uid, or nobody (owning the output dirs) under root."""
        uid = os.getuid()
        if uid != 0:
            return f"{uid}:{os.getgid()}"
        for bind in plan.binds:
            grant_read(bind.source)
        for d in plan.output_dirs:
            os.chown(d, _NOBODY, _NOBODY)
        return ACTION_USER

    def _host_config(self, plan: ContainerPlan) -> dict[str, Any]:
        lim = self._limits
        mounts = [Mount(b.target, str(b.source), type="bind", read_only=not b.writable)
                  for b in plan.binds]
        extra: dict[str, Any] = {}
        if lim.cpu_limit > 0:
            extra["nano_cpus"] = int(lim.cpu_limit * 1e9)
        if lim.memory_limit:
            extra["mem_limit"] = extra["memswap_limit"] = lim.memory_limit
        if lim.pids_limit > 0:
            extra["pids_limit"] = lim.pids_limit
        return self._api.create_host_config(  # type: ignore[no-any-return]
            mounts=mounts, network_mode="none", read_only=True, tmpfs={"/tmp": _TMPFS},
            cap_drop=["ALL"], security_opt=["no-new-privileges"],
            log_config=LogConfig(type="none"), ulimits=[Ulimit(name="core", soft=0, hard=0)],
            **extra,
        )

    def _create(self, image: str, plan: ContainerPlan, user: str) -> str:
        try:
            resp = self._api.create_container(
                image, command=plan.argv, environment=plan.env, working_dir=plan.workdir,
                user=user, labels=action_labels(self.worker_id), network_disabled=True,
                host_config=self._host_config(plan),
            )
        except docker.errors.ImageNotFound:
            raise
        except (docker.errors.APIError, requests.RequestException) as e:
            raise ExecutionError(f"docker could not create the action's container: {e}") from e
        cid: str = resp["Id"]
        with self._live_lock:
            self._live.add(cid)
        return cid

    def _attach_and_wait(self, cid: str, spec: ExecSpec, cancel: threading.Event,
                         start: float) -> ExecOutcome:
        sock = self._api.attach_socket(cid, params={"stdout": 1, "stderr": 1, "stream": 1})
        self._api._disable_socket_timeout(sock)  # a quiet compile may take minutes
        chunks: dict[int, list[bytes]] = {1: [], 2: []}
        done = threading.Event()

        def pump() -> None:
            try:
                for stream, data in frames_iter(sock, False):
                    chunks.setdefault(stream, []).append(data)
            except OSError:
                pass  # the socket closes when the container is removed
            finally:
                done.set()

        reader = threading.Thread(target=pump, name=f"attach-{cid[:12]}", daemon=True)
        reader.start()
        try:
            self._api.start(cid)
            # Waiting from the start (not after the output ends) saves a round trip per action.
            waited: list[dict[str, Any] | BaseException] = []
            waiter = threading.Thread(target=self._wait_exit, args=(cid, waited), daemon=True,
                                      name=f"wait-{cid[:12]}")
            waiter.start()
            failure = self._watch(cid, spec, cancel, waiter, start)
            waiter.join(timeout=60.0)
            reader.join(timeout=30.0)
        finally:
            sock.close()
        if not waited or isinstance(waited[0], BaseException):
            raise ExecutionError(f"docker did not report the action's exit: {waited}")
        status = int(waited[0].get("StatusCode", -1))
        if not failure and status == 137 and self._oom_killed(cid):
            failure = "memory limit"
        code = -(status - 128) if 128 < status <= 192 else status
        return ExecOutcome(exit_code=code, stdout=b"".join(chunks[1]),
                           stderr=b"".join(chunks[2]), duration_s=time.monotonic() - start,
                           failure=failure, extra={"container": cid[:12]})

    def _wait_exit(self, cid: str, into: list[dict[str, Any] | BaseException]) -> None:
        try:
            into.append(self._api.wait(cid, timeout=None))
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            into.append(e)

    def _watch(self, cid: str, spec: ExecSpec, cancel: threading.Event, waiter: threading.Thread,
               start: float) -> str:
        deadline = start + spec.timeout_s if spec.timeout_s > 0 else None
        while True:
            waiter.join(_POLL_S)
            if not waiter.is_alive():
                return ""
            failure = ""
            if cancel.is_set():
                failure = "cancelled"
            elif deadline is not None and time.monotonic() > deadline:
                failure = "timed out"
            if failure:
                try:
                    self._api.kill(cid)
                except docker.errors.APIError:
                    pass  # it exited on its own meanwhile
                return failure

    def _oom_killed(self, cid: str) -> bool:
        try:
            return bool(self._api.inspect_container(cid)["State"].get("OOMKilled"))
        except docker.errors.APIError:
            return False

    def _remove(self, cid: str) -> None:
        try:
            self._api.remove_container(cid, force=True)
        except docker.errors.NotFound:
            pass
        except (docker.errors.APIError, requests.RequestException) as e:
            log.warning("could not remove container %s (a restarted worker will): %s",
                        cid[:12], e)
        with self._live_lock:
            self._live.discard(cid)
