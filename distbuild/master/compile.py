"""One rustc invocation through the cache: classify, look up, restore or execute and record.

This is the hit path the whole product is judged by: a hit runs no rustc, re-reads only files
whose stat signature changed, and restores outputs with a verified copy from the CAS.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass

from distbuild.actions import ActionResult, ExecutionMetadata, OutputFile
from distbuild.cas.action_cache import ActionCache
from distbuild.cas.digest import Digest
from distbuild.cas.store import LocalCAS
from distbuild.errors import BlobNotFound, CorruptBlob, DistbuildError, LocalError, RemoteError
from distbuild.fsutil import write_atomic
from distbuild.master.filehash import FileHasher
from distbuild.master.manifests import load_manifests, record_manifest
from distbuild.master.runner import CompileJob, CompileRun, CompileRunner, LocalRunner
from distbuild.master.stats import BUILD_ID_VAR, Stats, Tally, valid_build_id
from distbuild.rustc import args as rargs
from distbuild.rustc.depinfo import parse_dep_info
from distbuild.rustc.key import Manifest, direct_key, result_key
from distbuild.rustc.outputs import dep_info_path, predicted_outputs, stem
from distbuild.rustc.paths import REMAP_TO, PathMap, default_cargo_home, path_map_for
from distbuild.rustc.runner_env import execution_env
from distbuild.rustc.toolchain import ToolchainRegistry

log = logging.getLogger(__name__)


@dataclass
class Reply:
    """What the shim must do: exec rustc itself, or replay a result."""

    exec_rustc: bool = False
    exit_code: int = 0
    stdout: bytes = b""
    stderr: bytes = b""
    outcome: str = ""  # hit | miss | passthrough | not-cacheable:<reason> | failed


class CompileService:
    def __init__(self, cas: LocalCAS, ac: ActionCache, runner: CompileRunner,
                 stats: Stats, toolchains: ToolchainRegistry, local: LocalRunner | None = None):
        self.cas = cas
        self.ac = ac
        self.runner = runner
        self.local = local
        self.counters = stats
        self._request = threading.local()
        self.toolchains = toolchains
        self.hasher = FileHasher()

    @property
    def stats(self) -> Tally:
        """The current request's tally (one request per thread), committed to the shared
        counters when it is answered: a request in flight, or cut short by a crash, counts
        nothing (see ``stats.py``)."""
        tally: Tally = self._request.tally
        return tally

    # -- entry point -----------------------------------------------------------------------
    def handle(self, argv: list[str], cwd: str, env: dict[str, str]) -> Reply:
        self._request.tally = Tally()
        reply = self._handle(argv, cwd, env)
        build_id = env.get(BUILD_ID_VAR, "")
        self.counters.commit(self._request.tally, build_id if valid_build_id(build_id) else "")
        return reply

    def _handle(self, argv: list[str], cwd: str, env: dict[str, str]) -> Reply:
        classified = rargs.classify(argv, cwd)
        if isinstance(classified, rargs.Passthrough):
            self.stats.incr("passthrough")
            if argv:
                self.toolchains.prefetch(argv[0], env)
            return Reply(exec_rustc=True, outcome="passthrough")
        self.stats.incr("compile_requests")
        if isinstance(classified, rargs.NotCacheable):
            return self._not_cacheable(classified.reason)
        comp = classified
        paths = path_map_for(cwd, comp.out_dir, default_cargo_home(env))
        try:
            toolchain = self.toolchains.identify(comp.rustc, env)
            dkey = direct_key(comp, env, paths, toolchain.id, self.hasher.digest)
        except OSError as e:
            log.info("not cacheable, input unreadable: %s", e)
            return self._not_cacheable("unreadable-input")
        start = time.monotonic()
        hit = self._lookup(comp, env, paths, dkey)
        if hit is not None:
            result, reply = hit
            self.stats.incr("cache_hits")
            spent = time.monotonic() - start
            saved = result.metadata.completed_at - result.metadata.started_at - spent
            self.stats.add_time("time_saved_s", max(saved, 0.0))
            return reply
        self.stats.incr("cache_misses")
        return self._execute(comp, env, paths, dkey, toolchain.id)

    def _not_cacheable(self, reason: str) -> Reply:
        self.stats.not_cacheable(reason)
        return Reply(exec_rustc=True, outcome=f"not-cacheable:{reason}")

    # -- hit path --------------------------------------------------------------------------
    def _lookup(self, comp: rargs.Compilation, env: dict[str, str], paths: PathMap,
                dkey: str) -> tuple[ActionResult, Reply] | None:
        for manifest in load_manifests(self.ac, self.cas, dkey):
            rkey = self._result_key(manifest, env, paths, dkey)
            if rkey is None:
                continue
            result = self.ac.get(rkey)
            if result is None:
                continue
            reply = self._restore(comp, result, paths)
            if reply is not None:
                return result, reply
        return None

    def _result_key(self, manifest: Manifest, env: dict[str, str], paths: PathMap,
                    dkey: str) -> str | None:
        digests = []
        for norm in manifest.sources:
            path = paths.denormalize(norm)
            if path is None:
                return None
            try:
                digests.append(self.hasher.digest(path))
            except OSError:
                return None
        values = [paths.normalize(env[n]) if n in env else None for n in manifest.env_deps]
        return result_key(dkey, manifest, digests, values)

    def _restore(self, comp: rargs.Compilation, result: ActionResult,
                 paths: PathMap) -> Reply | None:
        """Write a cached result's outputs into place; None (a miss) if anything is missing."""
        dep_info = dep_info_path(comp)
        try:
            stdout = self._text_blob(result.stdout_digest, paths)
            stderr = self._text_blob(result.stderr_digest, paths)
            if stdout is None or stderr is None:
                return None
            for out in result.output_files:
                dest = paths.denormalize(out.path)
                if dest is None:
                    return None
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                mode = 0o755 if out.is_executable else 0o644
                if dest == dep_info:
                    text = paths.denormalize_bytes(self.cas.get_bytes(out.digest))
                    if text is None:
                        return None
                    write_atomic(dest, [text], mode)
                else:
                    self.cas.copy_to(out.digest, dest, mode)
                    self.hasher.prime(dest, out.digest.hash)
        except CorruptBlob as e:
            self.stats.incr("corrupt_blobs")
            log.warning("cached result unusable, recompiling: %s", e)
            return None
        except BlobNotFound:
            return None  # evicted since the result was recorded: an ordinary miss
        return Reply(exit_code=result.exit_code, stdout=stdout, stderr=stderr, outcome="hit")

    def _text_blob(self, digest: Digest | None, paths: PathMap) -> bytes | None:
        if digest is None:
            return b""
        return paths.denormalize_bytes(self.cas.get_bytes(digest))

    # -- miss path -------------------------------------------------------------------------
    def _execute(self, comp: rargs.Compilation, env: dict[str, str], paths: PathMap,
                 dkey: str, toolchain_id: str) -> Reply:
        argv = [comp.rustc]
        for root, placeholder in paths.roots:
            argv.append(f"--remap-path-prefix={root}={REMAP_TO[placeholder]}")
        dep_info = dep_info_path(comp)
        extra_dep_info = None
        if dep_info is None:
            extra_dep_info = os.path.join(comp.out_dir, f".distbuild-{stem(comp)}-{os.getpid()}.d")
            argv.append(f"--emit=dep-info={extra_dep_info}")
            dep_info = extra_dep_info
        argv.extend(comp.args)
        outputs = predicted_outputs(comp)
        job = CompileJob(argv=argv, env=execution_env(env), cwd=comp.cwd, outputs=outputs,
                         roots={ph: root for root, ph in paths.roots})
        started = time.time()
        run = self._run(job)
        completed = time.time()
        reply = Reply(exit_code=run.exit_code, stdout=run.stdout, stderr=run.stderr,
                      outcome="miss" if run.exit_code == 0 else "failed")
        self.stats.add_time("compile_time_s", completed - started)
        if run.exit_code != 0:
            return reply  # failed compilations are never cached
        metadata = ExecutionMetadata(worker=run.worker, executor=run.where,
                                     started_at=started, completed_at=completed,
                                     toolchain=toolchain_id)
        try:
            reason = self._record(comp, env, paths, dkey, dep_info, outputs, run, metadata)
        except (OSError, DistbuildError) as e:
            # The compile succeeded: a cache that cannot store it (a full disk...) must not
            # make the shim compile it a second time. Return it, uncached.
            log.warning("compiled, but the result could not be stored: %s", e)
            reason = "store-failed"
        finally:
            if extra_dep_info:
                _unlink(extra_dep_info)
        if reason:
            self.stats.not_stored(reason)
        return reply

    def _run(self, job: CompileJob) -> CompileRun:
        try:
            run = self.runner.run(job)
        except (RemoteError, LocalError) as e:
            if self.local is None or self.local is self.runner:
                raise
            log.warning("remote execution failed, compiling locally: %s", e)
            self.stats.fallback(fallback_reason(e))
            run = self.local.run(job)
        self.stats.incr("executed_remote" if run.where == "remote" else "executed_local")
        return run

    def _record(self, comp: rargs.Compilation, env: dict[str, str], paths: PathMap, dkey: str,
                dep_info: str, outputs: list[str], run: CompileRun,
                metadata: ExecutionMetadata) -> str:
        """Store outputs and the manifest; returns a reason when the result is not cached."""
        try:
            with open(dep_info, encoding="utf-8", errors="surrogateescape") as f:
                info = parse_dep_info(f.read(), comp.cwd)
        except OSError:
            return "no-dep-info"
        started_ns = int(metadata.started_at * 1e9)
        digests = []
        for src in info.sources:
            try:
                if os.stat(src).st_mtime_ns >= started_ns:
                    return "source-modified-during-compile"
                digests.append(self.hasher.digest(src))
            except OSError:
                return "source-vanished"
        manifest = Manifest(tuple(paths.normalize(s) for s in info.sources),
                            tuple(name for name, _ in info.env_deps))
        values = [paths.normalize(env[n]) if n in env else None for n in manifest.env_deps]
        rkey = result_key(dkey, manifest, digests, values)

        files = []
        for path in _with_observed(comp, outputs, started_ns):
            if path == dep_info and path not in outputs:
                continue  # our own extra dep-info file is not an output
            try:
                if path == dep_info:
                    with open(path, "rb") as f:
                        digest = self.cas.put_bytes(paths.normalize_bytes(f.read()))
                else:
                    # A runner that wrote the file from the CAS already knows its digest.
                    digest = run.output_digests.get(path) or self.cas.put_file(path)
                    self.hasher.prime(path, digest.hash)
            except FileNotFoundError:
                return "missing-output"
            files.append(OutputFile(paths.normalize(path), digest, os.access(path, os.X_OK)))
        result = ActionResult(
            output_files=tuple(files), exit_code=0,
            stdout_digest=self._store_text(run.stdout, paths),
            stderr_digest=self._store_text(run.stderr, paths), metadata=metadata,
        )
        self.ac.put(rkey, result)
        record_manifest(self.ac, self.cas, dkey, manifest)
        return ""

    def _store_text(self, data: bytes, paths: PathMap) -> Digest | None:
        return self.cas.put_bytes(paths.normalize_bytes(data)) if data else None


def fallback_reason(error: Exception) -> str:
    """The stats name of why a miss was compiled locally: the error class in kebab case
    (``unavailable``, ``no-suitable-worker``, ``job-failed``, ``incomplete-inputs``,
    ``local-error``)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "-", type(error).__name__).lower()


def _with_observed(comp: rargs.Compilation, predicted: list[str], since_ns: int) -> list[str]:
    """Predicted outputs plus any other file rustc just wrote with the same stem."""
    found = set(predicted)
    s = stem(comp)
    try:
        entries = os.scandir(comp.out_dir)
    except OSError:
        return sorted(found)
    with entries:
        for entry in entries:
            name = entry.name
            if not (name.startswith(s) or name.startswith("lib" + s)) or name.startswith("."):
                continue
            rest = name[len(s):] if name.startswith(s) else name[len(s) + 3:]
            if rest and not rest.startswith("."):
                continue  # a different crate whose name merely starts the same
            try:
                if entry.is_file() and entry.stat().st_mtime_ns >= since_ns:
                    found.add(entry.path)
            except OSError:
                continue
    return sorted(found)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
