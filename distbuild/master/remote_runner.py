"""RemoteRunner: run a rustc CompileJob on the cluster, with the same outputs as a local run.

How a job becomes an Action:
  * The input root mirrors the absolute paths of every file rustc reads: ``/ws/src/lib.rs``
    becomes ``ws/src/lib.rs`` in the tree. Inputs are the sources (the crate's package
    directory, else what a dep-info probe reports: see ``inputs.py``), every ``--extern``
    file, every loadable library in ``-L`` directories (minus this job's own outputs), and
    OUT_DIR. When the sources were guessed from the package and the compile fails on a
    missing file, ``IncompleteInputs`` sends it back to be compiled in place.
  * Blobs go through the master's local CAS: inputs are stored there and the scheduler is
    sent what it lacks; outputs are fetched into it and copied out. The embedded cluster
    shares that CAS, so nothing is sent or fetched over gRPC at all.
  * Absolute paths under the job's roots (workspace, target dir, CARGO_HOME, cwd) in arguments
    and environment get the ``@@SANDBOX@@`` prefix, which the worker replaces by its sandbox
    path; ``--remap-path-prefix=@@SANDBOX@@=/`` keeps sandbox paths out of the artifacts, and
    the worker writes the placeholder back into dep-info files and stdout/stderr, which we
    strip when writing them here. argv[0] (rustc) and system paths stay as they are: the
    local executor uses the worker machine's toolchain at the same path.
  * Platform: executor, os, arch and the toolchain id (``rustc -vV`` release + commit).
  * ``in_place`` (the embedded worker, which shares this machine's files): the Action is the
    job's own command line, environment and working directory with an empty input root and
    ``execution=in-place``; the worker runs it where it is and its outputs land in place, so
    nothing is materialized, copied or rewritten, and incremental state is kept. Such an
    Action does not name its inputs, so it is never cached by the scheduler (the master's own
    cache, keyed by what rustc really read, is the one that matters).

Any cluster problem raises a ``RemoteError`` (``Unavailable``, ``NoSuitableWorker``,
``JobFailed``, ``IncompleteInputs``), a failure of this machine's files a ``LocalError``; the
master then compiles locally and counts a fallback with its reason.
A compile error is not a cluster problem: it comes back as a CompileRun with a nonzero exit
code.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from distbuild.actions import ActionResult, OutputFile
from distbuild.cas import local_cas
from distbuild.cas.digest import Digest, digest_file
from distbuild.cas.store import LocalCAS
from distbuild.config import Config
from distbuild.errors import (
    DistbuildError,
    IncompleteInputs,
    JobFailed,
    LocalError,
    NoSuitableWorker,
    RemoteError,
    Unavailable,
)
from distbuild.fsutil import write_atomic
from distbuild.inplace import IN_PLACE
from distbuild.master.inputs import Inputs, missed_input, package_inputs, probe_inputs
from distbuild.master.runner import CompileJob, CompileRun, CompileRunner
from distbuild.reapi.cas_client import RemoteCAS
from distbuild.reapi.execution_client import Execution, ExecutionClient
from distbuild.rpc.server import make_channel
from distbuild.rustc.paths import TARGET
from distbuild.scheduler.action_builder import InputFile, PreparedAction, prepare_action
from distbuild.scheduler.client import default_client_id
from distbuild.toolchain.ship import ship_toolchain
from distbuild.worker.blob_cache import CachedStore
from distbuild.worker.materialize import SANDBOX_ROOT
from distbuild.worker.platform import host_platform, rustc_toolchain_id

log = logging.getLogger(__name__)

LOADABLE = (".rlib", ".rmeta", ".so", ".dylib", ".dll", ".a", ".lib", ".o")
# What `-L dependency=DIR` is searched for: crates only. (Cargo's deps directory also holds
# the object files of compiles in progress, which may vanish at any moment.)
CRATE_FILES = (".rlib", ".rmeta", ".so", ".dylib", ".dll")
SYSTEM_PREFIXES = ("/usr/", "/lib/", "/lib64/", "/etc/", "/proc/", "/sys/", "/dev/", "/opt/")
# Environment variables naming the machine's tools rather than the build's files.
KEEP_ENV = frozenset({"PATH", "HOME", "RUSTUP_HOME", "RUSTUP_TOOLCHAIN", "CARGO", "CARGO_HOME",
                      "RUSTC", "RUSTDOC", "RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER",
                      "LD_LIBRARY_PATH", "TMPDIR"})
_PATH_CHAR = r"A-Za-z0-9._+\-"
RETRY_AFTER_S = 5.0  # after Unavailable / NoSuitableWorker, go local at once for this long,
MAX_RETRY_AFTER_S = 60.0  # doubling while it stays so, up to this
RECONNECT_S = 30.0  # how long to keep trying to rejoin a submitted job across a restart
# A failed job's error kind -> what we raise (the embedded worker's local errors are ours).
_JOB_ERRORS: dict[str, type[DistbuildError]] = {
    "NoSuitableWorker": NoSuitableWorker, "LocalError": LocalError}


class RemoteRunner:
    """A CompileRunner that ships jobs to the scheduler at ``cfg.scheduler.addr``."""

    def __init__(self, cfg: Config, fallback: CompileRunner | None = None, addr: str = "",
                 executor: str = "local", client_id: str = "", match_toolchain: bool = True,
                 where: str = "remote", cache: LocalCAS | None = None,
                 in_place: bool = False, shared_cache: bool = False):
        self.cfg = cfg
        self.where = where  # how stats count these runs: the embedded worker is "local"
        self.addr = addr or cfg.scheduler.addr
        self.fallback = fallback
        self.executor = executor
        self.match_toolchain = match_toolchain
        self.in_place = in_place
        self._channel = make_channel(self.addr, cfg)
        self.cas = RemoteCAS(self.addr, cfg, channel=self._channel)
        # The master's own CAS in front of the scheduler's (see the module docstring);
        # shared_cache: it is the scheduler's CAS (the embedded cluster).
        self.store = CachedStore(cache or local_cas(cfg), self.cas, shared=shared_cache)
        self.executions = ExecutionClient(self._channel, client_id=client_id or
                                          default_client_id(),
                                          where=f"scheduler at {self.addr}",
                                          first_reply_s=cfg.scheduler.unresponsive_timeout)
        self._digests: dict[tuple[str, int, int, int], Digest] = {}
        self._toolchains: dict[str, str] = {}
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._down_for = 0.0
        self._down_error: Unavailable = Unavailable("")

    def close(self) -> None:
        self._channel.close()

    def run(self, job: CompileJob) -> CompileRun:
        """Compile remotely; raises RemoteError for anything the cluster got wrong."""
        start = time.monotonic()
        if start < self._down_until:
            raise type(self._down_error)(
                f"scheduler at {self.addr} was unavailable moments ago "
                f"({self._down_error}); compiling locally")
        try:
            run = self._run(job, start)
        except Unavailable as e:
            # Do not pay a connection attempt per compile while the cluster is down; the
            # longer it stays down, the less often (a frozen one costs each attempt seconds).
            with self._lock:
                self._down_for = min(self._down_for * 2, MAX_RETRY_AFTER_S) \
                    if self._down_for else RETRY_AFTER_S
                self._down_until, self._down_error = time.monotonic() + self._down_for, e
            raise
        self._down_for = 0.0
        return run

    def _run(self, job: CompileJob, start: float) -> CompileRun:
        try:
            prepared, outputs, exact = self.prepare(job)
            final = self._execute(prepared)
            if not final.done:
                raise JobFailed("the scheduler ended the job stream early")
            if final.error_kind or final.result is None:
                cls = _JOB_ERRORS.get(final.error_kind, JobFailed)
                raise cls(f"job {final.name}: {final.error_kind}: {final.error}")
            result = self._local_result(final.result)
            stderr = self._text(result.stderr_digest)
            if result.exit_code != 0 and not exact and missed_input(stderr):
                raise IncompleteInputs(
                    "the compile needs a file outside its package (compiling in place): "
                    + stderr.decode(errors="replace")[-300:])
            written = self._download(result.output_files, outputs)
            stdout = self._text(result.stdout_digest)
        except (RemoteError, LocalError):
            raise
        except OSError as e:  # this machine's files (a full cache disk...), not the cluster
            raise LocalError(f"preparing or collecting a remote job failed here: {e}") from e
        except (DistbuildError, subprocess.SubprocessError) as e:
            raise RemoteError(f"remote execution failed: {e}") from e
        return CompileRun(result.exit_code, stdout, stderr, self.where,
                          worker=result.metadata.worker, duration_s=time.monotonic() - start,
                          output_digests=written)

    def _execute(self, prepared: PreparedAction) -> Execution:
        """Send the blobs the server lacks, then execute and follow to the end."""
        self.store.upload(prepared.blobs)
        return self._follow(prepared.digest)

    def _local_result(self, result: ActionResult) -> ActionResult:
        """``result`` in the digests of the master's own CAS (a farm's may differ)."""
        return result

    def _follow(self, digest: Digest) -> Execution:
        """Execute and follow to the end; if the stream breaks (a scheduler restart), pick the
        execution up again with WaitExecution for a while before giving up (not after
        silence: an ``Unresponsive`` scheduler is frozen or cut off, compile locally now)."""
        return self.executions.run(digest, timeout=self.cfg.scheduler.job_timeout + 60,
                                   reconnect_for=RECONNECT_S)

    # -- job -> action ----------------------------------------------------------------------
    def prepare(self, job: CompileJob) -> tuple[PreparedAction, dict[str, str], bool]:
        """The Action for ``job``, a map output path (relative to the working directory, as
        REAPI names outputs) -> local absolute path, and
        whether its sources are known exactly (not guessed from the package)."""
        rustc, args = job.argv[0], job.argv[1:]
        scan = _scan_args(args, job.cwd)
        outputs = [os.path.normpath(os.path.join(job.cwd, o)) for o in job.outputs]
        outputs += scan.emitted
        # Output paths are relative to the working directory (REAPI), e.g. ../target/x.rlib.
        out_map = {os.path.relpath(o, job.cwd): o for o in outputs}
        if self.in_place:
            return self._in_place_action(job, out_map), out_map, True
        found = self._sources(job, scan)
        files: set[str] = set(found.files) | set(scan.files)
        files.update(self._libraries(scan.files, scan.lib_dirs, scan.crate_dirs))
        out_dir = job.env.get("OUT_DIR")
        if out_dir and os.path.isdir(out_dir):
            for dirpath, _, names in os.walk(out_dir):
                files.update(os.path.join(dirpath, n) for n in names)
        files -= set(outputs)
        prefixes = {os.path.normpath(r) for r in job.roots.values()} | {os.path.normpath(job.cwd)}
        for p in [*scan.lib_dirs, *scan.out_dirs, *(os.path.dirname(o) for o in outputs)]:
            if not any(_inside(p, q) for q in prefixes) and not _system(p):
                prefixes.add(os.path.normpath(p))
        sub = _substituter(prefixes)
        inputs = {}
        for path in sorted(files):
            path = os.path.normpath(os.path.join(job.cwd, path))
            if _system(path) or not os.path.isfile(path):
                continue
            try:
                digest = self._digest(path)
            except FileNotFoundError:
                continue  # gone since it was listed: nothing the compile could read either
            inputs[path.lstrip("/")] = InputFile(digest, Path(path), os.access(path, os.X_OK))
        argv = _drop_incremental([rustc, f"--remap-path-prefix={SANDBOX_ROOT}=/",
                                  *(sub(a) for a in args)])
        env = {k: (v if k in KEEP_ENV else sub(v)) for k, v in job.env.items()}
        # Docker workers get the toolchain itself, named by its archive's digest (docs/docker.md)
        shipped = (ship_toolchain(rustc, self.cfg, self.cas, job.env, job.cwd)
                   if self.executor == "docker" else None)
        platform = (("executor", self.executor), *host_platform(),
                    ("toolchain", str(shipped.toolchain.digest) if shipped
                     else self._toolchain(rustc) if self.match_toolchain else ""))
        dirs = tuple(sorted({d.lstrip("/") for d in [*scan.out_dirs, *found.dirs]}))
        prepared = prepare_action(
            argv, inputs, output_paths=tuple(out_map), env=env,
            working_directory=os.path.normpath(job.cwd).lstrip("/"),
            platform=tuple(p for p in platform if p[1]),
            timeout_s=self.cfg.scheduler.job_timeout, dirs=dirs)
        if shipped is not None:
            prepared.blobs.update(shipped.blobs)
        return prepared, out_map, found.exact

    def _in_place_action(self, job: CompileJob, out_map: dict[str, str]) -> PreparedAction:
        """The job as it is, to run where it is (see the module docstring)."""
        return prepare_action(
            job.argv, {}, output_paths=tuple(out_map), env=job.env,
            working_directory=os.path.normpath(job.cwd).lstrip("/"),
            platform=(("executor", self.executor), *host_platform(), IN_PLACE),
            timeout_s=self.cfg.scheduler.job_timeout, do_not_cache=True, host_root=True)

    def _libraries(self, externs: list[str], lib_dirs: list[str], crate_dirs: set[str]
                   ) -> set[str]:
        """What the ``-L`` directories offer the compile: every crate file in a ``-L
        dependency=`` directory (rustc finds the dependencies of its ``--extern`` crates
        there), every loadable file in the others."""
        files: set[str] = set()
        for d in lib_dirs:
            files.update(_loadable(d, CRATE_FILES if d in crate_dirs else LOADABLE))
        return files

    def _sources(self, job: CompileJob, scan: _Scan) -> Inputs:
        """The package's files, else a probe's."""
        target = job.roots.get(TARGET)
        found = package_inputs(job, exclude=[*scan.out_dirs, *([target] if target else [])])
        return found or probe_inputs(job, _probe_args(job.argv[1:]))

    def _digest(self, path: str) -> Digest:
        st = os.stat(path)
        key = (path, st.st_size, st.st_mtime_ns, st.st_ino)
        digest = self._digests.get(key)
        if digest is None:
            digest = digest_file(path)
            with self._lock:
                if len(self._digests) > 200_000:
                    self._digests.clear()
                self._digests[key] = digest
        return digest

    def _toolchain(self, rustc: str) -> str:
        if rustc not in self._toolchains:
            self._toolchains[rustc] = rustc_toolchain_id(rustc)
        return self._toolchains[rustc]

    # -- results ----------------------------------------------------------------------------
    def _download(self, files: tuple[OutputFile, ...], out_map: dict[str, str]
                  ) -> dict[str, Digest]:
        """Write the outputs into place; returns the digest of each file written verbatim
        (or, in place, found where the worker wrote it)."""
        if self.in_place:
            return {out_map[f.path]: f.digest for f in files if f.path in out_map}
        self.store.ensure(f.digest for f in files)
        written: dict[str, Digest] = {}
        for f in files:
            dest = out_map.get(f.path)
            if dest is None:
                raise JobFailed(f"worker returned an output we did not ask for: {f.path!r}")
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            mode = 0o755 if f.is_executable else 0o644
            if dest.endswith(".d"):
                write_atomic(dest, [_unplace(self.store.get_bytes(f.digest))], mode)
            else:
                self.store.local.copy_to(f.digest, dest, mode)
                written[dest] = f.digest
        return written

    def _text(self, digest: Digest | None) -> bytes:
        return b"" if digest is None else _unplace(self.store.get_bytes(digest))


class _Scan:
    def __init__(self) -> None:
        self.files: list[str] = []  # --extern files
        self.lib_dirs: list[str] = []  # -L directories
        self.crate_dirs: set[str] = set()  # those of them given as -L dependency=DIR
        self.out_dirs: list[str] = []
        self.emitted: list[str] = []  # --emit kind=path outputs


def _scan_args(args: list[str], cwd: str) -> _Scan:
    s = _Scan()

    def absp(p: str) -> str:
        return os.path.normpath(os.path.join(cwd, p))

    it = iter(range(len(args)))
    for i in it:
        a = args[i]
        nxt = args[i + 1] if i + 1 < len(args) else ""
        if a in ("--extern", "-L", "--out-dir", "--emit", "-o"):
            value, flag = nxt, a
            next(it, None)
        elif a.startswith(("--extern=", "--out-dir=", "--emit=")):
            flag, _, value = a.partition("=")
        elif a.startswith("-L"):
            flag, value = "-L", a[2:]
        else:
            continue
        if flag == "--extern" and "=" in value:
            s.files.append(absp(value.split("=", 1)[1]))
        elif flag == "-L":
            kind, eq, d = value.partition("=")
            if not eq:
                kind, d = "", value
            s.lib_dirs.append(absp(d))
            if kind == "dependency":
                s.crate_dirs.add(absp(d))
        elif flag == "--out-dir":
            s.out_dirs.append(absp(value))
        elif flag == "-o":
            s.emitted.append(absp(value))
            s.out_dirs.append(os.path.dirname(absp(value)))
        elif flag == "--emit":
            for part in value.split(","):
                if "=" in part and part.split("=", 1)[1] != "-":
                    s.emitted.append(absp(part.split("=", 1)[1]))
    return s


def _probe_args(args: list[str]) -> list[str]:
    """``args`` without outputs (--emit, --out-dir, -o) and incremental state."""
    out: list[str] = []
    skip = False
    for a in args:
        if skip:
            skip = False
            continue
        if a in ("--emit", "--out-dir", "-o"):
            skip = True
            continue
        if a.startswith(("--emit=", "--out-dir=")):
            continue
        out.append(a)
    return _drop_incremental(out)


def _drop_incremental(argv: list[str]) -> list[str]:
    """Remove ``-C incremental=...`` in both spellings: state a sandbox would throw away."""
    out: list[str] = []
    for a in argv:
        if a.startswith("incremental=") and out and out[-1] == "-C":
            out.pop()
            continue
        if a.startswith("-Cincremental="):
            continue
        out.append(a)
    return out


def _loadable(d: str, suffixes: tuple[str, ...]) -> list[str]:
    try:
        with os.scandir(d) as entries:
            return [e.path for e in entries if e.name.endswith(suffixes) and e.is_file()]
    except OSError:
        return []


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _system(path: str) -> bool:
    return path.startswith(SYSTEM_PREFIXES) or path == "/"


def _substituter(prefixes: set[str]) -> Callable[[str], str]:
    roots = sorted((p for p in prefixes if p != "/"), key=len, reverse=True)
    if not roots:
        return lambda s: s
    regex = re.compile(f"(?<![{_PATH_CHAR}/])(" + "|".join(map(re.escape, roots))
                       + f")(?![{_PATH_CHAR}])")
    return lambda s: regex.sub(lambda m: SANDBOX_ROOT + m.group(1), s)


def _unplace(data: bytes) -> bytes:
    """Sandbox placeholders -> the original absolute paths (the tree mirrors them at '/')."""
    return data.replace(SANDBOX_ROOT.encode() + b"/", b"/").replace(SANDBOX_ROOT.encode(), b"/")
