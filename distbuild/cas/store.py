"""On-disk content-addressed store.

Layout: ``<root>/blobs/<first two hex chars>/<hash>``; temp files in ``<root>/tmp``. Writes are
atomic (temp file, fsync-free rename) so any number of processes may write at once: two writers
of the same blob produce the same bytes and the last rename wins harmlessly. Every read hashes
what it reads; a blob whose bytes do not match its name is deleted and reported as a miss
(``CorruptBlob``), never served. A blob's mtime is its last use, which drives LRU eviction.
A store holds the blobs of one digest function (``LocalCAS.function``, BLAKE3 by default);
``ContentStores`` (``cas/storage.py``) keeps one per function side by side.
"""

from __future__ import annotations

import logging
import mmap
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from distbuild.cas.digest import BLAKE3, CHUNK, Digest, DigestFunction, digest_bytes
from distbuild.errors import BlobNotFound, CorruptBlob, InvalidDigest
from distbuild.fsutil import atomic_file, copy_range
from distbuild.spawnlock import SPAWN_LOCK

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BlobInfo:
    digest: Digest
    last_used: float


@dataclass
class GcReport:
    removed: int = 0
    freed_bytes: int = 0
    remaining_bytes: int = 0


@dataclass
class VerifyReport:
    checked: int = 0
    corrupt: list[str] = field(default_factory=list)


class Readable(Protocol):
    """Anything with a binary ``read(size)``: a file, a socket reader, a chunk iterator shim."""

    def read(self, size: int = -1, /) -> bytes: ...


class BlobStore(Protocol):
    """What every CAS backend (local disk, remote gRPC) offers."""

    def contains(self, digest: Digest) -> bool: ...

    def find_missing(self, digests: Iterable[Digest]) -> list[Digest]: ...

    def put_bytes(self, data: bytes) -> Digest: ...

    def put_file(self, path: str | Path) -> Digest: ...

    def get_bytes(self, digest: Digest) -> bytes: ...

    def copy_to(self, digest: Digest, dest: str | Path, mode: int = 0o644) -> None: ...


