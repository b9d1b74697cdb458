"""The pieces of our REAPI layer that need no server: digest-function negotiation, ByteStream
resource names, old-style Commands, typed failures in google.rpc.Status, and the two digest
functions side by side in the stores."""

from __future__ import annotations

import hashlib
from pathlib import Path

import blake3
import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from distbuild._proto.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb
from distbuild.actions import ActionResult, OutputFile
from distbuild.cas.digest import BLAKE3, SHA256, Digest, digest_bytes
from distbuild.cas.storage import ContentStores
from distbuild.codec import decode_command
from distbuild.errors import InvalidDigest, InvalidRequest
from distbuild.reapi import resources
from distbuild.reapi.convert import function_from_proto
from distbuild.rpc.status import failure_from_status, failure_status

H = "ab" * 32


def test_digest_functions() -> None:
    """BLAKE3 and SHA-256 digests are the real hashes of the bytes."""
    data = b"hello"
    assert digest_bytes(data) == Digest(blake3.blake3(data).hexdigest(), 5)
    assert digest_bytes(data, SHA256) == Digest(hashlib.sha256(data).hexdigest(), 5)


def test_function_from_request() -> None:
    """Named functions are taken as named; unset means SHA-256 for 64-hex-digit hashes (REAPI's
    rule; BLAKE3 must be named); others are refused with what we offer."""
    assert function_from_proto(re_pb.DigestFunction.BLAKE3, [H]) is BLAKE3
    assert function_from_proto(re_pb.DigestFunction.SHA256, [H]) is SHA256
    assert function_from_proto(re_pb.DigestFunction.UNKNOWN, [H]) is SHA256
    assert function_from_proto(re_pb.DigestFunction.UNKNOWN, []) is SHA256
    with pytest.raises(InvalidRequest, match="SHA1 is not supported.*BLAKE3, SHA256"):
        function_from_proto(re_pb.DigestFunction.SHA1, ["a" * 40])
    with pytest.raises(InvalidRequest, match="cannot infer"):
        function_from_proto(re_pb.DigestFunction.UNKNOWN, ["a" * 40])
    with pytest.raises(InvalidRequest, match="77 is not supported"):
        function_from_proto(77, [H])


def test_resource_names() -> None:
    """Read and upload names in REAPI's form: SHA-256 without a function segment, BLAKE3 with
    one, the instance before it (possibly several segments), trailing metadata ignored."""
    d = Digest(H, 7)
    assert resources.read_name(d, SHA256) == f"blobs/{H}/7"
    assert resources.read_name(d, BLAKE3, "a/b") == f"a/b/blobs/blake3/{H}/7"
    assert resources.write_name(d, "u1", BLAKE3) == f"uploads/u1/blobs/blake3/{H}/7"
    parsed = resources.parse(f"inst/uploads/u2/blobs/{H}/7/extra", write=True)
    assert (parsed.instance, parsed.upload_id, parsed.digest, parsed.function) == \
        ("inst", "u2", d, SHA256)
    assert resources.parse(f"blobs/blake3/{H}/7").function is BLAKE3
    with pytest.raises(InvalidRequest, match="compressed-blobs is not offered"):
        resources.parse(f"uploads/u/compressed-blobs/zstd/{H}/7", write=True)
    with pytest.raises(InvalidDigest):
        resources.parse(f"blobs/{H}/seven")
    with pytest.raises(InvalidRequest, match="no 'blobs/' part"):
        resources.parse("nothing/here")


def test_old_style_command_outputs() -> None:
    """A v2.0 Command (Bazel 4: output_files and output_directories, platform in the Command)
    decodes to our output paths; v2.1's output_paths wins when present."""
    old = re_pb.Command(arguments=["cc"], output_files=["b.o", "a.o"], output_directories=["d"],
                        platform=re_pb.Platform(properties=[
                            re_pb.Platform.Property(name="executor", value="local")]))
    command = decode_command(old.SerializeToString())
    assert command.output_paths == ("a.o", "b.o", "d")
    assert command.platform == (("executor", "local"),)
    new = re_pb.Command(arguments=["cc"], output_files=["ignored"], output_paths=["x"])
    assert decode_command(new.SerializeToString()).output_paths == ("x",)


