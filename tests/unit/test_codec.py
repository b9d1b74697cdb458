"""The canonical content encoding (codec), service conversions (reapi.convert), and the
exception <-> status mapping."""

from __future__ import annotations

import grpc
import pytest

from distbuild import codec
from distbuild._proto.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb
from distbuild.actions import (
    Action,
    ActionResult,
    Command,
    Directory,
    DirectoryNode,
    ExecutionMetadata,
    FileNode,
    OutputFile,
    SymlinkNode,
)
from distbuild.cas.digest import digest_bytes
from distbuild.errors import BlobTooLarge, InvalidDigest, InvalidRequest, NoSuitableWorker
from distbuild.reapi import convert
from distbuild.rpc.status import code_for

D1, D2 = digest_bytes(b"one"), digest_bytes(b"two")


def test_action_command_directory_round_trip() -> None:
    """Encoding then decoding gives back equal dataclasses."""
    action = Action(D1, D2, timeout_s=12.5, do_not_cache=True, salt="s",
                    platform=(("executor", "local"), ("os", "linux")))
    command = Command(("rustc", "-v"), (("A", "1"), ("B", "2")), ("out/x",), "ws",
                      (("executor", "local"),))
    directory = Directory((FileNode("a.rs", D1, True),), (DirectoryNode("sub", D2),),
                          (SymlinkNode("l", "a.rs"),))
    assert codec.decode_action(codec.encode_action(action)) == action
    assert codec.decode_command(codec.encode_command(command)) == command
    assert codec.decode_directory(codec.encode_directory(directory)) == directory


def test_encoding_is_canonical() -> None:
    """Environment, outputs and directory entries are sorted, so order does not change digests."""
    a = Command(("x",), (("B", "2"), ("A", "1")), ("b", "a"))
    b = Command(("x",), (("A", "1"), ("B", "2")), ("a", "b"))
    assert codec.encode_command(a) == codec.encode_command(b)
    d1 = Directory((FileNode("b", D1), FileNode("a", D2)))
    d2 = Directory((FileNode("a", D2), FileNode("b", D1)))
    assert codec.encode_directory(d1) == codec.encode_directory(d2)


def test_result_round_trip() -> None:
    """ActionResult keeps outputs, exit code, stdio digests and metadata."""
    result = ActionResult((OutputFile("out/lib.rlib", D1, False),), 3, D2, None,
                          ExecutionMetadata("w1", "local", 1.5, 2.25, 3.0, "rustc-1", 7))
    assert convert.result_from_proto(convert.result_to_proto(result)) == result


def test_malformed_input_refused() -> None:
    """Bad digests and undecodable blobs raise InvalidRequest subclasses with the value."""
    with pytest.raises(InvalidDigest, match="'nothex'"):
        codec.digest_from_proto(re_pb.Digest(hash="nothex", size_bytes=1))
    with pytest.raises(InvalidRequest, match="not a valid Directory"):
        codec.decode_directory(b"\xff\xff\xff")


def test_status_codes() -> None:
    """The one mapping: specific classes first."""
    assert code_for(BlobTooLarge("x")) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_for(InvalidDigest("x")) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_for(NoSuitableWorker("x")) == grpc.StatusCode.FAILED_PRECONDITION
