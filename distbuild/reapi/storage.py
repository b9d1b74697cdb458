"""The plain logic behind the storage services: checks, caps and verification over
``ContentStores`` (one CAS and action cache per digest function). No gRPC here.

Every upload is verified against its claimed digest before anything is stored, and a batch
with one bad blob stores nothing. Blobs above the store's cap are refused. Written bytes are
counted so that eviction runs in the background once a tenth of a store's cap has arrived.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from distbuild.actions import ActionResult
from distbuild.cas.digest import Digest, DigestFunction, digest_bytes
from distbuild.cas.storage import ContentStores
from distbuild.cas.store import BlobInfo, LocalCAS
from distbuild.codec import decode_directory
from distbuild.errors import (
    BlobNotFound,
    BlobTooLarge,
    CorruptBlob,
    DistbuildError,
    InvalidRequest,
)

TREE_PAGE = 1_000  # directories per GetTree page at most
TREE_PAGE_BYTES = 2 << 20
TREE_MAX = 100_000  # directories walked per GetTree at most


@dataclass(frozen=True)
class ReadItem:
    """One blob of a batch read: its bytes, or why not."""

    digest: Digest
    data: bytes = b""
    error: DistbuildError | None = None


class StorageFrontend:
    def __init__(self, stores: ContentStores, max_blob_size: int | None = None,
                 instance: str = ""):
        self.stores = stores
        self.instance = instance
        self.max_blob_size = (stores.cas().max_size if max_blob_size is None
                              else max_blob_size)
        self._written: dict[DigestFunction, int] = {}
        self._gc_lock = threading.Lock()
        self._uploads: dict[str, int] = {}  # resource name -> bytes received, while open
        self._uploads_lock = threading.Lock()

    # -- checks -----------------------------------------------------------------------------
    def check_instance(self, name: str) -> None:
        if name != self.instance:
            raise InvalidRequest(f"unknown instance {name!r}: this server serves "
                                 f"{self.instance!r} only")

    def check_size(self, digest: Digest) -> None:
        if digest.size > self.max_blob_size:
            raise BlobTooLarge(f"blob {digest} is larger than this store's cap of "
                               f"{self.max_blob_size} bytes")

    def cas(self, function: DigestFunction) -> LocalCAS:
        return self.stores.cas(function)

    # -- CAS --------------------------------------------------------------------------------
    def find_missing(self, function: DigestFunction, digests: Iterable[Digest]) -> list[Digest]:
        # The empty blob is always there (REAPI), stored or not.
        return [d for d in self.cas(function).find_missing(digests) if d.size]

    def put_batch(self, function: DigestFunction, items: list[tuple[Digest, bytes]]) -> None:
        """Verify every blob, then store them all (or none)."""
        for claimed, data in items:
            self.check_size(claimed)
            actual = digest_bytes(data, function)
            if actual != claimed:
                raise CorruptBlob(f"uploaded bytes hash to {actual} ({function}), not the "
                                  f"claimed {claimed}; nothing from this batch was stored")
        cas = self.cas(function)
        for _, data in items:
            cas.put_bytes(data)
        self._account(function, sum(len(d) for _, d in items))

    def read_batch(self, function: DigestFunction, digests: Iterable[Digest]) -> list[ReadItem]:
        cas = self.cas(function)
        out = []
        for digest in digests:
            try:
                out.append(ReadItem(digest, cas.get_bytes(digest) if digest.size else b""))
            except DistbuildError as e:  # per-blob status, never a failed batch
                out.append(ReadItem(digest, error=e))
        return out

    def read(self, function: DigestFunction, digest: Digest, offset: int = 0,
             limit: int = 0) -> Iterator[bytes]:
        """A blob's bytes from ``offset``, at most ``limit`` (0 = all), verified as read."""
        if offset < 0 or limit < 0 or offset > digest.size:
            raise InvalidRequest(f"read offset {offset} / limit {limit} out of range for "
                                 f"blob {digest}")
        end = digest.size if not limit else min(digest.size, offset + limit)
        if digest.size == 0:
            return
        pos = 0
        for chunk in self.cas(function).open_verified(digest):
            lo, hi = max(offset - pos, 0), min(len(chunk), end - pos)
            pos += len(chunk)
            if lo < hi:
                yield chunk[lo:hi]

    def put_stream(self, function: DigestFunction, claimed: Digest, name: str,
                   chunks: Iterable[bytes]) -> Digest:
        """Store an upload, hashing as it arrives; refused (nothing stored) if its bytes do
        not match ``claimed``. ``name`` identifies the upload for ``upload_status``."""
        self.check_size(claimed)
        with self._uploads_lock:
            self._uploads[name] = 0
        try:
            reader = _ChunkReader(chunks, claimed.size, lambda n: self._progress(name, n))
            digest = self.cas(function).put_stream(reader, expected=claimed)
        finally:
            with self._uploads_lock:
                self._uploads.pop(name, None)
        self._account(function, digest.size)
        return digest

    def _progress(self, name: str, received: int) -> None:
        with self._uploads_lock:
            self._uploads[name] = received

    def upload_status(self, function: DigestFunction, digest: Digest,
                      name: str) -> tuple[int, bool]:
        """(bytes committed, complete) of an upload; BlobNotFound when there is none."""
        if digest.size == 0 or self.cas(function).contains(digest):
            return digest.size, True
        with self._uploads_lock:
            received = self._uploads.get(name)
        if received is None:
            raise BlobNotFound(f"no upload {name!r} in progress (interrupted uploads are "
                               "not kept: start again from offset 0)")
        return received, False

    def get_tree(self, function: DigestFunction, root: Digest, page_size: int = 0,
                 page_token: str = "") -> Iterator[tuple[list[bytes], str]]:
        """Pages of (encoded Directory blobs, next page token) below ``root``, breadth first.

        Directories missing from the CAS are left out (with what is below them); a missing
        root is BlobNotFound. The token is the position of the page's first directory.
        """
        cas = self.cas(function)
        if root.size and not cas.contains(root):
            raise BlobNotFound(f"tree root {root} is not in the CAS")
        try:
            start = int(page_token or 0)
        except ValueError:
            raise InvalidRequest(f"invalid page token {page_token!r}") from None
        order = self._walk(cas, root)
        limit = min(page_size or TREE_PAGE, TREE_PAGE)
        pos = start
        while True:
            page: list[bytes] = []
            size = 0
            while pos < len(order) and len(page) < limit and size < TREE_PAGE_BYTES:
                page.append(order[pos])
                size += len(order[pos])
                pos += 1
            more = pos < len(order)
            yield page, (str(pos) if more else "")
            if not more:
                return

    @staticmethod
    def _walk(cas: LocalCAS, root: Digest) -> list[bytes]:
        order: list[bytes] = []
        seen: set[Digest] = set()
        level = [root]
        while level and len(order) < TREE_MAX:
            nxt: list[Digest] = []
            for digest in level:
                if digest in seen:
                    continue
                seen.add(digest)
                try:
                    data = cas.get_bytes(digest) if digest.size else b""
                except (BlobNotFound, CorruptBlob):
                    continue
                order.append(data)
                nxt += [n.digest for n in decode_directory(data).directories]
            level = nxt
        return order

    def list(self, function: DigestFunction, limit: int = 0) -> list[BlobInfo]:
        blobs = sorted(self.cas(function).list(), key=lambda b: -b.last_used)
        return blobs[:limit] if limit else blobs

    # -- action cache -----------------------------------------------------------------------
    def get_result(self, function: DigestFunction, action: Digest) -> ActionResult:
        result = self.stores.ac(function).get(action)
        if result is None:
            raise BlobNotFound(f"no action cache entry for {action} ({function})")
        return result

    def put_result(self, function: DigestFunction, action: Digest, result: ActionResult) -> None:
        self.stores.ac(function).put(action, result)

    def store_blob(self, function: DigestFunction, data: bytes) -> Digest:
        """Store one blob we made ourselves (e.g. an inlined stdout turned into a blob)."""
        digest = self.cas(function).put_bytes(data)
        self._account(function, len(data))
        return digest

    # -- eviction ---------------------------------------------------------------------------
    def _account(self, function: DigestFunction, nbytes: int) -> None:
        # Evict in the background once a tenth of the cap has been written since the last gc.
        cas = self.cas(function)
        written = self._written.get(function, 0) + nbytes
        self._written[function] = written
        if written > cas.max_size // 10 and self._gc_lock.acquire(blocking=False):
            self._written[function] = 0

            def run() -> None:
                try:
                    cas.gc()
                finally:
                    self._gc_lock.release()

            threading.Thread(target=run, name="cas-gc", daemon=True).start()


class _ChunkReader:
    """A read()-able view of a chunk iterator that refuses more bytes than claimed."""

    def __init__(self, chunks: Iterable[bytes], limit: int,
                 progress: Callable[[int], None] | None = None):
        self._it = iter(chunks)
        self._buf = b""
        self._seen = 0
        self._limit = limit
        self._progress = progress

    def read(self, n: int = -1) -> bytes:
        while not self._buf:
            chunk = next(self._it, None)
            if chunk is None:
                return b""
            self._seen += len(chunk)
            if self._seen > self._limit:
                raise CorruptBlob(f"upload sends more than the claimed {self._limit} bytes")
            if self._progress is not None:
                self._progress(self._seen)
            self._buf = chunk
        out, self._buf = (self._buf, b"") if n < 0 else (self._buf[:n], self._buf[n:])
        return out