def test_failure_status_round_trip() -> None:
    """A typed failure travels as a real status code plus its class in ErrorInfo; a missing
    blob also names the blob in a PreconditionFailure; foreign statuses map by code."""
    status = failure_status("ActionTimeout", "killed after 5s")
    assert status.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert failure_from_status(status) == ("ActionTimeout", "killed after 5s")
    missing = failure_status("MissingBlobs", "gone", (f"blobs/{H}/7",))
    assert missing.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    pf = error_details_pb2.PreconditionFailure()
    assert any(d.Unpack(pf) for d in missing.details if d.Is(pf.DESCRIPTOR))
    assert [(v.type, v.subject) for v in pf.violations] == [("MISSING", f"blobs/{H}/7")]
    foreign = status_pb2.Status(code=grpc.StatusCode.UNAVAILABLE.value[0], message="later")
    assert failure_from_status(foreign) == ("Unavailable", "later")
    assert failure_from_status(status_pb2.Status()) == ("", "")


def test_stores_keep_functions_apart(tmp_path: Path) -> None:
    """The same bytes stored under both functions are two entries, each verified with its own
    hash; the BLAKE3 store keeps the layout it had before SHA-256 existed."""
    stores = ContentStores(tmp_path)
    b3 = stores.cas(BLAKE3).put_bytes(b"same bytes")
    sha = stores.cas(SHA256).put_bytes(b"same bytes")
    assert b3 != sha and sha == digest_bytes(b"same bytes", SHA256)
    assert stores.cas(BLAKE3).contains(b3) and not stores.cas(BLAKE3).contains(sha)
    assert stores.cas(SHA256).contains(sha) and not stores.cas(SHA256).contains(b3)
    assert stores.cas(SHA256).get_bytes(sha) == b"same bytes"
    assert (tmp_path / "cas" / "blobs" / b3.hash[:2] / b3.hash).is_file()
    assert (tmp_path / "sha256" / "cas" / "blobs" / sha.hash[:2] / sha.hash).is_file()
    src = tmp_path / "file"
    src.write_bytes(b"x" * 100_000)
    assert stores.cas(SHA256).put_file(src) == digest_bytes(b"x" * 100_000, SHA256)


def test_cas_has_no_wire_dependencies() -> None:
    """Every module of distbuild.cas loads without grpc, protobuf or distbuild.rpc: the wire
    layer (servicers, remote clients) sits above it, in distbuild.reapi."""
    import subprocess
    import sys

    code = ("import importlib, pkgutil, sys, distbuild.cas as c; "
            "[importlib.import_module(m.name) for m in pkgutil.iter_modules(c.__path__, "
            "'distbuild.cas.')]; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'grpc' "
            "or m.startswith(('google.protobuf', 'distbuild.rpc', 'distbuild.reapi', "
            "'distbuild._proto'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert out.strip() == "[]"


def test_action_cache_takes_the_empty_blob_as_present(tmp_path: Path) -> None:
    """A result naming an empty output file (never uploaded: REAPI clients such as Bazel skip
    the empty blob) is stored and served; one naming an absent non-empty blob is refused."""
    stores = ContentStores(tmp_path)
    ac = stores.ac(SHA256)
    empty = digest_bytes(b"", SHA256)
    result = ActionResult(output_files=(OutputFile("empty.txt", empty),), stdout_digest=empty)
    ac.put(digest_bytes(b"action", SHA256), result)
    assert ac.get(digest_bytes(b"action", SHA256)) == result
    with pytest.raises(InvalidRequest, match="CAS lacks"):
        ac.put(digest_bytes(b"other", SHA256),
               ActionResult(output_files=(OutputFile("x", digest_bytes(b"x", SHA256)),)))
