"""FarmRunner: the master's misses executed on an existing REAPI farm (``[remote]``).

The action is the one ``RemoteRunner`` builds for our own cluster (the compile's package,
dependencies and ``OUT_DIR`` as an input tree, paths under its roots behind the sandbox
placeholder), with two differences:

  * Digests: the farm's Capabilities decide. BLAKE3 where the farm offers it (Buildbarn,
    NativeLink, BuildBuddy), and then nothing changes; SHA-256 otherwise (BuildGrid), and then
    the action is rewritten in SHA-256 on its way out and the outputs are brought back into the
    master's BLAKE3 store (``farm_digests.py``, with a BLAKE3 -> SHA-256 map kept on disk).
    The master's own cache stays BLAKE3, so local hits never touch the farm.
  * Platform: the properties a farm routes by (docs/reapi.md): ``OSFamily`` and ``ISA`` from
    REAPI's lexicon, ``executor`` and ``toolchain`` (the rustc release and commit). Only bots
    that offer that toolchain (ours: ``cargo-distbuild worker join``) get the action, which
    names its paths through the sandbox placeholder our bots substitute.

Anything the farm gets wrong raises ``RemoteError`` like any remote run: the master compiles
locally and counts a fallback. A build never fails because of the farm.
"""

from __future__ import annotations

import logging
import os
import threading

from distbuild.actions import ActionResult
from distbuild.cas.digest import BLAKE3, SHA256, DigestFunction
from distbuild.cas.store import LocalCAS
from distbuild.config import Config
from distbuild.errors import ConfigError
from distbuild.master.farm_action import DigestMap, Relocation, localize_result, translate_action
from distbuild.master.remote_runner import CRATE_FILES, RemoteRunner, _scan_args
from distbuild.master.runner import CompileJob, CompileRun, CompileRunner
from distbuild.reapi.capabilities import fetch_capabilities
from distbuild.reapi.cas_client import RemoteCAS
from distbuild.reapi.execution_client import Execution, ExecutionClient
from distbuild.rpc.server import BATCH_LIMIT
from distbuild.scheduler.action_builder import PreparedAction
from distbuild.scheduler.client import default_client_id
from distbuild.worker.blob_cache import CachedStore
from distbuild.worker.platform import reapi_platform

log = logging.getLogger(__name__)

_CHOICES = {"auto": (BLAKE3, SHA256), "blake3": (BLAKE3,), "sha256": (SHA256,)}
# Properties of our own cluster's action that a farm routes by too (os and arch become
# REAPI's OSFamily and ISA).
_ROUTED = ("executor", "toolchain")


def choose_function(setting: str, offered: tuple[str, ...], farm: str) -> DigestFunction:
    """The digest function to speak to a farm offering ``offered`` (REAPI names)."""
    for function in _CHOICES[setting]:
        if function.name in offered:
            return function
    raise ConfigError(f"the farm at {farm} offers {', '.join(offered) or 'no'} digest "
                      f"functions; remote.digest_function = {setting!r} needs "
                      f"{' or '.join(f.name for f in _CHOICES[setting])}")


