"""Our generated REAPI code against the public definitions: method paths, field numbers and
enum values (transcribed from the Remote Execution API v2 specification, google.bytestream and
google.longrunning), checked on the descriptors and on the wire.

The wire checks encode messages with our generated classes and decode them with a minimal
protobuf wire reader written here, by field number only, so a renumbered field fails even if
our own code agrees with itself.
"""

from __future__ import annotations

from typing import Any

import pytest
from google.longrunning import operations_pb2
from google.protobuf.descriptor import Descriptor

from distbuild._proto.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb
from distbuild._proto.build.bazel.semver import semver_pb2
from distbuild._proto.google.bytestream import bytestream_pb2 as bs_pb

RE = "build.bazel.remote.execution.v2"

METHODS = {
    f"/{RE}.Execution/Execute", f"/{RE}.Execution/WaitExecution",
    f"/{RE}.ActionCache/GetActionResult", f"/{RE}.ActionCache/UpdateActionResult",
    f"/{RE}.ContentAddressableStorage/FindMissingBlobs",
    f"/{RE}.ContentAddressableStorage/BatchUpdateBlobs",
    f"/{RE}.ContentAddressableStorage/BatchReadBlobs",
    f"/{RE}.ContentAddressableStorage/GetTree",
    f"/{RE}.Capabilities/GetCapabilities",
    "/google.bytestream.ByteStream/Read", "/google.bytestream.ByteStream/Write",
    "/google.bytestream.ByteStream/QueryWriteStatus",
}

# message -> {field name: number}, from the public definitions.
FIELDS: dict[Any, dict[str, int]] = {
    re_pb.Action: {"command_digest": 1, "input_root_digest": 2, "timeout": 6,
                   "do_not_cache": 7, "salt": 9, "platform": 10},
    re_pb.Command: {"arguments": 1, "environment_variables": 2, "output_files": 3,
                    "output_directories": 4, "platform": 5, "working_directory": 6,
                    "output_paths": 7, "output_node_properties": 8,
                    "output_directory_format": 9},
    re_pb.Command.EnvironmentVariable: {"name": 1, "value": 2},
    re_pb.Platform: {"properties": 1},
    re_pb.Platform.Property: {"name": 1, "value": 2},
    re_pb.Directory: {"files": 1, "directories": 2, "symlinks": 3, "node_properties": 5},
    re_pb.NodeProperties: {"properties": 1, "mtime": 2, "unix_mode": 3},
    re_pb.FileNode: {"name": 1, "digest": 2, "is_executable": 4, "node_properties": 6},
    re_pb.DirectoryNode: {"name": 1, "digest": 2},
    re_pb.SymlinkNode: {"name": 1, "target": 2, "node_properties": 4},
    re_pb.Digest: {"hash": 1, "size_bytes": 2},
    re_pb.ExecutedActionMetadata: {
        "worker": 1, "queued_timestamp": 2, "worker_start_timestamp": 3,
        "worker_completed_timestamp": 4, "input_fetch_start_timestamp": 5,
        "input_fetch_completed_timestamp": 6, "execution_start_timestamp": 7,
        "execution_completed_timestamp": 8, "output_upload_start_timestamp": 9,
        "output_upload_completed_timestamp": 10, "auxiliary_metadata": 11,
        "virtual_execution_duration": 12},
    re_pb.ActionResult: {"output_files": 2, "output_directories": 3, "exit_code": 4,
                         "stdout_raw": 5, "stdout_digest": 6, "stderr_raw": 7,
                         "stderr_digest": 8, "execution_metadata": 9,
                         "output_file_symlinks": 10, "output_directory_symlinks": 11,
                         "output_symlinks": 12},
    re_pb.OutputFile: {"path": 1, "digest": 2, "is_executable": 4, "contents": 5,
                       "node_properties": 7},
    re_pb.Tree: {"root": 1, "children": 2},
    re_pb.OutputDirectory: {"path": 1, "tree_digest": 3, "is_topologically_sorted": 4,
                            "root_directory_digest": 5},
    re_pb.OutputSymlink: {"path": 1, "target": 2, "node_properties": 4},
    re_pb.ExecuteRequest: {"instance_name": 1, "skip_cache_lookup": 3, "action_digest": 6,
                           "execution_policy": 7, "results_cache_policy": 8,
                           "digest_function": 9, "inline_stdout": 10, "inline_stderr": 11,
                           "inline_output_files": 12},
    re_pb.ExecuteResponse: {"result": 1, "cached_result": 2, "status": 3, "server_logs": 4,
                            "message": 5},
    re_pb.ExecuteOperationMetadata: {"stage": 1, "action_digest": 2, "stdout_stream_name": 3,
                                     "stderr_stream_name": 4,
                                     "partial_execution_metadata": 5, "digest_function": 6},
    re_pb.WaitExecutionRequest: {"name": 1},
    re_pb.GetActionResultRequest: {"instance_name": 1, "action_digest": 2, "inline_stdout": 3,
                                   "inline_stderr": 4, "inline_output_files": 5,
                                   "digest_function": 6},
    re_pb.UpdateActionResultRequest: {"instance_name": 1, "action_digest": 2,
                                      "action_result": 3, "results_cache_policy": 4,
                                      "digest_function": 5},
    re_pb.FindMissingBlobsRequest: {"instance_name": 1, "blob_digests": 2,
                                    "digest_function": 3},
    re_pb.FindMissingBlobsResponse: {"missing_blob_digests": 2},
    re_pb.BatchUpdateBlobsRequest: {"instance_name": 1, "requests": 2, "digest_function": 5},
    re_pb.BatchUpdateBlobsRequest.Request: {"digest": 1, "data": 2, "compressor": 3},
    re_pb.BatchUpdateBlobsResponse: {"responses": 1},
    re_pb.BatchUpdateBlobsResponse.Response: {"digest": 1, "status": 2},
    re_pb.BatchReadBlobsRequest: {"instance_name": 1, "digests": 2,
                                  "acceptable_compressors": 3, "digest_function": 4},
    re_pb.BatchReadBlobsResponse.Response: {"digest": 1, "data": 2, "status": 3,
                                            "compressor": 4},
    re_pb.GetTreeRequest: {"instance_name": 1, "root_digest": 2, "page_size": 3,
                           "page_token": 4, "digest_function": 5},
    re_pb.GetTreeResponse: {"directories": 1, "next_page_token": 2},
    re_pb.GetCapabilitiesRequest: {"instance_name": 1},
    re_pb.ServerCapabilities: {"cache_capabilities": 1, "execution_capabilities": 2,
                               "deprecated_api_version": 3, "low_api_version": 4,
                               "high_api_version": 5},
    re_pb.CacheCapabilities: {"digest_functions": 1, "action_cache_update_capabilities": 2,
                              "cache_priority_capabilities": 3,
                              "max_batch_total_size_bytes": 4,
                              "symlink_absolute_path_strategy": 5, "supported_compressors": 6,
                              "supported_batch_update_compressors": 7},
    re_pb.ExecutionCapabilities: {"digest_function": 1, "exec_enabled": 2,
                                  "execution_priority_capabilities": 3,
                                  "supported_node_properties": 4, "digest_functions": 5},
    re_pb.RequestMetadata: {"tool_details": 1, "action_id": 2, "tool_invocation_id": 3,
                            "correlated_invocations_id": 4, "action_mnemonic": 5,
                            "target_id": 6, "configuration_id": 7},
    semver_pb2.SemVer: {"major": 1, "minor": 2, "patch": 3, "prerelease": 4},
    bs_pb.ReadRequest: {"resource_name": 1, "read_offset": 2, "read_limit": 3},
    bs_pb.ReadResponse: {"data": 10},
    bs_pb.WriteRequest: {"resource_name": 1, "write_offset": 2, "finish_write": 3, "data": 10},
    bs_pb.WriteResponse: {"committed_size": 1},
    bs_pb.QueryWriteStatusRequest: {"resource_name": 1},
    bs_pb.QueryWriteStatusResponse: {"committed_size": 1, "complete": 2},
}

