"""gRPC servicers for the CAS, ByteStream and action cache, over a LocalCAS.

Thin: unpack, call ``CasFrontend`` (plain logic: validation, caps, verification), pack.
Every upload is verified against its claimed digest before anything is stored; a batch with one
bad blob stores nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator

import grpc

from distbuild._proto.v1 import remote_execution_pb2 as re_pb
from distbuild._proto.v1 import remote_execution_pb2_grpc as re_grpc
from distbuild.cas.action_cache import ActionCache
from distbuild.cas.digest import Digest, digest_bytes
from distbuild.cas.store import BlobInfo, LocalCAS
from distbuild.errors import BlobNotFound, BlobTooLarge, CorruptBlob, InvalidDigest, InvalidRequest
from distbuild.rpc import convert
from distbuild.rpc.server import STREAM_CHUNK
from distbuild.rpc.status import guarded, status_pair

log = logging.getLogger(__name__)


class CasFrontend:
    """Validation and caps in front of a LocalCAS (shared by the servicers)."""

    def __init__(self, cas: LocalCAS, max_blob_size: int | None = None):
        self.cas = cas
        self.max_blob_size = cas.max_size if max_blob_size is None else max_blob_size
        self._written = 0
        self._gc_lock = threading.Lock()

    def check_size(self, digest: Digest) -> None:
        if digest.size > self.max_blob_size:
            raise BlobTooLarge(f"blob {digest} is larger than this store's cap of "
                               f"{self.max_blob_size} bytes")

    def put_batch(self, items: list[tuple[Digest, bytes]]) -> None:
        """Verify every blob, then store them all (or none)."""
        for claimed, data in items:
            self.check_size(claimed)
            actual = digest_bytes(data)
            if actual != claimed:
                raise CorruptBlob(f"uploaded bytes hash to {actual}, not the claimed {claimed}; "
                                  "nothing from this batch was stored")
        for _, data in items:
            self.cas.put_bytes(data)
        self._account(sum(len(d) for _, d in items))

    def put_stream(self, claimed: Digest, chunks: Iterable[bytes]) -> Digest:
        self.check_size(claimed)
        digest = self.cas.put_stream(_ChunkReader(chunks, claimed.size), expected=claimed)
        self._account(digest.size)
        return digest

    def _account(self, nbytes: int) -> None:
        # Evict in the background once a tenth of the cap has been written since the last gc.
        self._written += nbytes
        if self._written > self.cas.max_size // 10 and self._gc_lock.acquire(blocking=False):
            self._written = 0

            def run() -> None:
                try:
                    self.cas.gc()
                finally:
                    self._gc_lock.release()

            threading.Thread(target=run, name="cas-gc", daemon=True).start()

    def list(self, limit: int = 0) -> list[BlobInfo]:
        blobs = sorted(self.cas.list(), key=lambda b: -b.last_used)
        return blobs[:limit] if limit else blobs


class _ChunkReader:
    """A read()-able view of a chunk iterator that refuses more bytes than claimed."""

    def __init__(self, chunks: Iterable[bytes], limit: int):
        self._it = iter(chunks)
        self._buf = b""
        self._seen = 0
        self._limit = limit

    def read(self, n: int = -1) -> bytes:
        while not self._buf:
            chunk = next(self._it, None)
            if chunk is None:
                return b""
            self._seen += len(chunk)
            if self._seen > self._limit:
                raise CorruptBlob(f"upload sends more than the claimed {self._limit} bytes")
            self._buf = chunk
        out, self._buf = (self._buf, b"") if n < 0 else (self._buf[:n], self._buf[n:])
        return out


def parse_resource(name: str) -> Digest:
    """``.../blobs/[blake3/]{hash}/{size}`` -> Digest."""
    parts = name.split("/")
    if "blobs" not in parts:
        raise InvalidRequest(f"resource name {name!r} has no 'blobs/<hash>/<size>' part")
    rest = parts[parts.index("blobs") + 1:]
    if rest and rest[0] == "blake3":
        rest = rest[1:]
    if len(rest) < 2 or not rest[1].isdigit():
        raise InvalidDigest(f"resource name {name!r}: expected blobs/blake3/<hash>/<size>")
    return Digest(rest[0], int(rest[1]))


def _check_function(value: int) -> None:
    if value not in (re_pb.DIGEST_FUNCTION_UNKNOWN, re_pb.BLAKE3):
        raise InvalidRequest(f"digest function {value} is not supported; this server uses BLAKE3")


class CasServicer(re_grpc.ContentAddressableStorageServicer):
    def __init__(self, frontend: CasFrontend):
        self.f = frontend

    @guarded
    def FindMissingBlobs(self, request: re_pb.FindMissingBlobsRequest,
                         context: grpc.ServicerContext) -> re_pb.FindMissingBlobsResponse:
        _check_function(request.digest_function)
        digests = [convert.digest_from_proto(d) for d in request.blob_digests]
        missing = self.f.cas.find_missing(digests)
        return re_pb.FindMissingBlobsResponse(
            missing_blob_digests=[convert.digest_to_proto(d) for d in missing])

    @guarded
    def BatchUpdateBlobs(self, request: re_pb.BatchUpdateBlobsRequest,
                         context: grpc.ServicerContext) -> re_pb.BatchUpdateBlobsResponse:
        _check_function(request.digest_function)
        items = [(convert.digest_from_proto(r.digest), r.data) for r in request.requests]
        self.f.put_batch(items)
        return re_pb.BatchUpdateBlobsResponse(responses=[
            re_pb.BatchUpdateBlobsResponse.Response(digest=r.digest, status=re_pb.Status())
            for r in request.requests])

    @guarded
    def BatchReadBlobs(self, request: re_pb.BatchReadBlobsRequest,
                       context: grpc.ServicerContext) -> re_pb.BatchReadBlobsResponse:
        _check_function(request.digest_function)
        out = re_pb.BatchReadBlobsResponse()
        for d in request.digests:
            digest = convert.digest_from_proto(d)
            resp = out.responses.add(digest=d)
            try:
                resp.data = self.f.cas.get_bytes(digest)
            except (CorruptBlob, FileNotFoundError) as e:
                resp.status.code, resp.status.message = grpc.StatusCode.NOT_FOUND.value[0], str(e)
            except Exception as e:  # noqa: BLE001 - per-blob status, never a failed batch
                resp.status.code, resp.status.message = status_pair(e)
        return out

    @guarded
    def ListBlobs(self, request: re_pb.ListBlobsRequest,
                  context: grpc.ServicerContext) -> re_pb.ListBlobsResponse:
        blobs = self.f.list(request.limit)
        return re_pb.ListBlobsResponse(
            blobs=[re_pb.BlobInfo(digest=convert.digest_to_proto(b.digest), last_used=b.last_used)
                   for b in blobs],
            total_bytes=sum(b.digest.size for b in blobs))


class ByteStreamServicer(re_grpc.ByteStreamServicer):
    def __init__(self, frontend: CasFrontend):
        self.f = frontend

    @guarded
    def Read(self, request: re_pb.ReadRequest,
             context: grpc.ServicerContext) -> Iterator[re_pb.ReadResponse]:
        digest = parse_resource(request.resource_name)
        pos, end = 0, (request.read_offset + request.read_limit if request.read_limit else None)
        pending = b""
        for chunk in self.f.cas.open_verified(digest):
            lo, hi = max(request.read_offset - pos, 0), len(chunk)
            if end is not None:
                hi = min(hi, end - pos)
            pos += len(chunk)
            if lo < hi:
                pending += chunk[lo:hi]
            while len(pending) >= STREAM_CHUNK:
                yield re_pb.ReadResponse(data=pending[:STREAM_CHUNK])
                pending = pending[STREAM_CHUNK:]
        if pending or digest.size == 0:
            yield re_pb.ReadResponse(data=pending)

    @guarded
    def Write(self, request_iterator: Iterator[re_pb.WriteRequest],
              context: grpc.ServicerContext) -> re_pb.WriteResponse:
        first = next(request_iterator, None)
        if first is None:
            raise InvalidRequest("empty Write stream")
        digest = parse_resource(first.resource_name)

        def chunks() -> Iterator[bytes]:
            yield first.data
            if first.finish_write:
                return
            for req in request_iterator:
                yield req.data
                if req.finish_write:
                    return

        stored = self.f.put_stream(digest, chunks())
        return re_pb.WriteResponse(committed_size=stored.size)


class ActionCacheServicer(re_grpc.ActionCacheServicer):
    def __init__(self, store: ActionCache):
        self.store = store

    @guarded
    def GetActionResult(self, request: re_pb.GetActionResultRequest,
                        context: grpc.ServicerContext) -> re_pb.ActionResult:
        _check_function(request.digest_function)
        result = self.store.get(convert.digest_from_proto(request.action_digest))
        if result is None:
            raise BlobNotFound(f"no action cache entry for {request.action_digest.hash}")
        return convert.result_to_proto(result)

    @guarded
    def UpdateActionResult(self, request: re_pb.UpdateActionResultRequest,
                           context: grpc.ServicerContext) -> re_pb.ActionResult:
        _check_function(request.digest_function)
        result = convert.result_from_proto(request.action_result)
        self.store.put(convert.digest_from_proto(request.action_digest), result)
        return request.action_result


def add_storage_services(server: grpc.Server, cas: LocalCAS, ac: ActionCache) -> CasFrontend:
    """Register the CAS, ByteStream and action cache servicers on ``server``."""
    frontend = CasFrontend(cas)
    re_grpc.add_ContentAddressableStorageServicer_to_server(CasServicer(frontend), server)
    re_grpc.add_ByteStreamServicer_to_server(ByteStreamServicer(frontend), server)
    re_grpc.add_ActionCacheServicer_to_server(ActionCacheServicer(ac), server)
    return frontend