class LocalCAS:
    """A content-addressed store in a local directory, for one digest function."""

    def __init__(self, root: str | Path, max_size: int = 10 << 30, gc_target: float = 0.8,
                 function: DigestFunction = BLAKE3):
        self.root = Path(root)
        self.function = function
        self.max_size = max_size
        self.gc_target = gc_target
        self._blobs = self.root / "blobs"
        self._tmp = self.root / "tmp"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)

    # -- paths -----------------------------------------------------------------------------
    def path_of(self, digest: Digest) -> Path:
        return self._blobs / digest.hash[:2] / digest.hash

    def _tempfile(self) -> tuple[int, str]:
        return tempfile.mkstemp(dir=self._tmp, prefix="put-")

    def _commit(self, tmp: str, digest: Digest) -> None:
        final = self.path_of(digest)
        final.parent.mkdir(exist_ok=True)
        os.replace(tmp, final)

    # -- writes ----------------------------------------------------------------------------
    def put_bytes(self, data: bytes) -> Digest:
        """Store ``data``; returns its digest."""
        digest = digest_bytes(data, self.function)
        if self._touch(digest):
            return digest
        fd, tmp = self._tempfile()
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        self._commit(tmp, digest)
        return digest

    def put_stream(self, stream: Readable, expected: Digest | None = None) -> Digest:
        """Store a stream, hashing as it is copied; refuse it if ``expected`` differs."""
        fd, tmp = self._tempfile()
        hasher, size = self.function.hasher(), 0
        try:
            with os.fdopen(fd, "wb") as f:
                while chunk := stream.read(CHUNK):
                    hasher.update(chunk)
                    size += len(chunk)
                    f.write(chunk)
            digest = Digest(hasher.hexdigest(), size)
            if expected is not None and digest != expected:
                raise CorruptBlob(f"uploaded bytes hash to {digest}, not the claimed {expected}")
            if self._touch(digest):
                os.unlink(tmp)
            else:
                self._commit(tmp, digest)
            return digest
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def put_file(self, path: str | Path) -> Digest:
        """Store a file's contents: hashed through a memory map, copied by the kernel."""
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if not size:
                return self.put_bytes(b"")
            hasher = self.function.hasher(size)
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
                hasher.update(view)
            digest = Digest(hasher.hexdigest(), size)
            if self._touch(digest):
                return digest
            fd, tmp = self._tempfile()
            try:
                with os.fdopen(fd, "wb") as out:
                    copy_range(f.fileno(), out, size)
                self._commit(tmp, digest)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
            return digest

    # -- reads -----------------------------------------------------------------------------
    def contains(self, digest: Digest) -> bool:
        """Cheap presence check (size only; contents are verified when read)."""
        try:
            return self.path_of(digest).stat().st_size == digest.size
        except OSError:
            return False

    def find_missing(self, digests: Iterable[Digest]) -> list[Digest]:
        return [d for d in digests if not self.contains(d)]

    def _touch(self, digest: Digest) -> bool:
        """Mark a blob used now; False if absent."""
        try:
            os.utime(self.path_of(digest))
            return self.contains(digest)
        except OSError:
            return False

    def _corrupt(self, digest: Digest, why: str) -> CorruptBlob:
        path = self.path_of(digest)
        log.warning("CAS blob %s is corrupt (%s); removed", digest, why)
        try:
            path.unlink()
        except OSError:
            pass
        return CorruptBlob(f"blob {digest} was corrupt ({why}) and has been removed")

    def open_verified(self, digest: Digest, touch: bool = True) -> Iterator[bytes]:
        """Yield a blob's chunks; raises CorruptBlob at the end if the bytes do not match.

        Callers must not commit what they read until the iterator is exhausted. ``touch``
        marks the blob used (its mtime drives LRU eviction); checking it is not a use.
        """
        path = self.path_of(digest)
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            raise BlobNotFound(f"blob {digest} is not in {self.root}") from None
        with f:
            hasher, size = self.function.hasher(), 0
            while chunk := f.read(CHUNK):
                hasher.update(chunk)
                size += len(chunk)
                yield chunk
        if size != digest.size or hasher.hexdigest() != digest.hash:
            raise self._corrupt(digest, f"read {size} bytes hashing to {hasher.hexdigest()[:16]}")
        if touch:
            try:
                os.utime(path)
            except OSError:
                pass

    def get_bytes(self, digest: Digest) -> bytes:
        """A whole blob, verified."""
        return b"".join(self.open_verified(digest))

    def copy_to(self, digest: Digest, dest: str | Path, mode: int = 0o644) -> None:
        """Write a verified copy of a blob to ``dest`` atomically (temp file + rename).

        The blob is hashed through a memory map and then copied by the kernel
        (``copy_file_range``): no byte passes through Python, which is most of a cache hit's
        cost for large rlibs. Nothing is written unless the hash matches.
        """
        path = self.path_of(digest)
        try:
            src = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise BlobNotFound(f"blob {digest} is not in {self.root}") from None
        try:
            size = os.fstat(src).st_size
            hasher = self.function.hasher(size)
            if size:
                with mmap.mmap(src, 0, access=mmap.ACCESS_READ) as view:
                    hasher.update(view)
            if size != digest.size or hasher.hexdigest() != digest.hash:
                raise self._corrupt(digest, f"{size} bytes hashing to {hasher.hexdigest()[:16]}")
            # An executable must not be open for writing while a child starts (spawnlock.py).
            guard = SPAWN_LOCK.writing_executable() if mode & 0o111 else nullcontext()
            with guard, atomic_file(dest, mode) as out:
                copy_range(src, out, size)
        finally:
            os.close(src)
        try:
            os.utime(path)
        except OSError:
            pass

    # -- maintenance -----------------------------------------------------------------------
    def list(self) -> Iterator[BlobInfo]:
        """Every blob with its last-use time (unordered).

        Anything else under ``blobs/`` (a stray file or directory, not named by its hash) is
        skipped with a warning: it must not stop a listing, a verify or a gc.
        """
        for shard in self._blobs.iterdir():
            if not shard.is_dir():
                log.warning("skipping %s: not a blob shard directory", shard)
                continue
            for entry in os.scandir(shard):
                try:
                    if not entry.is_file(follow_symlinks=False):
                        raise InvalidDigest("not a regular file")
                    st = entry.stat(follow_symlinks=False)
                    digest = Digest(entry.name, st.st_size)
                    if digest.hash[:2] != shard.name:
                        raise InvalidDigest(f"belongs in shard {digest.hash[:2]}")
                except InvalidDigest as e:
                    log.warning("skipping %s: not a blob (%s)", entry.path, e)
                    continue
                except OSError:
                    continue  # removed meanwhile
                yield BlobInfo(digest, st.st_mtime)

    def total_size(self) -> int:
        return sum(b.digest.size for b in self.list())

    def gc(self, max_size: int | None = None) -> GcReport:
        """Evict least recently used blobs until the store is under ``gc_target * max_size``."""
        cap = self.max_size if max_size is None else max_size
        blobs = sorted(self.list(), key=lambda b: b.last_used)
        total = sum(b.digest.size for b in blobs)
        report = GcReport(remaining_bytes=total)
        if total <= cap:
            return report
        target = int(cap * self.gc_target)
        for blob in blobs:
            if report.remaining_bytes <= target:
                break
            try:
                self.path_of(blob.digest).unlink()
            except OSError:
                continue
            report.removed += 1
            report.freed_bytes += blob.digest.size
            report.remaining_bytes -= blob.digest.size
        self._clean_tmp()
        return report

    def _clean_tmp(self, older_than: float = 3600.0) -> None:
        cutoff = time.time() - older_than
        for entry in os.scandir(self._tmp):
            try:
                if entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
            except OSError:
                pass

    def verify(self) -> VerifyReport:
        """Re-hash every blob; corrupt ones are removed and listed. Least-recently-used order
        is left as it was (checking a blob is not using it)."""
        report = VerifyReport()
        for blob in list(self.list()):
            report.checked += 1
            try:
                for _ in self.open_verified(blob.digest, touch=False):
                    pass
            except CorruptBlob:
                report.corrupt.append(str(blob.digest))
            except BlobNotFound:
                pass
        return report

    def clear(self) -> None:
        shutil.rmtree(self._blobs, ignore_errors=True)
        self._blobs.mkdir(parents=True, exist_ok=True)

