"""Toolchain identity: ``rustc -vV`` plus a digest of the sysroot's libraries.

Hashing a sysroot reads a few hundred MB, so identities are memoized in memory per rustc path
and on disk keyed by the stat signature of the rustc binary and of every library file: a
daemon restart costs a stat walk, not a re-hash.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import blake3

from distbuild import spawnlock
from distbuild.errors import ExecutorUnavailable


@dataclass(frozen=True)
class Toolchain:
    rustc: str  # absolute path as invoked
    version: str  # `rustc -vV` output
    sysroot: str
    sysroot_digest: str  # BLAKE3 over (relative path, contents) of every file under lib/
    id: str  # BLAKE3 of version + sysroot_digest: what goes into cache keys


def _lib_files(sysroot: str) -> list[str]:
    lib = os.path.join(sysroot, "lib")
    files: list[str] = []
    for dirpath, dirnames, filenames in os.walk(lib):
        skip = ("src", "etc") if dirpath.endswith("rustlib") else ()
        dirnames[:] = sorted(d for d in dirnames if d not in skip)
        files.extend(os.path.join(dirpath, f) for f in sorted(filenames))
    return files


def _stat_signature(paths: list[str]) -> str:
    h = blake3.blake3()
    for p in paths:
        st = os.stat(p)
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\n".encode())
    return h.hexdigest()


def _hash_tree(sysroot: str, files: list[str]) -> str:
    h = blake3.blake3()
    for p in files:
        h.update(os.path.relpath(p, sysroot).encode() + b"\0")
        fh = blake3.blake3(max_threads=blake3.blake3.AUTO)
        with open(p, "rb") as f:
            while chunk := f.read(1 << 22):
                fh.update(chunk)
        h.update(fh.digest())
    return h.hexdigest()


class ToolchainRegistry:
    """Memoized toolchain identities, persisted in ``<home>/toolchains.json``."""

    def __init__(self, home: Path):
        self._file = home / "toolchains.json"
        self._lock = threading.Lock()
        self._mem: dict[str, tuple[str, Toolchain]] = {}  # rustc -> (rustc stat sig, toolchain)
        self._prefetched: set[str] = set()
        self._prefetch_lock = threading.Lock()  # not _lock: that one is held while hashing
        try:
            self._disk: dict[str, dict[str, str]] = json.loads(self._file.read_text())
        except (OSError, ValueError):
            self._disk = {}

    def identify(self, rustc: str, env: dict[str, str] | None = None) -> Toolchain:
        """The identity of ``rustc`` (runs it once per path per process at most)."""
        quick = _stat_signature([rustc])
        hit = self._mem.get(rustc)
        if hit and hit[0] == quick:
            return hit[1]
        with self._lock:
            hit = self._mem.get(rustc)
            if hit and hit[0] == quick:
                return hit[1]
            tc = self._identify_slow(rustc, env)
            self._mem[rustc] = (quick, tc)
            return tc

    def prefetch(self, rustc: str, env: dict[str, str] | None = None) -> None:
        """Start identifying ``rustc`` in the background, once per path. Cargo asks
        ``rustc -vV`` before it compiles anything, so the first compile finds the (possibly
        freshly hashed) identity ready instead of waiting for it."""
        with self._prefetch_lock:
            if rustc in self._prefetched or rustc in self._mem:
                return
            self._prefetched.add(rustc)

        def work() -> None:
            try:
                self.identify(rustc, env)
            except ExecutorUnavailable:
                pass  # the compile that needs it reports it

        threading.Thread(target=work, name="toolchain-prefetch", daemon=True).start()

    def _identify_slow(self, rustc: str, env: dict[str, str] | None) -> Toolchain:
        run_env = {k: v for k, v in (env or os.environ).items()
                   if k.startswith(("RUSTUP_", "PATH", "HOME"))}
        try:
            version = spawnlock.run([rustc, "-vV"], capture_output=True, text=True, check=True,
                                    env=run_env).stdout
            sysroot = spawnlock.run([rustc, "--print", "sysroot"], capture_output=True,
                                    text=True, check=True, env=run_env).stdout.strip()
        except (OSError, subprocess.CalledProcessError) as e:
            raise ExecutorUnavailable(f"cannot run {rustc} to identify the toolchain: {e}") from e
        files = _lib_files(sysroot)
        signature = _stat_signature([rustc, *files])
        cached = self._disk.get(signature)
        if cached and cached.get("version") == version:
            return Toolchain(**cached)
        digest = _hash_tree(sysroot, files)
        tc_id = blake3.blake3(f"{version}\0{digest}".encode()).hexdigest()
        tc = Toolchain(rustc, version, sysroot, digest, tc_id)
        self._disk[signature] = asdict(tc)
        tmp = self._file.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(self._disk, indent=1))
        os.replace(tmp, self._file)
        return tc