ENUMS = {
    re_pb.DigestFunction.Value: {"UNKNOWN": 0, "SHA256": 1, "SHA1": 2, "MD5": 3, "VSO": 4,
                                 "SHA384": 5, "SHA512": 6, "MURMUR3": 7, "SHA256TREE": 8,
                                 "BLAKE3": 9},
    re_pb.ExecutionStage.Value: {"UNKNOWN": 0, "CACHE_CHECK": 1, "QUEUED": 2, "EXECUTING": 3,
                                 "COMPLETED": 4},
    re_pb.SymlinkAbsolutePathStrategy.Value: {"UNKNOWN": 0, "DISALLOWED": 1, "ALLOWED": 2},
    re_pb.Compressor.Value: {"IDENTITY": 0, "ZSTD": 1, "DEFLATE": 2, "BROTLI": 3},
}


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def wire_fields(data: bytes) -> dict[int, list[Any]]:
    """A protobuf message's fields by number (varints as ints, length-delimited as bytes)."""
    fields: dict[int, list[Any]] = {}
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, pos = _read_varint(data, pos)
        elif wire_type == 2:
            size, pos = _read_varint(data, pos)
            value, pos = data[pos:pos + size], pos + size
        elif wire_type == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire_type == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise AssertionError(f"unexpected wire type {wire_type}")
        fields.setdefault(number, []).append(value)
    return fields


