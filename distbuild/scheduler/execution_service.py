"""REAPI's Execution service over the scheduler: Execute and WaitExecution as streams of
``google.longrunning.Operation``.

An Operation's name is the job id. Its metadata is an ``ExecuteOperationMetadata`` with the
stage (QUEUED, EXECUTING, COMPLETED), the action digest and function, and the worker once one
runs it; the last Operation is done and its response an ``ExecuteResponse``: the result (any
exit code), whether it came from the action cache, and a status that is not OK when the
action could not be run to its end (timeout, cancellation, missing inputs, infrastructure),
with the failure's class in an ErrorInfo detail. Refusals before a job exists (a missing
action blob: FAILED_PRECONDITION with the missing blobs named; no suitable worker) end the call
with a gRPC status instead, as REAPI asks.

The fairness key of a submission is the client's RequestMetadata ``correlated_invocations_id``
(ours send their client id), else its ``tool_invocation_id`` (one Bazel build), else the peer's
host.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import grpc
from google.longrunning import operations_pb2

from distbuild._proto.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb
from distbuild._proto.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from distbuild.cas.digest import Digest
from distbuild.errors import InvalidRequest
from distbuild.reapi.convert import (
    digest_from_proto,
    digest_to_proto,
    function_from_proto,
    function_to_proto,
    result_to_proto,
    timestamp,
)
from distbuild.reapi.execution_client import METADATA_KEY
from distbuild.reapi.resources import blob_subject
from distbuild.rpc.status import failure_status, guarded
from distbuild.scheduler.core import Scheduler
from distbuild.scheduler.model import COMPLETED, QUEUED, RUNNING, Job

_WATCH_SLICE = 5.0  # a streaming call re-checks its context this often
_SETTLE = 0.2  # an intermediate state is reported once it has lasted this long
_STAGES = {QUEUED: re_pb.ExecutionStage.QUEUED, RUNNING: re_pb.ExecutionStage.EXECUTING}
_DIGEST = re.compile(r"\b([0-9a-f]{64})/(\d+)\b")


def operation_of(job: Job) -> operations_pb2.Operation:
    """The Operation that describes ``job`` now."""
    meta = re_pb.ExecuteOperationMetadata(
        stage=re_pb.ExecutionStage.COMPLETED if job.done else _STAGES.get(
            job.state, re_pb.ExecutionStage.UNKNOWN),
        action_digest=digest_to_proto(job.action_digest),
        digest_function=function_to_proto(job.digest_function))
    partial = meta.partial_execution_metadata
    partial.worker = job.worker_id
    partial.queued_timestamp.CopyFrom(timestamp(job.submitted_at))
    if job.started_at:
        partial.worker_start_timestamp.CopyFrom(timestamp(job.started_at))
    op = operations_pb2.Operation(name=job.job_id, done=job.done)
    op.metadata.Pack(meta)
    if job.done:
        op.response.Pack(_response(job))
    return op


def _response(job: Job) -> re_pb.ExecuteResponse:
    resp = re_pb.ExecuteResponse(cached_result=job.cached)
    if job.state == COMPLETED and job.result is not None:
        if job.result_blob:  # the worker's own message: no need to build it again
            resp.result.ParseFromString(job.result_blob)
        else:
            resp.result.CopyFrom(result_to_proto(job.result))
        return resp
    kind = job.error_kind or "JobFailed"
    subjects: tuple[str, ...] = ()
    if kind in ("BlobNotFound", "MissingBlobs"):
        # A missing input: REAPI's FAILED_PRECONDITION naming each blob, so the client can
        # upload it and try again.
        kind = "MissingBlobs"
        subjects = tuple(dict.fromkeys(blob_subject(Digest(h, int(n)), job.digest_function)
                                       for h, n in _DIGEST.findall(job.error)))
    resp.status.CopyFrom(failure_status(kind, job.error, subjects))
    return resp


def client_id(context: grpc.ServicerContext) -> str:
    """The fairness key of a call (see the module docstring)."""
    for key, value in context.invocation_metadata() or ():
        if key == METADATA_KEY:
            md = re_pb.RequestMetadata()
            try:
                md.ParseFromString(value if isinstance(value, bytes) else value.encode())
            except Exception:  # noqa: BLE001 - a bad header only loses the fairness key
                break
            if md.correlated_invocations_id or md.tool_invocation_id:
                return md.correlated_invocations_id or md.tool_invocation_id
    peer = context.peer() or ""
    return peer.rsplit(":", 1)[0] or "anonymous"


class ExecutionServicer(re_grpc.ExecutionServicer):
    def __init__(self, core: Scheduler, instance: str = ""):
        self.core = core
        self.instance = instance

    @guarded
    def Execute(self, request: re_pb.ExecuteRequest,
                context: grpc.ServicerContext) -> Iterator[operations_pb2.Operation]:
        if request.instance_name != self.instance:
            raise InvalidRequest(f"unknown instance {request.instance_name!r}")
        function = function_from_proto(request.digest_function, [request.action_digest.hash])
        job = self.core.submit(digest_from_proto(request.action_digest), client_id(context),
                               request.skip_cache_lookup, function)
        yield from self._follow(job, context)

    @guarded
    def WaitExecution(self, request: re_pb.WaitExecutionRequest,
                      context: grpc.ServicerContext) -> Iterator[operations_pb2.Operation]:
        yield from self._follow(self.core.get(request.name), context)

    def _follow(self, job: Job, context: grpc.ServicerContext
                ) -> Iterator[operations_pb2.Operation]:
        """The job now, then its changes until it is done.

        A change is sent once it has lasted ``_SETTLE`` seconds: a job that starts and
        finishes quickly produces two Operations (queued, done), not three.
        """
        yield operation_of(job)
        sent = job.version
        while not job.done and context.is_active():
            newer = self.core.watch(job.job_id, job.version, _WATCH_SLICE)
            if newer.version != job.version and not newer.done:
                newer = self.core.watch(job.job_id, newer.version, _SETTLE)
            if newer.version != sent:
                yield operation_of(newer)
                sent = newer.version
            job = newer
