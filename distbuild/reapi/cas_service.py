"""gRPC servicers for REAPI's ContentAddressableStorage and ActionCache, google.bytestream's
ByteStream, and our CasAdmin listing, over a ``StorageFrontend``.

Thin: each method unpacks the request (digest function, digests, resource names), calls the
frontend, and packs the reply. Errors become status codes in ``distbuild/rpc/status.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import grpc

from distbuild._proto.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb
from distbuild._proto.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from distbuild._proto.google.bytestream import bytestream_pb2 as bs_pb
from distbuild._proto.google.bytestream import bytestream_pb2_grpc as bs_grpc
from distbuild._proto.v1 import scheduler_pb2 as pb
from distbuild._proto.v1 import scheduler_pb2_grpc as pb_grpc
from distbuild.cas.digest import BLAKE3, DigestFunction
from distbuild.cas.storage import ContentStores
from distbuild.errors import InvalidRequest
from distbuild.reapi import resources
from distbuild.reapi.convert import (
    digest_from_proto,
    digest_to_proto,
    function_from_proto,
    result_from_proto,
    result_to_proto,
)
from distbuild.reapi.storage import StorageFrontend
from distbuild.rpc.server import STREAM_CHUNK
from distbuild.rpc.status import guarded, status_of


class CasServicer(re_grpc.ContentAddressableStorageServicer):
    def __init__(self, frontend: StorageFrontend):
        self.f = frontend

    def _function(self, instance: str, value: int,
                  digests: Iterable[re_pb.Digest]) -> DigestFunction:
        self.f.check_instance(instance)
        return function_from_proto(value, (d.hash for d in digests))

    @guarded
    def FindMissingBlobs(self, request: re_pb.FindMissingBlobsRequest,
                         context: grpc.ServicerContext) -> re_pb.FindMissingBlobsResponse:
        function = self._function(request.instance_name, request.digest_function,
                                  request.blob_digests)
        missing = self.f.find_missing(function,
                                      [digest_from_proto(d) for d in request.blob_digests])
        return re_pb.FindMissingBlobsResponse(
            missing_blob_digests=[digest_to_proto(d) for d in missing])

    @guarded
    def BatchUpdateBlobs(self, request: re_pb.BatchUpdateBlobsRequest,
                         context: grpc.ServicerContext) -> re_pb.BatchUpdateBlobsResponse:
        function = self._function(request.instance_name, request.digest_function,
                                  [r.digest for r in request.requests])
        if any(r.compressor for r in request.requests):
            raise InvalidRequest("compressed batch uploads are not offered (see Capabilities)")
        self.f.put_batch(function, [(digest_from_proto(r.digest), r.data)
                                    for r in request.requests])
        return re_pb.BatchUpdateBlobsResponse(responses=[
            re_pb.BatchUpdateBlobsResponse.Response(digest=r.digest) for r in request.requests])

    @guarded
    def BatchReadBlobs(self, request: re_pb.BatchReadBlobsRequest,
                       context: grpc.ServicerContext) -> re_pb.BatchReadBlobsResponse:
        function = self._function(request.instance_name, request.digest_function,
                                  request.digests)
        out = re_pb.BatchReadBlobsResponse()
        for item in self.f.read_batch(function, [digest_from_proto(d) for d in request.digests]):
            resp = out.responses.add(digest=digest_to_proto(item.digest), data=item.data)
            if item.error is not None:
                resp.status.CopyFrom(status_of(item.error))
        return out

    @guarded
    def GetTree(self, request: re_pb.GetTreeRequest,
                context: grpc.ServicerContext) -> Iterator[re_pb.GetTreeResponse]:
        function = self._function(request.instance_name, request.digest_function,
                                  [request.root_digest])
        pages = self.f.get_tree(function, digest_from_proto(request.root_digest),
                                request.page_size, request.page_token)
        for blobs, token in pages:
            yield re_pb.GetTreeResponse(
                directories=[re_pb.Directory.FromString(b) for b in blobs], next_page_token=token)


class ByteStreamServicer(bs_grpc.ByteStreamServicer):
    def __init__(self, frontend: StorageFrontend):
        self.f = frontend

    @guarded
    def Read(self, request: bs_pb.ReadRequest,
             context: grpc.ServicerContext) -> Iterator[bs_pb.ReadResponse]:
        res = resources.parse(request.resource_name)
        self.f.check_instance(res.instance)
        pending = b""
        sent = False
        for chunk in self.f.read(res.function, res.digest, request.read_offset,
                                 request.read_limit):
            pending += chunk
            while len(pending) >= STREAM_CHUNK:
                yield bs_pb.ReadResponse(data=pending[:STREAM_CHUNK])
                pending, sent = pending[STREAM_CHUNK:], True
        if pending or not sent:
            yield bs_pb.ReadResponse(data=pending)

    @guarded
    def Write(self, request_iterator: Iterator[bs_pb.WriteRequest],
              context: grpc.ServicerContext) -> bs_pb.WriteResponse:
        first = next(request_iterator, None)
        if first is None:
            raise InvalidRequest("empty Write stream")
        res = resources.parse(first.resource_name, write=True)
        self.f.check_instance(res.instance)
        if first.write_offset != 0:
            raise InvalidRequest("this server does not resume uploads: write from offset 0")
        if res.digest.size == 0 or self.f.cas(res.function).contains(res.digest):
            # Already stored (REAPI: answer at once with the full size, read no more).
            return bs_pb.WriteResponse(committed_size=res.digest.size)

        def chunks() -> Iterator[bytes]:
            offset, req = 0, first
            while True:
                if req.write_offset != offset:
                    raise InvalidRequest(f"write_offset {req.write_offset} where {offset} "
                                         "bytes were received")
                yield req.data
                offset += len(req.data)
                if req.finish_write:
                    return
                nxt = next(request_iterator, None)
                if nxt is None:
                    raise InvalidRequest(f"upload of {res.digest} ended after {offset} bytes "
                                         "without finish_write; nothing was stored")
                req = nxt

        stored = self.f.put_stream(res.function, res.digest, first.resource_name, chunks())
        return bs_pb.WriteResponse(committed_size=stored.size)

    @guarded
    def QueryWriteStatus(self, request: bs_pb.QueryWriteStatusRequest,
                         context: grpc.ServicerContext) -> bs_pb.QueryWriteStatusResponse:
        res = resources.parse(request.resource_name, write=True)
        self.f.check_instance(res.instance)
        committed, complete = self.f.upload_status(res.function, res.digest,
                                                   request.resource_name)
        return bs_pb.QueryWriteStatusResponse(committed_size=committed, complete=complete)


class ActionCacheServicer(re_grpc.ActionCacheServicer):
    def __init__(self, frontend: StorageFrontend):
        self.f = frontend

    @guarded
    def GetActionResult(self, request: re_pb.GetActionResultRequest,
                        context: grpc.ServicerContext) -> re_pb.ActionResult:
        self.f.check_instance(request.instance_name)
        function = function_from_proto(request.digest_function, [request.action_digest.hash])
        return result_to_proto(self.f.get_result(function,
                                                 digest_from_proto(request.action_digest)))

    @guarded
    def UpdateActionResult(self, request: re_pb.UpdateActionResultRequest,
                           context: grpc.ServicerContext) -> re_pb.ActionResult:
        self.f.check_instance(request.instance_name)
        function = function_from_proto(request.digest_function, [request.action_digest.hash])
        msg = re_pb.ActionResult()
        msg.CopyFrom(request.action_result)
        # Inlined output is kept as blobs (clients should not send it; some do).
        for raw, field in (("stdout_raw", "stdout_digest"), ("stderr_raw", "stderr_digest")):
            data = getattr(msg, raw)
            if data and not msg.HasField(field):
                getattr(msg, field).CopyFrom(digest_to_proto(self.f.store_blob(function, data)))
            msg.ClearField(raw)  # type: ignore[arg-type]
        result = result_from_proto(msg)
        self.f.put_result(function, digest_from_proto(request.action_digest), result)
        return result_to_proto(result)


class CasAdminServicer(pb_grpc.CasAdminServicer):
    def __init__(self, frontend: StorageFrontend):
        self.f = frontend

    @guarded
    def ListBlobs(self, request: pb.ListBlobsRequest,
                  context: grpc.ServicerContext) -> pb.ListBlobsResponse:
        function = (BLAKE3 if request.digest_function == re_pb.DigestFunction.UNKNOWN
                    else function_from_proto(request.digest_function))
        blobs = self.f.list(function, request.limit)
        return pb.ListBlobsResponse(
            blobs=[pb.BlobInfo(digest=digest_to_proto(b.digest), last_used=b.last_used)
                   for b in blobs],
            total_bytes=sum(b.digest.size for b in blobs))


def add_storage_services(server: grpc.Server, stores: ContentStores,
                         max_blob_size: int | None = None) -> StorageFrontend:
    """Register the CAS, ByteStream, action cache and CasAdmin servicers on ``server``."""
    frontend = StorageFrontend(stores, max_blob_size)
    re_grpc.add_ContentAddressableStorageServicer_to_server(CasServicer(frontend), server)
    bs_grpc.add_ByteStreamServicer_to_server(ByteStreamServicer(frontend), server)
    re_grpc.add_ActionCacheServicer_to_server(ActionCacheServicer(frontend), server)
    pb_grpc.add_CasAdminServicer_to_server(CasAdminServicer(frontend), server)
    return frontend
