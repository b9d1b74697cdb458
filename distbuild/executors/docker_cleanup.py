"""No leaked containers: labels on every action container, and removal of orphans.

Each container carries ``distbuild.worker=<worker id>`` and ``distbuild.instance=<host>/<pid>/
<process start time>`` (the start time tells a live process from a recycled pid). A worker that
dies mid-job (SIGKILL, OOM, power loss of the process) leaves its container behind; the next
worker with the same id calls :func:`remove_orphans` when it starts (``DockerExecutor`` does so
in its constructor) and every container of that worker whose instance is no longer alive on
this host is killed and removed. Containers of live workers, including other processes sharing
the same worker id, are left alone.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import blake3
import docker
import docker.errors

log = logging.getLogger(__name__)

LABEL_WORKER = "distbuild.worker"
LABEL_INSTANCE = "distbuild.instance"
LABEL_ROLE = "distbuild.role"
ROLE_ACTION = "action"


def default_worker_id(home: Path) -> str:
    """A stable id for the worker whose state lives in ``home`` (same home, same id)."""
    return "home-" + blake3.blake3(str(Path(home).absolute()).encode()).hexdigest()[:16]


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot ('' if it does not exist)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return ""
    # Field 2 (comm) may contain spaces and parentheses: split after the last ')'.
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else ""


def instance_id(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}/{pid}/{_start_time(pid)}"


def instance_alive(instance: str) -> bool | None:
    """True/False for an instance of this host; None when it belongs to another host."""
    host, _, rest = instance.partition("/")
    pid_s, _, started = rest.partition("/")
    if host != socket.gethostname():
        return None
    if not pid_s.isdigit():
        return False
    return bool(started) and _start_time(int(pid_s)) == started


def action_labels(worker_id: str) -> dict[str, str]:
    return {LABEL_WORKER: worker_id, LABEL_INSTANCE: instance_id(), LABEL_ROLE: ROLE_ACTION}


def list_action_containers(api: docker.APIClient, worker_id: str | None = None) -> list[dict]:
    """Every action container (running or not), of one worker or of all."""
    label = f"{LABEL_WORKER}={worker_id}" if worker_id else LABEL_WORKER
    return list(api.containers(all=True, filters={"label": label}))


def remove_orphans(api: docker.APIClient, worker_id: str | None) -> list[str]:
    """Remove the containers of dead instances of ``worker_id`` (None: of any worker).

    Returns:
        The ids of the containers removed.
    """
    me = instance_id()
    removed = []
    for c in list_action_containers(api, worker_id):
        inst = (c.get("Labels") or {}).get(LABEL_INSTANCE, "")
        if inst == me or instance_alive(inst) is not False:
            continue
        try:
            api.remove_container(c["Id"], force=True)
            removed.append(c["Id"])
        except docker.errors.NotFound:
            pass  # removed concurrently
        except docker.errors.APIError as e:
            log.warning("could not remove orphaned container %s: %s", c["Id"][:12], e)
    if removed:
        log.warning("removed %d orphaned action container(s) of worker %s", len(removed),
                    worker_id or "(any)")
    return removed