class FarmRunner(RemoteRunner):
    """A CompileRunner that executes misses on the farm ``cfg.remote`` names."""

    def __init__(self, cfg: Config, fallback: CompileRunner | None, cache: LocalCAS):
        remote = cfg.remote
        # The local executor only: a Docker action's toolchain archive is shipped by its BLAKE3
        # digest, which a SHA-256 farm cannot name.
        super().__init__(cfg, fallback=fallback, addr=remote.endpoint, executor="local",
                         cache=cache)
        self.instance = remote.instance
        caps = fetch_capabilities(self._channel, remote.instance)
        if not caps.exec_enabled:
            raise ConfigError(f"the farm at {remote.endpoint} (instance {remote.instance!r}) "
                              "does not execute actions")
        self.function = choose_function(remote.digest_function, caps.exec_functions
                                        or caps.cache_functions, remote.endpoint)
        batch = min(BATCH_LIMIT, caps.max_batch_bytes or BATCH_LIMIT)
        self.cas = RemoteCAS(remote.endpoint, cfg, channel=self._channel,
                             function=self.function, instance=remote.instance, batch_limit=batch)
        # Outputs are brought into the master's store by _local_result before anything reads
        # them; the store's remote is the farm's CAS all the same.
        if self.function is BLAKE3:
            self.store = CachedStore(self.store.local, self.cas)
        self.digests = (DigestMap(cfg.home / "digest-map" / f"{self.function.value}.sqlite",
                                  self.function) if self.function is not BLAKE3 else None)
        self.executions = ExecutionClient(self._channel, function=self.function,
                                          instance=remote.instance,
                                          client_id=default_client_id(),
                                          where=f"farm at {remote.endpoint}")
        self._job = threading.local()
        # Crate (path without extension) -> the crates it was compiled against (see
        # _libraries), for every crate compiled through here; proc-macros among them.
        self._deps_of: dict[str, frozenset[str]] = {}
        self._proc_macros: set[str] = set()
        log.info("misses run on the farm at %s (instance %r, %s)", remote.endpoint,
                 remote.instance, self.function)

    def close(self) -> None:
        if self.digests is not None:
            self.digests.close()
        super().close()

    def run(self, job: CompileJob) -> CompileRun:
        run = super().run(job)
        if run.exit_code == 0:
            scan = _scan_args(job.argv[1:], job.cwd)
            outputs = [os.path.normpath(os.path.join(job.cwd, o)) for o in job.outputs]
            self._remember(scan.files, outputs + scan.emitted)
        return run

    def prepare(self, job: CompileJob) -> tuple[PreparedAction, dict[str, str], bool]:
        """The farm's action for ``job`` (see the module docstring), the map of its output
        paths to local paths, and whether its sources are known exactly."""
        ours, outputs, exact = super().prepare(job)
        relocation = Relocation.of_roots(job.roots)
        self._job.relocation = relocation  # for _local_result, on this thread
        platform = (*reapi_platform(),
                    *((k, v) for k, v in ours.action.platform if k in _ROUTED))
        farm = translate_action(ours, platform, self.digests, relocation)
        wd = ours.command.working_directory
        return farm, {relocation.output(p, wd): local for p, local in outputs.items()}, exact

    def _libraries(self, externs: list[str], lib_dirs: list[str], crate_dirs: set[str]
                   ) -> set[str]:
        """The crate files of ``-L dependency=`` directories limited to the crates the
        ``--extern`` crates were compiled against, when all of them were compiled here: a deps
        directory also holds whatever other crates Cargo is building meanwhile, and a tree that
        depends on the build's timing would never hit the farm's cache. Otherwise (a crate
        restored from the local cache) all of them, as for our own cluster."""
        closure = self._closure(externs)
        if closure is None:
            return super()._libraries(externs, lib_dirs, crate_dirs)
        others = [d for d in lib_dirs if d not in crate_dirs]
        return closure | super()._libraries(externs, others, set())

    def _closure(self, externs: list[str]) -> set[str] | None:
        """The crate files ``externs`` were compiled against: rlibs for a compile that links
        (its externs are rlibs), else rmeta files; proc-macros as they are. None when one of
        them is unknown or missing."""
        stems = self._stems(externs)
        if stems is None:
            return None
        links = any(e.endswith(".rlib") for e in externs)
        files = {stem + (".so" if stem in self._proc_macros else ".rlib" if links else ".rmeta")
                 for stem in stems}
        return files if all(os.path.isfile(f) for f in files) else None

    def _stems(self, externs: list[str]) -> set[str] | None:
        """Every crate (its path without extension) below ``externs``; None if one is
        unknown."""
        with self._lock:
            stems: set[str] = set()
            for path in externs:
                stem = os.path.splitext(os.path.normpath(path))[0]
                deps = self._deps_of.get(stem)
                if deps is None:
                    return None
                stems |= deps | {stem}
            return stems

    def _remember(self, externs: list[str], outputs: list[str]) -> None:
        """After a run: the crates its crate outputs were compiled against."""
        stems = self._stems(externs)
        if stems is None:
            return
        with self._lock:
            for out in outputs:
                if out.endswith(CRATE_FILES):
                    stem = os.path.splitext(out)[0]
                    self._deps_of[stem] = frozenset(stems)
                    if out.endswith(".so"):
                        self._proc_macros.add(stem)

    def _execute(self, prepared: PreparedAction) -> Execution:
        self.cas.upload(prepared.blobs)
        return self._follow(prepared.digest)

    def _local_result(self, result: ActionResult) -> ActionResult:
        return localize_result(result, self.cas, self.store.local, self.digests,
                               getattr(self._job, "relocation", Relocation()))
