"""Packaging a client's toolchain once and finding it again: ``ensure_toolchain``.

A toolchain package is a reproducible root-filesystem ``.tar.gz`` (see ``archive.py``) stored
in the CAS under its BLAKE3 digest; that digest is the toolchain's identity in action keys.
Packaging takes seconds, so its result is remembered in ``cache_dir`` keyed by (real rustc
path, linker) and trusted while the *sysroot digest* (paths, sizes and mtimes of every sysroot
file we package) and the size and mtime of every system file packaged are unchanged: a
``rustup update``, a ``rustup target add`` or an ``apt upgrade`` of gcc or libc repackages.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import blake3

from distbuild.cas.digest import Digest
from distbuild.cas.store import BlobStore
from distbuild.errors import ExecutorUnavailable
from distbuild.toolchain.archive import write_archive
from distbuild.toolchain.discover import (
    IMAGE_ROOT,
    RUSTC_IN_IMAGE,
    add_linker,
    add_rust,
    find_linker,
    find_sysroot,
    sysroot_files,
)
from distbuild.toolchain.rootfs import RootFs

log = logging.getLogger(__name__)

PROPERTY = "toolchain"  # ExecSpec / Command platform property naming the toolchain digest
MANIFEST = f"{IMAGE_ROOT}/distbuild-toolchain.json"
_FORMAT = 1  # bump when the archive layout changes: old memo entries are then ignored
_PASSWD = b"root:x:0:0:root:/:/nonexistent\nnobody:x:65534:65534:nobody:/:/nonexistent\n"
_GROUP = b"root:x:0:\nnogroup:x:65534:\n"
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


@dataclass(frozen=True)
class Toolchain:
    """A packaged toolchain: its CAS digest and how to use it inside the image."""

    digest: Digest
    rustc: str  # the client's real rustc path
    sysroot: str
    version: str  # first line of ``rustc -vV``
    host: str  # rustc's host triple
    rustc_in_image: str = RUSTC_IN_IMAGE
    files: int = 0  # archive entries
    uncompressed_bytes: int = 0
    package_seconds: float = 0.0

    @property
    def platform_property(self) -> tuple[str, str]:
        """The ``("toolchain", "<hash>/<size>")`` pair to put in an action's platform."""
        return (PROPERTY, str(self.digest))


