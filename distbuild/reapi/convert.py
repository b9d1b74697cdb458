"""REAPI service messages <-> the plain dataclasses core code passes.

Digest functions: our ``DigestFunction`` <-> REAPI's enum, and the rule for requests that leave
the function unset (REAPI: infer it from the hash length; 64 hex digits mean SHA-256).
Results: ``ActionResult`` with our executor details packed into the standard
``ExecutedActionMetadata.auxiliary_metadata`` as a ``distbuild.v1.ExecutorMetadata``.
"""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf import timestamp_pb2

from distbuild._proto.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb
from distbuild._proto.v1 import scheduler_pb2 as pb
from distbuild.actions import ActionResult, ExecutionMetadata, OutputDirectory, OutputFile
from distbuild.cas.digest import BLAKE3, SHA256, DigestFunction
from distbuild.codec import (
    digest_from_proto,
    digest_to_proto,
    optional_digest,
    platform_from_proto,
    platform_to_proto,
)
from distbuild.errors import InvalidRequest

__all__ = [
    "digest_from_proto", "digest_to_proto", "function_from_proto", "function_to_proto",
    "optional_digest", "platform_from_proto", "platform_to_proto", "result_from_proto",
    "result_to_proto", "timestamp",
]

_TO_PROTO: dict[DigestFunction, re_pb.DigestFunction.Value] = {
    BLAKE3: re_pb.DigestFunction.BLAKE3, SHA256: re_pb.DigestFunction.SHA256}
_FROM_PROTO: dict[int, DigestFunction] = {int(v): k for k, v in _TO_PROTO.items()}
SUPPORTED = tuple(_TO_PROTO)  # what our servers accept, in the order they advertise it


def function_to_proto(function: DigestFunction) -> re_pb.DigestFunction.Value:
    return _TO_PROTO[function]


def function_from_proto(value: int, hashes: Iterable[str] = ()) -> DigestFunction:
    """The digest function a request names; unset means SHA-256 for 64-hex-digit hashes.

    REAPI lets clients of the older functions (SHA-256 among them) leave the field unset and
    the server infer it from the hash length; BLAKE3 has SHA-256's length, so it must always
    be named. Raises InvalidRequest for a function we do not serve.
    """
    known = _FROM_PROTO.get(value)
    if known is not None:
        return known
    if value == re_pb.DigestFunction.UNKNOWN:
        lengths = {len(h) for h in hashes}
        if lengths <= {64}:
            return SHA256
        raise InvalidRequest(f"cannot infer the digest function of hashes of {sorted(lengths)} "
                             f"hex digits: this server offers {_offered()}")
    name = re_pb.DigestFunction.Value.Name(value) if value in \
        re_pb.DigestFunction.Value.values() else str(value)
    raise InvalidRequest(f"digest function {name} is not supported: this server offers "
                         f"{_offered()}")


def _offered() -> str:
    return ", ".join(f.name for f in SUPPORTED)


# -- results ------------------------------------------------------------------------------------
def timestamp(t: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(t * 1e9))
    return ts


def metadata_to_proto(m: ExecutionMetadata) -> re_pb.ExecutedActionMetadata:
    msg = re_pb.ExecutedActionMetadata(
        worker=m.worker, queued_timestamp=timestamp(m.queued_at),
        worker_start_timestamp=timestamp(m.started_at),
        worker_completed_timestamp=timestamp(m.completed_at))
    if m.executor or m.toolchain or m.fuel_consumed:
        msg.auxiliary_metadata.add().Pack(pb.ExecutorMetadata(
            executor=m.executor, toolchain=m.toolchain, fuel_consumed=m.fuel_consumed))
    return msg


def metadata_from_proto(msg: re_pb.ExecutedActionMetadata) -> ExecutionMetadata:
    ours = pb.ExecutorMetadata()
    for aux in msg.auxiliary_metadata:
        if aux.Is(ours.DESCRIPTOR):
            aux.Unpack(ours)
    return ExecutionMetadata(
        worker=msg.worker, executor=ours.executor,
        queued_at=msg.queued_timestamp.ToNanoseconds() / 1e9,
        started_at=msg.worker_start_timestamp.ToNanoseconds() / 1e9,
        completed_at=msg.worker_completed_timestamp.ToNanoseconds() / 1e9,
        toolchain=ours.toolchain, fuel_consumed=ours.fuel_consumed,
    )


def result_to_proto(r: ActionResult) -> re_pb.ActionResult:
    msg = re_pb.ActionResult(
        output_files=[re_pb.OutputFile(path=o.path, digest=digest_to_proto(o.digest),
                                       is_executable=o.is_executable)
                      for o in r.output_files],
        output_directories=[re_pb.OutputDirectory(path=o.path,
                                                  tree_digest=digest_to_proto(o.tree_digest))
                            for o in r.output_directories],
        exit_code=r.exit_code, execution_metadata=metadata_to_proto(r.metadata),
    )
    if r.stdout_digest is not None:
        msg.stdout_digest.CopyFrom(digest_to_proto(r.stdout_digest))
    if r.stderr_digest is not None:
        msg.stderr_digest.CopyFrom(digest_to_proto(r.stderr_digest))
    return msg


def result_from_proto(msg: re_pb.ActionResult) -> ActionResult:
    """Convert; refuses what our dataclass cannot hold rather than dropping it silently."""
    if msg.output_symlinks or msg.output_file_symlinks or msg.output_directory_symlinks:
        raise InvalidRequest("action results with output symlinks are not supported by this "
                             "server")
    return ActionResult(
        output_files=tuple(OutputFile(o.path, digest_from_proto(o.digest), o.is_executable)
                           for o in msg.output_files),
        exit_code=msg.exit_code,
        stdout_digest=optional_digest(msg.stdout_digest),
        stderr_digest=optional_digest(msg.stderr_digest),
        metadata=metadata_from_proto(msg.execution_metadata),
        output_directories=tuple(OutputDirectory(o.path, digest_from_proto(o.tree_digest))
                                 for o in msg.output_directories),
    )
