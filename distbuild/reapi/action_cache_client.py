"""RemoteActionCache: REAPI's ActionCache service as a small client (ours or any server's).

``get`` returns the ActionResult or None on a miss; ``put`` records one. The digest function
and the instance name are parameters, as for ``RemoteCAS``.

    ac = RemoteActionCache(channel, function=BLAKE3)
    result = ac.get(action_digest)
"""

from __future__ import annotations

import grpc

from distbuild._proto.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb
from distbuild._proto.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from distbuild.actions import ActionResult
from distbuild.cas.digest import BLAKE3, Digest, DigestFunction
from distbuild.reapi import convert
from distbuild.rpc.status import error_from_rpc


class RemoteActionCache:
    def __init__(self, channel: grpc.Channel, function: DigestFunction = BLAKE3,
                 instance: str = "", timeout: float = 30.0, where: str = "action cache"):
        self.function = function
        self.instance = instance
        self.timeout = timeout
        self.where = where  # named in errors, e.g. "action cache at host:port"
        self._fn = convert.function_to_proto(function)
        self._stub = re_grpc.ActionCacheStub(channel)

    def get(self, action_digest: Digest) -> ActionResult | None:
        """The cached result, or None when the server has none (NOT_FOUND)."""
        req = re_pb.GetActionResultRequest(
            instance_name=self.instance, digest_function=self._fn,
            action_digest=convert.digest_to_proto(action_digest))
        try:
            msg = self._stub.GetActionResult(req, timeout=self.timeout)
        except grpc.RpcError as e:
            if isinstance(e, grpc.Call) and e.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise error_from_rpc(e, self.where) from e
        return convert.result_from_proto(msg)

    def put(self, action_digest: Digest, result: ActionResult) -> None:
        """Record ``result``; the server refuses it unless its CAS holds every blob named."""
        req = re_pb.UpdateActionResultRequest(
            instance_name=self.instance, digest_function=self._fn,
            action_digest=convert.digest_to_proto(action_digest),
            action_result=convert.result_to_proto(result))
        try:
            self._stub.UpdateActionResult(req, timeout=self.timeout)
        except grpc.RpcError as e:
            raise error_from_rpc(e, self.where) from e
