"""A read-through blob cache: a LocalCAS with its own size cap in front of a remote CAS.

Reads are served from the local cache when present and fetched (verified) otherwise; writes go
to both, and the remote is sent only what it lacks. With ``shared`` the remote serves this
very store (the master's embedded cluster), so nothing is sent or fetched at all. It
implements the BlobStore protocol, so executors (docker toolchains, wasm modules) read through
it like any store. ``CachedStores`` keeps one per digest function (a worker runs BLAKE3 actions
from our clients and SHA-256 ones from REAPI clients such as Bazel 4).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from distbuild.cas.digest import BLAKE3, Digest, DigestFunction, digest_file
from distbuild.cas.store import LocalCAS
from distbuild.errors import CorruptBlob, InvalidRequest
from distbuild.fsutil import write_atomic
from distbuild.reapi.cas_client import RemoteCAS


class CachedStore:
    def __init__(self, local: LocalCAS, remote: RemoteCAS, shared: bool = False):
        if local.function is not remote.function:
            raise ValueError(f"a {local.function} cache in front of a {remote.function} CAS")
        self.function = local.function
        self.local = local
        self.remote = remote
        self.shared = shared
        self._written = 0
        self._gc_lock = threading.Lock()
        self.fetched = 0  # blobs fetched from the remote (for status and tests)

    def ensure(self, digests: Iterable[Digest]) -> int:
        """Fetch into the local cache whatever it lacks; returns how many were fetched."""
        missing = [d for d in self.local.find_missing(dict.fromkeys(digests)) if d.size > 0]
        if missing and not self.shared:
            self.fetched += self.remote.fetch_into(missing, self.local)
            self._account(sum(d.size for d in missing))
        return len(missing)

    def upload(self, blobs: dict[Digest, bytes | Path]) -> int:
        """Store ``blobs`` in the local cache, then send the remote those it lacks; returns
        how many were sent."""
        added = 0
        for digest, src in blobs.items():
            if digest.size and not self.local.contains(digest):
                stored = (self.local.put_bytes(src) if isinstance(src, bytes)
                          else self.local.put_file(src))
                if stored != digest:
                    raise CorruptBlob(f"{src if isinstance(src, Path) else 'a blob'} changed "
                                      f"while being stored: {stored}, expected {digest}")
                added += digest.size
        self._account(added)
        return self.send(blobs)

    def send(self, blobs: dict[Digest, bytes | Path]) -> int:
        """Send the remote those of ``blobs`` (already stored here) it lacks."""
        return 0 if self.shared else self.remote.upload(blobs)

    def contains(self, digest: Digest) -> bool:
        return self.local.contains(digest) or self.remote.contains(digest)

    def find_missing(self, digests: Iterable[Digest]) -> list[Digest]:
        return self.remote.find_missing(self.local.find_missing(digests))

    def put_bytes(self, data: bytes) -> Digest:
        digest = self.local.put_bytes(data)
        self.remote.upload({digest: data})
        return digest

    def put_file(self, path: str | Path) -> Digest:
        digest = digest_file(path, self.function)
        self.remote.upload({digest: Path(path)})
        return digest

    def get_bytes(self, digest: Digest) -> bytes:
        if digest.size == 0:
            return b""  # never stored: the empty blob (e.g. an empty Directory) is implicit
        self.ensure([digest])
        return self.local.get_bytes(digest)

    def copy_to(self, digest: Digest, dest: str | Path, mode: int = 0o644) -> None:
        if digest.size == 0:
            write_atomic(dest, [], mode)
            return
        self.ensure([digest])
        self.local.copy_to(digest, dest, mode)

    def _account(self, nbytes: int) -> None:
        """Evict once a tenth of the cap has passed through since the last gc."""
        self._written += nbytes
        if self._written > self.local.max_size // 10 and self._gc_lock.acquire(blocking=False):
            try:
                self._written = 0
                self.local.gc()
            finally:
                self._gc_lock.release()


class CachedStores:
    """A ``CachedStore`` per digest function: BLAKE3's given, the others made on first use."""

    def __init__(self, blake3: CachedStore,
                 make: Callable[[DigestFunction], CachedStore] | None = None):
        self._stores = {BLAKE3: blake3}
        self._make = make
        self._lock = threading.Lock()

    def get(self, function: DigestFunction) -> CachedStore:
        store = self._stores.get(function)
        if store is None:
            if self._make is None:
                raise InvalidRequest(f"this worker takes no {function} actions")
            with self._lock:
                store = self._stores.get(function) or self._make(function)
                self._stores[function] = store
        return store
