"""RemoteCAS: the BlobStore protocol over a REAPI ContentAddressableStorage and ByteStream.

Our scheduler's or any REAPI server's: the digest function and the instance name are
parameters (every request names the function; BLAKE3 must be named since it has SHA-256's
length). Uploads ask FindMissingBlobs first and send only what is missing: small blobs in
batches under the message limit, large ones through ByteStream. Downloads verify every blob's
digest.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import grpc

from distbuild._proto.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb
from distbuild._proto.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from distbuild._proto.google.bytestream import bytestream_pb2 as bs_pb
from distbuild._proto.google.bytestream import bytestream_pb2_grpc as bs_grpc
from distbuild._proto.v1 import scheduler_pb2 as pb
from distbuild._proto.v1 import scheduler_pb2_grpc as pb_grpc
from distbuild.cas.digest import BLAKE3, CHUNK, Digest, DigestFunction, digest_bytes, digest_file
from distbuild.cas.store import BlobInfo, LocalCAS
from distbuild.config import Config
from distbuild.errors import BlobNotFound, CorruptBlob
from distbuild.fsutil import write_atomic
from distbuild.reapi import convert, resources
from distbuild.rpc.server import BATCH_LIMIT, STREAM_CHUNK, make_channel
from distbuild.rpc.status import error_from_rpc

BlobSource = bytes | Path  # what to upload: in-memory bytes or a file's contents
_FIND_BATCH = 10_000


class RemoteCAS:
    """A BlobStore backed by the REAPI CAS at ``addr``, for one digest function."""

    def __init__(self, addr: str, cfg: Config, channel: grpc.Channel | None = None,
                 timeout: float = 60.0, function: DigestFunction = BLAKE3,
                 instance: str = "", batch_limit: int = BATCH_LIMIT):
        self.addr = addr
        self.root = f"the CAS at {addr}"  # for display, like LocalCAS.root
        self.function = function
        self.instance = instance
        self.batch_limit = batch_limit
        self._fn = convert.function_to_proto(function)
        self._channel = channel or make_channel(addr, cfg)
        self._owns_channel = channel is None
        self._cas = re_grpc.ContentAddressableStorageStub(self._channel)
        self._bs = bs_grpc.ByteStreamStub(self._channel)
        self._admin = pb_grpc.CasAdminStub(self._channel)
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
                instance_name=self.instance, digest_function=self._fn,
                blob_digests=[convert.digest_to_proto(d) for d in unique[i:i + _FIND_BATCH]])
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
            if digest.size > self.batch_limit:
                self._write_stream(digest, blobs[digest])
                continue
            src = blobs[digest]
            data = src if isinstance(src, bytes) else Path(src).read_bytes()
            if size + len(data) > self.batch_limit:
                self._batch_update(batch)
                batch, size = [], 0
            batch.append((digest, data))
            size += len(data)
        if batch:
            self._batch_update(batch)
        return len(missing)

    def _batch_update(self, items: list[tuple[Digest, bytes]]) -> None:
        req = re_pb.BatchUpdateBlobsRequest(
            instance_name=self.instance, digest_function=self._fn, requests=[
            re_pb.BatchUpdateBlobsRequest.Request(digest=convert.digest_to_proto(d), data=b)
            for d, b in items])
        self._call("upload", self._cas.BatchUpdateBlobs, req)

    def _write_stream(self, digest: Digest, src: BlobSource) -> None:
        name = resources.write_name(digest, str(uuid.uuid4()), self.function, self.instance)

        def requests() -> Iterator[bs_pb.WriteRequest]:
            if isinstance(src, bytes):
                chunks: Iterable[bytes] = (src[i:i + STREAM_CHUNK]
                                           for i in range(0, len(src), STREAM_CHUNK))
            else:
                chunks = _file_chunks(Path(src))
            offset = 0
            for chunk in chunks:
                yield bs_pb.WriteRequest(resource_name=name if offset == 0 else "",
                                         write_offset=offset, data=chunk)
                offset += len(chunk)
            yield bs_pb.WriteRequest(resource_name=name if offset == 0 else "",
                                     write_offset=offset, finish_write=True)

        try:
            self._bs.Write(requests(), timeout=max(self.timeout, digest.size / (8 << 20)))
        except grpc.RpcError as e:
            raise error_from_rpc(e, f"CAS at {self.addr}") from e

    def put_bytes(self, data: bytes) -> Digest:
        digest = digest_bytes(data, self.function)
        self.upload({digest: data})
        return digest

    def put_file(self, path: str | Path) -> Digest:
        digest = digest_file(path, self.function)
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
            elif digest.size > self.batch_limit:
                yield digest, b"".join(self._read_stream(digest))
            else:
                if size + digest.size > self.batch_limit:
                    yield from self._batch_read(pending)
                    pending, size = [], 0
                pending.append(digest)
                size += digest.size
        if pending:
            yield from self._batch_read(pending)

    def _batch_read(self, digests: list[Digest]) -> Iterator[tuple[Digest, bytes]]:
        req = re_pb.BatchReadBlobsRequest(
            instance_name=self.instance, digest_function=self._fn,
            digests=[convert.digest_to_proto(d) for d in digests])
        resp = self._call("download", self._cas.BatchReadBlobs, req)
        for r in resp.responses:  # type: ignore[attr-defined]
            digest = convert.digest_from_proto(r.digest)
            if r.status.code != 0:
                raise BlobNotFound(f"blob {digest} from {self.addr}: {r.status.message}")
            if digest_bytes(r.data, self.function) != digest:
                raise CorruptBlob(f"blob {digest} from {self.addr} does not match its digest")
            yield digest, r.data

    def _read_stream(self, digest: Digest) -> Iterator[bytes]:
        name = resources.read_name(digest, self.function, self.instance)
        hasher, size = self.function.hasher(), 0
        try:
            for resp in self._bs.Read(bs_pb.ReadRequest(resource_name=name),
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
        chunks = (self._read_stream(digest) if digest.size > self.batch_limit
                  else [self.get_bytes(digest)])
        write_atomic(dest, chunks, mode)

    def fetch_into(self, digests: Iterable[Digest], cache: LocalCAS) -> int:
        """Copy into ``cache`` the blobs it lacks; returns how many were fetched."""
        missing = [d for d in cache.find_missing(dict.fromkeys(digests)) if d.size > 0]
        for digest in missing:
            if digest.size > self.batch_limit:
                cache.put_stream(_IterReader(self._read_stream(digest)), expected=digest)
        small = [d for d in missing if d.size <= self.batch_limit]
        for _, data in self.get_many(small):
            cache.put_bytes(data)
        return len(missing)

    def list(self, limit: int = 0) -> list[BlobInfo]:
        resp = self._call("list", self._admin.ListBlobs,
                          pb.ListBlobsRequest(limit=limit, digest_function=self._fn))
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
