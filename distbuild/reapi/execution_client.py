"""ExecutionClient: REAPI's Execution service (Execute, WaitExecution) as plain updates.

Each ``google.longrunning.Operation`` of the stream becomes an ``Execution``: its name (our
scheduler's job id), the stage, and once done the result, whether it came from the cache, and
a typed failure (the error's class name and message, from ``ExecuteResponse.status``). The
client id (the scheduler's fairness key) travels in REAPI's standard RequestMetadata header
as ``correlated_invocations_id``.

    client = ExecutionClient(channel, function=BLAKE3, client_id="me@host")
    final = client.run(action_digest, timeout=600)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from google.longrunning import operations_pb2

from distbuild import __version__
from distbuild._proto.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb
from distbuild._proto.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from distbuild.actions import ActionResult
from distbuild.cas.digest import BLAKE3, Digest, DigestFunction
from distbuild.errors import JobFailed, Unavailable, Unresponsive
from distbuild.reapi import convert
from distbuild.rpc.status import error_from_rpc, failure_from_status
from distbuild.rpc.streams import first_within

METADATA_KEY = "build.bazel.remote.execution.v2.requestmetadata-bin"


@dataclass(frozen=True)
class Execution:
    """One state of an execution (an Operation)."""

    name: str  # the Operation name: our scheduler's job id
    stage: str  # CACHE_CHECK | QUEUED | EXECUTING | COMPLETED
    done: bool
    action_digest: Digest | None = None
    result: ActionResult | None = None  # when done and the action ran (any exit code)
    cached: bool = False
    error_kind: str = ""  # when done without running to its end: the error's class name
    error: str = ""
    worker: str = ""

    @property
    def ok(self) -> bool:
        return self.done and not self.error_kind and self.result is not None


def request_metadata(client_id: str) -> tuple[tuple[str, bytes], ...]:
    """REAPI's RequestMetadata header naming us and the client id."""
    md = re_pb.RequestMetadata(
        tool_details=re_pb.ToolDetails(tool_name="cargo-distbuild", tool_version=__version__),
        correlated_invocations_id=client_id)
    return ((METADATA_KEY, md.SerializeToString()),)


def execution_from_operation(op: operations_pb2.Operation) -> Execution:
    meta = re_pb.ExecuteOperationMetadata()
    if op.HasField("metadata"):
        op.metadata.Unpack(meta)
    stage = re_pb.ExecutionStage.Value.Name(meta.stage)
    action = convert.optional_digest(meta.action_digest)
    worker = meta.partial_execution_metadata.worker
    if not op.done:
        return Execution(op.name, stage, False, action, worker=worker)
    if op.HasField("error"):  # servers must not, some do
        kind, message = failure_from_status(op.error)
        return Execution(op.name, "COMPLETED", True, action, error_kind=kind, error=message,
                         worker=worker)
    resp = re_pb.ExecuteResponse()
    op.response.Unpack(resp)
    kind, message = failure_from_status(resp.status)
    result = convert.result_from_proto(resp.result) if resp.HasField("result") else None
    if not kind and result is None:
        kind, message = JobFailed.__name__, "the execution ended without a result"
    return Execution(op.name, "COMPLETED", True, action, result, resp.cached_result, kind,
                     message or resp.message, result.metadata.worker if result else worker)


class ExecutionClient:
    def __init__(self, channel: grpc.Channel, function: DigestFunction = BLAKE3,
                 instance: str = "", client_id: str = "", where: str = "execution service",
                 first_reply_s: float = 0.0):
        self.function = function
        # Execute and WaitExecution answer with the Operation's state at once: a stream that
        # stays silent longer than this is given up as Unresponsive (0: no bound).
        self.first_reply_s = first_reply_s
        self.instance = instance
        self.where = where
        self._fn = convert.function_to_proto(function)
        self._metadata = request_metadata(client_id) if client_id else ()
        self._stub = re_grpc.ExecutionStub(channel)

    def execute(self, action_digest: Digest, skip_cache: bool = False,
                timeout: float | None = None) -> Iterator[Execution]:
        """Submit and yield every update until the execution is done."""
        req = re_pb.ExecuteRequest(instance_name=self.instance, skip_cache_lookup=skip_cache,
                                   action_digest=convert.digest_to_proto(action_digest),
                                   digest_function=self._fn)
        yield from self._stream(self._stub.Execute, req, timeout)

    def wait_execution(self, name: str, timeout: float | None = None) -> Iterator[Execution]:
        """Follow an existing execution by its Operation name."""
        yield from self._stream(self._stub.WaitExecution, re_pb.WaitExecutionRequest(name=name),
                                timeout)

    def submit(self, action_digest: Digest, skip_cache: bool = False,
               timeout: float = 30.0) -> Execution:
        """Queue an execution and return its first state at once (it goes on without us)."""
        req = re_pb.ExecuteRequest(instance_name=self.instance, skip_cache_lookup=skip_cache,
                                   action_digest=convert.digest_to_proto(action_digest),
                                   digest_function=self._fn)
        stream = self._stub.Execute(req, timeout=timeout, metadata=self._metadata)
        try:
            return execution_from_operation(next(iter(stream)))
        except grpc.RpcError as e:
            raise error_from_rpc(e, self.where) from e
        finally:
            stream.cancel()

    def run(self, action_digest: Digest, skip_cache: bool = False, timeout: float = 3600.0,
            reconnect_for: float = 30.0) -> Execution:
        """Execute and follow to the end; if the stream breaks once the execution exists (a
        server restart), rejoin it with WaitExecution for up to ``reconnect_for`` seconds."""
        last: Execution | None = None
        try:
            for update in self.execute(action_digest, skip_cache, timeout):
                last = update
        except Unresponsive:
            raise  # frozen or cut off, not restarting: waiting for it is not worth it
        except Unavailable:
            if last is None:
                raise
        if last is not None and last.done:
            return last
        if last is None:
            raise JobFailed(f"{self.where} ended the Execute stream without an Operation")
        return self.wait(last.name, timeout, reconnect_for)

    def wait(self, name: str, timeout: float = 3600.0, reconnect_for: float = 30.0) -> Execution:
        """Follow an execution to its end, reconnecting while the server restarts."""
        deadline = time.monotonic() + timeout
        down_since: float | None = None
        last: Execution | None = None
        while time.monotonic() < deadline:
            try:
                for update in self.wait_execution(name, deadline - time.monotonic()):
                    last, down_since = update, None
                    if update.done:
                        return update
            except Unresponsive:
                raise  # (see run)
            except Unavailable:
                now = time.monotonic()
                down_since = down_since or now
                if now - down_since > reconnect_for:
                    raise
                time.sleep(0.2)
        raise Unavailable(f"execution {name} not done after {timeout:.0f}s "
                          f"(last stage {last.stage if last else 'unknown'})")

    def _stream(self, method: Callable[..., Any], req: Any,
                timeout: float | None) -> Iterator[Execution]:
        try:
            call = method(req, timeout=timeout, metadata=self._metadata)
            if self.first_reply_s:
                call = first_within(call, self.first_reply_s, self.where)
            for op in call:
                yield execution_from_operation(op)
        except grpc.RpcError as e:
            raise error_from_rpc(e, self.where) from e