def sysroot_digest(sysroot: Path, targets: Iterable[str] | None = None) -> str:
    """BLAKE3 of (path, size, mtime) of every sysroot file that would be packaged."""
    h = blake3.blake3()
    for rel in sysroot_files(sysroot, targets):
        st = os.stat(sysroot / rel)
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _stat_key(path: str) -> list[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def _rustc_version(rustc: Path) -> tuple[str, str]:
    proc = subprocess.run([str(rustc), "-vV"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ExecutorUnavailable(f"{rustc} -vV failed: {proc.stderr.strip()}")
    lines = proc.stdout.splitlines()
    host = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("host:")), "")
    return (lines[0] if lines else "", host)


def build_rootfs(sysroot: Path, linker: str, targets: Iterable[str] | None = None,
                 version: str = "", host: str = "") -> RootFs:
    """The image's whole root filesystem for this sysroot and linker driver."""
    fs = RootFs()
    add_rust(fs, sysroot, targets)
    add_linker(fs, linker)
    fs.add_dir("/tmp", 0o1777)
    fs.add_data("/etc/passwd", _PASSWD)
    fs.add_data("/etc/group", _GROUP)
    manifest = {"format": _FORMAT, "rustc": RUSTC_IN_IMAGE, "version": version, "host": host}
    fs.add_data(MANIFEST, json.dumps(manifest, sort_keys=True).encode())
    return fs


def _lock_for(key: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


def _memo_valid(memo: dict[str, object], sys_digest: str, store: BlobStore) -> Toolchain | None:
    try:
        if memo.get("format") != _FORMAT or memo.get("sysroot_digest") != sys_digest:
            return None
        host_files = memo["host_files"]
        assert isinstance(host_files, dict)
        for path, key in host_files.items():
            if _stat_key(path) != key:
                return None
        raw = dict(memo["toolchain"])  # type: ignore[call-overload]
        raw["digest"] = Digest.parse(raw["digest"])
        tc = Toolchain(**raw)
    except (OSError, KeyError, TypeError, ValueError, AssertionError):
        return None
    return tc if store.contains(tc.digest) else None


def ensure_toolchain(
    rustc: str, store: BlobStore, cache_dir: Path, *, env: Mapping[str, str] | None = None,
    cwd: str | None = None, linker: str = "cc", targets: Iterable[str] | None = None,
) -> Toolchain:
    """The packaged toolchain for ``rustc``, packaging and storing it in ``store`` if needed.

    Args:
        rustc: the compiler path Cargo runs (a rustup proxy is resolved with ``env``/``cwd``).
        store: where the archive goes (the client's CAS; upload it with the action's inputs).
        cache_dir: where packaging results are remembered between processes.
        linker: the C linker driver to package (looked up on ``env``'s PATH).
        targets: target triples whose std to include; None = all installed.

    Raises:
        ExecutorUnavailable: rustc, its sysroot or the linker driver cannot be packaged.
    """
    sysroot = find_sysroot(rustc, env, cwd)
    linker_path = find_linker(linker, (env or {}).get("PATH"))
    tlist = sorted(targets) if targets is not None else None
    key = blake3.blake3(
        f"{_FORMAT}\0{sysroot.resolve()}\0{linker_path}\0{tlist}".encode()).hexdigest()[:32]
    cache_dir.mkdir(parents=True, exist_ok=True)
    memo_path = cache_dir / f"{key}.json"
    sys_digest = sysroot_digest(sysroot, tlist)
    with _lock_for(key):
        tc = _load_memo(memo_path, sys_digest, store)
        if tc is not None:
            return tc
        with open(cache_dir / f"{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be packaging it right now
            tc = _load_memo(memo_path, sys_digest, store)
            if tc is None:
                tc = _package(sysroot, linker_path, tlist, store, cache_dir, memo_path, sys_digest)
            return tc


def _load_memo(path: Path, sys_digest: str, store: BlobStore) -> Toolchain | None:
    try:
        memo = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return _memo_valid(memo, sys_digest, store) if isinstance(memo, dict) else None


def _package(sysroot: Path, linker: str, targets: list[str] | None, store: BlobStore,
             cache_dir: Path, memo_path: Path, sys_digest: str) -> Toolchain:
    start = time.monotonic()
    version, host = _rustc_version(sysroot / "bin" / "rustc")
    fs = build_rootfs(sysroot, linker, targets, version, host)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".pkg-", suffix=".tar.gz")
    os.close(fd)
    try:
        stats = write_archive(fs, Path(tmp))
        stored = store.put_file(tmp)
        if stored != stats.digest:
            raise ExecutorUnavailable(f"toolchain archive changed while stored: {stored}")
    finally:
        os.unlink(tmp)
    tc = Toolchain(digest=stats.digest, rustc=str(sysroot / "bin" / "rustc"),
                   sysroot=str(sysroot), version=version, host=host, files=stats.entries,
                   uncompressed_bytes=stats.uncompressed_bytes,
                   package_seconds=round(time.monotonic() - start, 3))
    raw = asdict(tc)
    raw["digest"] = str(tc.digest)
    memo = {"format": _FORMAT, "sysroot_digest": sys_digest, "toolchain": raw,
            "host_files": {p: _stat_key(p) for p in fs.host_files()}}
    tmp_memo = memo_path.with_suffix(".tmp")
    tmp_memo.write_text(json.dumps(memo, indent=1, sort_keys=True))
    os.replace(tmp_memo, memo_path)
    log.info("packaged %s as %s (%d files, %.1f MB, %.1fs)", tc.version, tc.digest, tc.files,
             tc.digest.size / 1e6, tc.package_seconds)
    return tc
