"""The configurations one master serves: a CompileService for each.

A running master must not quietly serve a build in the mode of another: the configuration
file may have changed since it started, and each shell may set ``DISTBUILD_SCHEDULER``,
``DISTBUILD_TOKEN`` or ``DISTBUILD_CONFIG`` differently. Every compile request carries the
shim's environment, so the master works out which configuration the request names (its
*identity*: the config file's contents and the overriding variables, see ``identity``) and
serves it with the CompileService built from exactly that configuration, building one the
first time it is named. Two builds with different settings can share the master at once
without restarting it back and forth.

The store, the action cache, the stats and the toolchain registry are the master's and shared;
what depends on the configuration (runners: the embedded cluster or a scheduler client, with
its data in ``<home>/embedded/<identity>``) is per service. Services unused for
``RETIRE_AFTER_S`` (but the newest) are closed once idle.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import blake3

from distbuild.cas.action_cache import ActionCache
from distbuild.cas.store import LocalCAS
from distbuild.config import OVERRIDES, Config, config_path, load_config
from distbuild.errors import DistbuildError
from distbuild.master.compile import CompileService
from distbuild.master.runner import Runners, make_runners
from distbuild.master.stats import Stats
from distbuild.rustc.toolchain import ToolchainRegistry

log = logging.getLogger(__name__)
RETIRE_AFTER_S = 300.0


@dataclass
class Served:
    """One configuration and the service built from it."""

    identity: str
    cfg: Config
    config_file: Path
    service: CompileService
    runners: Runners
    last_used: float = field(default_factory=time.monotonic)
    active: int = 0  # requests in flight

    def describe(self) -> dict[str, Any]:
        return describe(self.cfg) | {"identity": self.identity, "config_file":
                                     str(self.config_file), "in_flight": self.active}


def describe(cfg: Config) -> dict[str, str]:
    """How misses run under ``cfg``: the mode and the scheduler."""
    if cfg.scheduler.addr:
        return {"execution": "remote", "scheduler": cfg.scheduler.addr}
    if cfg.master.execution == "direct":
        return {"execution": "direct", "scheduler": "none (rustc in place)"}
    return {"execution": cfg.master.execution, "scheduler": "embedded (in-process)"}


def identity(home: Path, env: Mapping[str, str], cwd: str) -> str:
    """A digest of what makes up the configuration ``env`` names: the config file's contents
    (or its absence) and the values of the overriding variables."""
    h = blake3.blake3()
    contents = _file_digest(config_path(home, env, cwd))
    if contents == "absent" and env.get("DISTBUILD_CONFIG"):
        contents = "named but absent"  # an error, unlike a default file that is absent
    h.update(contents.encode())
    for var, _, _ in OVERRIDES:
        value = env.get(var)
        h.update(b"\0-" if value is None else b"\0=" + value.encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:16]


_file_digests: dict[tuple[str, int, int, int], str] = {}  # by stat signature: one stat a request


def _file_digest(path: Path) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return "absent"
    key = (str(path), st.st_mtime_ns, st.st_size, st.st_ino)
    digest = _file_digests.get(key)
    if digest is None:
        try:
            digest = blake3.blake3(path.read_bytes()).hexdigest()
        except OSError:
            return "unreadable"
        if len(_file_digests) > 64:
            _file_digests.clear()
        _file_digests[key] = digest
    return digest


class Configurations:
    def __init__(self, home: Path, cas: LocalCAS, stats: Stats, toolchains: ToolchainRegistry):
        self.home = home
        self.cas = cas
        self.ac = ActionCache(home / "ac", cas)
        self.stats = stats
        self.toolchains = toolchains
        self._lock = threading.Lock()
        self._served: dict[str, Served] = {}
        self._failed: dict[str, str] = {}  # identity -> why it could not be loaded
        self._newest = ""

    def identity(self, env: Mapping[str, str], cwd: str) -> str:
        return identity(self.home, env, cwd)

    # -- serving ------------------------------------------------------------------------------
    def acquire(self, env: Mapping[str, str], cwd: str) -> Served | str:
        """The service for the configuration ``env`` names (marked in use: ``release`` it),
        or why that configuration cannot be loaded."""
        identity = self.identity(env, cwd)
        with self._lock:
            served = self._served.get(identity)
            if served is None and identity in self._failed:
                return self._failed[identity]
            if served is None:
                try:
                    served = self._start(identity, env, cwd)
                except DistbuildError as e:
                    log.error("cannot serve a request's configuration: %s", e)
                    self._failed[identity] = str(e)
                    return str(e)
                self._served[identity] = served
            served.active += 1
            served.last_used = time.monotonic()
            self._newest = identity
            return served

    def release(self, served: Served) -> None:
        with self._lock:
            served.active -= 1
            served.last_used = time.monotonic()

    def _start(self, identity: str, env: Mapping[str, str], cwd: str) -> Served:
        cfg = load_config(env, cwd, home=self.home)
        # The newest configuration's cache settings apply to the shared store.
        self.cas.max_size, self.cas.gc_target = cfg.cache.max_size, cfg.cache.gc_target
        runners = make_runners(cfg, self.cas, embedded_dir=self.home / "embedded" / identity)
        service = CompileService(cas=self.cas, ac=self.ac, runner=runners.primary,
                                 local=runners.local, stats=self.stats,
                                 toolchains=self.toolchains)
        log.warning("serving configuration %s: %s", identity, describe(cfg))
        return Served(identity, cfg, config_path(self.home, env, cwd), service, runners)

    def describe(self) -> list[dict[str, Any]]:
        """Every configuration served, the most recently used first."""
        with self._lock:
            served = sorted(self._served.values(), key=lambda s: -s.last_used)
            return [s.describe() for s in served]

    # -- housekeeping -------------------------------------------------------------------------
    def retire_idle(self, older_than: float = RETIRE_AFTER_S) -> None:
        """Close services unused for ``older_than`` seconds (never the newest one)."""
        now = time.monotonic()
        with self._lock:
            idle = [s for s in self._served.values() if s.identity != self._newest
                    and s.active == 0 and now - s.last_used > older_than]
            for s in idle:
                del self._served[s.identity]
            # A failure can depend on more than the identity (a TLS file created since): try
            # such configurations again now and then.
            self._failed.clear()
        for s in idle:
            self._close(s)
            # Nothing follows a retired configuration's jobs any more.
            shutil.rmtree(self.home / "embedded" / s.identity, ignore_errors=True)

    def close(self) -> None:
        with self._lock:
            served, self._served = list(self._served.values()), {}
        for s in served:
            self._close(s)

    def _close(self, served: Served) -> None:
        log.info("closing configuration %s", served.identity)
        try:
            served.runners.close()
        except Exception:  # noqa: BLE001 - closing must not stop the others closing
            log.exception("closing configuration %s failed", served.identity)
