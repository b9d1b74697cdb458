"""RemoteCAS: the BlobStore protocol over a scheduler's (or any server's) CAS service.

Uploads ask FindMissingBlobs first and send only what is missing: small blobs in batches under
the message limit, large ones through ByteStream. Downloads verify every blob's digest.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import blake3
import grpc

from distbuild._proto.v1 import remote_execution_pb2 as re_pb
from distbuild._proto.v1 import remote_execution_pb2_grpc as re_grpc
from distbuild.cas.digest import CHUNK, Digest, digest_bytes, digest_file
from distbuild.cas.store import BlobInfo, LocalCAS
from distbuild.config import Config
from distbuild.errors import BlobNotFound, CorruptBlob
from distbuild.fsutil import write_atomic
from distbuild.rpc import convert
from distbuild.rpc.server import BATCH_LIMIT, STREAM_CHUNK, make_channel
from distbuild.rpc.status import error_from_rpc

BlobSource = bytes | Path  # what to upload: in-memory bytes or a file's contents
_FIND_BATCH = 10_000


class RemoteCAS:
    """A BlobStore backed by a remote CAS service at ``addr``."""

    def __init__(self, addr: str, cfg: Config, channel: grpc.Channel | None = None,
                 timeout: float = 60.0):
        self.addr = addr
        self.root = f"the CAS at {addr}"  # for display, like LocalCAS.root
        self._channel = channel or make_channel(addr, cfg)
        self._owns_channel = channel is None
        self._cas = re_grpc.ContentAddressableStorageStub(self._channel)
        self._bs = re_grpc.ByteStreamStub(self._channel)
        self.timeout = timeout

    def close(self) -> None:
        if self._owns_channel:
            self._channel.close()

    def _call(self, what: str, fn: object, request: object) -> object:
        try:
            return fn(request, timeout=self.timeout)  # type: ignore[operator]
        except grpc.RpcError as e:
            raise error_from_rpc(e, f"CAS at {self.addr}") from e

    # -- presence ---------------------------------------------------------------------------
    def find_missing(self, digests: Iterable[Digest]) -> list[Digest]:
        unique = list(dict.fromkeys(d for d in digests if d.size > 0))
        missing: list[Digest] = []
        for i in range(0, len(unique), _FIND_BATCH):
            req = re_pb.FindMissingBlobsRequest(
                blob_digests=[convert.digest_to_proto(d) for d in unique[i:i + _FIND_BATCH]],
                digest_function=re_pb.BLAKE3)
            resp = self._call("find", self._cas.FindMissingBlobs, req)
            missing += [convert.digest_from_proto(d)
                        for d in resp.missing_blob_digests]  # type: ignore[attr-defined]
        return missing

    def contains(self, digest: Digest) -> bool:
        return digest.size == 0 or not self.find_missing([digest])

    # -- uploads ----------------------------------------------------------------------------
    def upload(self, blobs: dict[Digest, BlobSource]) -> int:
        """Upload those of ``blobs`` the server lacks; returns how many were sent."""
        missing = self.find_missing(blobs)
        batch: list[tuple[Digest, bytes]] = []
        size = 0
        for digest in missing:
            if digest.size > BATCH_LIMIT:
                self._write_stream(digest, blobs[digest])
                continue
            src = blobs[digest]
            data = src if isinstance(src, bytes) else Path(src).read_bytes()
            if size + len(data) > BATCH_LIMIT:
                self._batch_update(batch)
                batch, size = [], 0
            batch.append((digest, data))
            size += len(data)
        if batch:
            self._batch_update(batch)
        return len(missing)

    def _batch_update(self, items: list[tuple[Digest, bytes]]) -> None:
        req = re_pb.BatchUpdateBlobsRequest(digest_function=re_pb.BLAKE3, requests=[
            re_pb.BatchUpdateBlobsRequest.Request(digest=convert.digest_to_proto(d), data=b)
            for d, b in items])
        self._call("upload", self._cas.BatchUpdateBlobs, req)

    def _write_stream(self, digest: Digest, src: BlobSource) -> None:
        name = f"uploads/{uuid.uuid4()}/blobs/blake3/{digest.hash}/{digest.size}"

        def requests() -> Iterator[re_pb.WriteRequest]:
            if isinstance(src, bytes):
                chunks: Iterable[bytes] = (src[i:i + STREAM_CHUNK]
                                           for i in range(0, len(src), STREAM_CHUNK))
            else:
                chunks = _file_chunks(Path(src))
            offset = 0
            for chunk in chunks:
                yield re_pb.WriteRequest(resource_name=name if offset == 0 else "",
                                         write_offset=offset, data=chunk)
                offset += len(chunk)
            yield re_pb.WriteRequest(resource_name=name if offset == 0 else "",
                                     write_offset=offset, finish_write=True)

        try:
            self._bs.Write(requests(), timeout=max(self.timeout, digest.size / (8 << 20)))
        except grpc.RpcError as e:
            raise error_from_rpc(e, f"CAS at {self.addr}") from e

    def put_bytes(self, data: bytes) -> Digest:
        digest = digest_bytes(data)
        self.upload({digest: data})
        return digest

    def put_file(self, path: str | Path) -> Digest:
        digest = digest_file(path)
        self.upload({digest: Path(path)})
        return digest

    # -- downloads --------------------------------------------------------------------------
    def get_many(self, digests: Iterable[Digest]) -> Iterator[tuple[Digest, bytes]]:
        """Yield (digest, verified bytes) for each digest; BlobNotFound if one is absent."""
        pending: list[Digest] = []
        size = 0
        for digest in dict.fromkeys(digests):
            if digest.size == 0:
                yield digest, b""
            elif digest.size > BATCH_LIMIT:
                yield digest, b"".join(self._read_stream(digest))
            else:
                if size + digest.size > BATCH_LIMIT:
                    yield from self._batch_read(pending)
                    pending, size = [], 0
                pending.append(digest)
                size += digest.size
        if pending:
            yield from self._batch_read(pending)

    def _batch_read(self, digests: list[Digest]) -> Iterator[tuple[Digest, bytes]]:
        req = re_pb.BatchReadBlobsRequest(
            digests=[convert.digest_to_proto(d) for d in digests], digest_function=re_pb.BLAKE3)
        resp = self._call("download", self._cas.BatchReadBlobs, req)
        for r in resp.responses:  # type: ignore[attr-defined]
            digest = convert.digest_from_proto(r.digest)
            if r.status.code != 0:
                raise BlobNotFound(f"blob {digest} from {self.addr}: {r.status.message}")
            if digest_bytes(r.data) != digest:
                raise CorruptBlob(f"blob {digest} from {self.addr} does not match its digest")
            yield digest, r.data

    def _read_stream(self, digest: Digest) -> Iterator[bytes]:
        name = f"blobs/blake3/{digest.hash}/{digest.size}"
        hasher, size = blake3.blake3(), 0
        try:
            for resp in self._bs.Read(re_pb.ReadRequest(resource_name=name),
                                      timeout=max(self.timeout, digest.size / (8 << 20))):
                hasher.update(resp.data)
                size += len(resp.data)
                yield resp.data
        except grpc.RpcError as e:
            raise error_from_rpc(e, f"CAS at {self.addr}") from e
        if Digest(hasher.hexdigest(), size) != digest:
            raise CorruptBlob(f"blob {digest} from {self.addr} does not match its digest")

    def get_bytes(self, digest: Digest) -> bytes:
        for _, data in self.get_many([digest]):
            return data
        raise BlobNotFound(f"blob {digest} is not in the CAS at {self.addr}")

    def copy_to(self, digest: Digest, dest: str | Path, mode: int = 0o644) -> None:
        chunks = (self._read_stream(digest) if digest.size > BATCH_LIMIT
                  else [self.get_bytes(digest)])
        write_atomic(dest, chunks, mode)

    def fetch_into(self, digests: Iterable[Digest], cache: LocalCAS) -> int:
        """Copy into ``cache`` the blobs it lacks; returns how many were fetched."""
        missing = [d for d in cache.find_missing(dict.fromkeys(digests)) if d.size > 0]
        for digest in missing:
            if digest.size > BATCH_LIMIT:
                cache.put_stream(_IterReader(self._read_stream(digest)), expected=digest)
        small = [d for d in missing if d.size <= BATCH_LIMIT]
        for _, data in self.get_many(small):
            cache.put_bytes(data)
        return len(missing)

    def list(self, limit: int = 0) -> list[BlobInfo]:
        resp = self._call("list", self._cas.ListBlobs, re_pb.ListBlobsRequest(limit=limit))
        return [BlobInfo(convert.digest_from_proto(b.digest), b.last_used)
                for b in resp.blobs]  # type: ignore[attr-defined]


def _file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


class _IterReader:
    def __init__(self, it: Iterator[bytes]):
        self._it = it
        self._buf = b""

    def read(self, n: int = -1) -> bytes:
        if not self._buf:
            self._buf = next(self._it, b"")
        out, self._buf = (self._buf, b"") if n < 0 else (self._buf[:n], self._buf[n:])
        return out