def _services() -> set[str]:
    from distbuild._proto.build.bazel.remote.execution.v2 import remote_execution_pb2
    from distbuild._proto.google.bytestream import bytestream_pb2

    paths = set()
    for module in (remote_execution_pb2, bytestream_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            paths |= {f"/{service.full_name}/{m.name}" for m in service.methods}
    return paths


def test_method_paths() -> None:
    """Every REAPI and ByteStream method is served under its public path, and no other."""
    assert _services() == METHODS


def test_execute_streams_operations() -> None:
    """Execute and WaitExecution stream google.longrunning.Operation; GetTree and Read stream."""
    from distbuild._proto.build.bazel.remote.execution.v2 import remote_execution_pb2

    execution = remote_execution_pb2.DESCRIPTOR.services_by_name["Execution"]
    for method in execution.methods:
        assert method.output_type.full_name == "google.longrunning.Operation"
        assert method.server_streaming
    cas = remote_execution_pb2.DESCRIPTOR.services_by_name["ContentAddressableStorage"]
    assert cas.methods_by_name["GetTree"].server_streaming


@pytest.mark.parametrize("message", list(FIELDS), ids=lambda m: m.DESCRIPTOR.full_name)
def test_field_numbers(message: Any) -> None:
    """Each message has exactly the public fields, with the public numbers."""
    descriptor: Descriptor = message.DESCRIPTOR
    assert {f.name: f.number for f in descriptor.fields} == FIELDS[message]


@pytest.mark.parametrize("enum", list(ENUMS), ids=lambda e: e.DESCRIPTOR.full_name)
def test_enum_values(enum: Any) -> None:
    """Enum values match the public definitions."""
    assert {v.name: v.number for v in enum.DESCRIPTOR.values} == ENUMS[enum]


def test_full_names() -> None:
    """Packages and message names are the protocol's (they appear in method paths and in Any
    type URLs such as an Operation's metadata)."""
    assert re_pb.ExecuteOperationMetadata.DESCRIPTOR.full_name == f"{RE}.ExecuteOperationMetadata"
    assert re_pb.ExecuteResponse.DESCRIPTOR.full_name == f"{RE}.ExecuteResponse"
    assert bs_pb.WriteRequest.DESCRIPTOR.full_name == "google.bytestream.WriteRequest"
    assert semver_pb2.SemVer.DESCRIPTOR.full_name == "build.bazel.semver.SemVer"


def test_execute_request_on_the_wire() -> None:
    """An ExecuteRequest encodes the action digest as field 6 and the function as 9 (fields 2,
    4 and 5 are reserved by REAPI and never written)."""
    req = re_pb.ExecuteRequest(instance_name="i", skip_cache_lookup=True,
                               action_digest=re_pb.Digest(hash="ab" * 32, size_bytes=42),
                               digest_function=re_pb.DigestFunction.BLAKE3)
    fields = wire_fields(req.SerializeToString())
    assert sorted(fields) == [1, 3, 6, 9]
    assert fields[1] == [b"i"] and fields[3] == [1] and fields[9] == [9]
    digest = wire_fields(fields[6][0])
    assert digest == {1: [b"ab" * 32], 2: [42]}


def test_requests_name_the_function_where_reapi_says() -> None:
    """digest_function sits at 6 in GetActionResultRequest, 5 in UpdateActionResultRequest,
    3/5/4/5 in the CAS requests: checked on encoded bytes."""
    cases = [
        (re_pb.GetActionResultRequest, 6), (re_pb.UpdateActionResultRequest, 5),
        (re_pb.FindMissingBlobsRequest, 3), (re_pb.BatchUpdateBlobsRequest, 5),
        (re_pb.BatchReadBlobsRequest, 4), (re_pb.GetTreeRequest, 5),
    ]
    for message, number in cases:
        data = message(digest_function=re_pb.DigestFunction.SHA256).SerializeToString()
        assert wire_fields(data) == {number: [1]}, message.DESCRIPTOR.name


def test_operation_on_the_wire() -> None:
    """An Operation carries its name (1), metadata Any (2), done (3) and response Any (5) whose
    type URLs name the REAPI messages."""
    op = operations_pb2.Operation(name="job", done=True)
    op.metadata.Pack(re_pb.ExecuteOperationMetadata(stage=re_pb.ExecutionStage.COMPLETED))
    op.response.Pack(re_pb.ExecuteResponse(cached_result=True))
    fields = wire_fields(op.SerializeToString())
    assert fields[1] == [b"job"] and fields[3] == [1] and 4 not in fields
    meta = wire_fields(fields[2][0])
    assert meta[1] == [f"type.googleapis.com/{RE}.ExecuteOperationMetadata".encode()]
    assert wire_fields(meta[2][0]) == {1: [4]}
    response = wire_fields(fields[5][0])
    assert response[1] == [f"type.googleapis.com/{RE}.ExecuteResponse".encode()]
    assert wire_fields(response[2][0]) == {2: [1]}


def test_bytestream_data_is_field_ten() -> None:
    """ByteStream's payloads travel in field 10 of ReadResponse and WriteRequest."""
    assert wire_fields(bs_pb.ReadResponse(data=b"x").SerializeToString()) == {10: [b"x"]}
    write = bs_pb.WriteRequest(resource_name="r", write_offset=5, finish_write=True, data=b"y")
    assert wire_fields(write.SerializeToString()) == {1: [b"r"], 2: [5], 3: [1], 10: [b"y"]}
