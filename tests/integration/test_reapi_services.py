"""Issue 14: every REAPI service of a real scheduler process, spoken to as a REAPI client
would: Capabilities, CAS (SHA-256 and BLAKE3 side by side, GetTree), ByteStream above the
batch limit, ActionCache, and Execution as Operation streams (stages, the final
ExecuteResponse, cache hits, WaitExecution after a reconnect, missing blobs named)."""

from __future__ import annotations

import hashlib
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.longrunning import operations_pb2
from google.rpc import error_details_pb2, status_pb2

from distbuild._proto.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb
from distbuild._proto.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from distbuild._proto.google.bytestream import bytestream_pb2 as bs_pb
from distbuild._proto.google.bytestream import bytestream_pb2_grpc as bs_grpc
from distbuild.actions import ActionResult, OutputFile
from distbuild.cas.digest import BLAKE3, SHA256, Digest, DigestFunction, digest_bytes
from distbuild.config import Config
from distbuild.errors import CorruptBlob
from distbuild.reapi.action_cache_client import RemoteActionCache
from distbuild.reapi.capabilities import fetch_capabilities
from distbuild.reapi.cas_client import RemoteCAS
from distbuild.rpc.server import BATCH_LIMIT, make_channel
from tests.integration.cluster import Cluster

FN = {SHA256: re_pb.DigestFunction.SHA256, BLAKE3: re_pb.DigestFunction.BLAKE3}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "cluster")
    c.start_scheduler()
    yield c
    c.stop()


def _channel(cluster: Cluster) -> grpc.Channel:
    return make_channel(cluster.addr, Config(home=cluster.root / "client"))


def _d(digest: Digest) -> re_pb.Digest:
    return re_pb.Digest(hash=digest.hash, size_bytes=digest.size)


def _action(cas: RemoteCAS, script: str, outputs: list[str], function: DigestFunction,
            timeout_s: int = 0) -> Digest:
    """Upload a REAPI v2.0-style action (output_files, platform in the Command, as Bazel 4
    writes it) hashed with ``function``; returns its digest."""
    command = re_pb.Command(arguments=["/bin/sh", "-c", script], output_files=sorted(outputs),
                            environment_variables=[re_pb.Command.EnvironmentVariable(
                                name="PATH", value="/usr/bin:/bin")])
    cmd = command.SerializeToString(deterministic=True)
    root = re_pb.Directory().SerializeToString()
    action = re_pb.Action(command_digest=_d(digest_bytes(cmd, function)),
                          input_root_digest=_d(digest_bytes(root, function)))
    if timeout_s:
        action.timeout.seconds = timeout_s
    blob = action.SerializeToString(deterministic=True)
    cas.upload({digest_bytes(b, function): b for b in (cmd, blob)})
    return digest_bytes(blob, function)


def _operations(stub: re_grpc.ExecutionStub, digest: Digest, function: DigestFunction,
                **kw: object) -> list[operations_pb2.Operation]:
    req = re_pb.ExecuteRequest(action_digest=_d(digest), digest_function=FN[function], **kw)
    return list(stub.Execute(req, timeout=120))


def _meta(op: operations_pb2.Operation) -> re_pb.ExecuteOperationMetadata:
    meta = re_pb.ExecuteOperationMetadata()
    assert op.metadata.Unpack(meta)
    return meta


def _response(op: operations_pb2.Operation) -> re_pb.ExecuteResponse:
    resp = re_pb.ExecuteResponse()
    assert op.done and op.response.Unpack(resp) and not op.HasField("error")
    return resp


def test_capabilities(cluster: Cluster) -> None:
    """GetCapabilities offers SHA-256 and BLAKE3 for cache and execution, SHA-256 as the
    singular function older clients read, API 2.0-2.3, and cache updates; a request for
    another instance than the unnamed one is refused."""
    stub = re_grpc.CapabilitiesStub(_channel(cluster))
    caps = stub.GetCapabilities(re_pb.GetCapabilitiesRequest(), timeout=30)
    cache, execution = caps.cache_capabilities, caps.execution_capabilities
    assert set(cache.digest_functions) == {re_pb.DigestFunction.SHA256,
                                           re_pb.DigestFunction.BLAKE3}
    assert set(execution.digest_functions) == set(cache.digest_functions)
    assert execution.digest_function == re_pb.DigestFunction.SHA256 and execution.exec_enabled
    assert cache.action_cache_update_capabilities.update_enabled
    assert (caps.low_api_version.major, caps.low_api_version.minor) == (2, 0)
    assert (caps.high_api_version.major, caps.high_api_version.minor) == (2, 3)
    parsed = fetch_capabilities(_channel(cluster))
    assert parsed.choose() is BLAKE3 and parsed.choose((SHA256,), execution=True) is SHA256
    cas = re_grpc.ContentAddressableStorageStub(_channel(cluster))
    with pytest.raises(grpc.RpcError) as info:  # one unnamed instance is served
        cas.FindMissingBlobs(re_pb.FindMissingBlobsRequest(instance_name="other"), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown instance 'other'" in info.value.details()


def test_cas_functions_side_by_side_and_bytestream(cluster: Cluster) -> None:
    """The same bytes under SHA-256 and BLAKE3 are separate blobs, each verified with its own
    function; blobs above the batch limit go through ByteStream Write/Read (offsets, limits,
    early answer for a blob already stored, QueryWriteStatus), both functions."""
    channel = _channel(cluster)
    cfg = Config(home=cluster.root / "client")
    sha = RemoteCAS(cluster.addr, cfg, channel=channel, function=SHA256)
    b3 = RemoteCAS(cluster.addr, cfg, channel=channel, function=BLAKE3)
    small = b"side by side"
    d_sha, d_b3 = sha.put_bytes(small), b3.put_bytes(small)
    assert d_sha == Digest(hashlib.sha256(small).hexdigest(), len(small))
    assert sha.find_missing([d_sha, d_b3]) == [d_b3]
    assert b3.find_missing([d_sha, d_b3]) == [d_sha]
    assert sha.get_bytes(d_sha) == b3.get_bytes(d_b3) == small
    # A request that names no function and hashes of 64 hex digits means SHA-256 (REAPI).
    stub = re_grpc.ContentAddressableStorageStub(channel)
    unnamed = stub.FindMissingBlobs(re_pb.FindMissingBlobsRequest(
        blob_digests=[_d(d_sha), _d(d_b3)]), timeout=30)
    assert [m.hash for m in unnamed.missing_blob_digests] == [d_b3.hash]

    big = bytes(range(256)) * ((BATCH_LIMIT + (1 << 20)) // 256)
    bs = bs_grpc.ByteStreamStub(channel)
    for cas, segment in ((sha, ""), (b3, "blake3/")):
        digest = cas.put_bytes(big)  # through ByteStream: above the batch limit
        assert cas.get_bytes(digest) == big
        name = f"blobs/{segment}{digest.hash}/{digest.size}"
        part = b"".join(r.data for r in bs.Read(
            bs_pb.ReadRequest(resource_name=name, read_offset=1000, read_limit=5000),
            timeout=60))
        assert part == big[1000:6000]
        upload = f"uploads/{uuid.uuid4()}/{name}"
        again = bs.Write(iter([bs_pb.WriteRequest(resource_name=upload, data=big[:10])]),
                         timeout=60)
        assert again.committed_size == digest.size  # already there: answered at once
        status = bs.QueryWriteStatus(bs_pb.QueryWriteStatusRequest(resource_name=upload),
                                     timeout=30)
        assert (status.committed_size, status.complete) == (digest.size, True)
    with pytest.raises(grpc.RpcError) as info:
        bs.QueryWriteStatus(bs_pb.QueryWriteStatusRequest(
            resource_name=f"uploads/x/blobs/{'0' * 64}/5"), timeout=30)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    claimed = digest_bytes(b"a" * (BATCH_LIMIT + 10), SHA256)
    with pytest.raises(CorruptBlob):
        sha._write_stream(claimed, b"b" * (BATCH_LIMIT + 10))
    assert sha.find_missing([claimed]) == [claimed]


def test_get_tree(cluster: Cluster) -> None:
    """GetTree returns every Directory below a root in pages (page tokens resume), omits a
    missing subtree, and answers NOT_FOUND for a missing root."""
    channel = _channel(cluster)
    cas = RemoteCAS(cluster.addr, Config(home=cluster.root / "client"), channel=channel,
                    function=SHA256)
    leaf = re_pb.Directory(files=[re_pb.FileNode(name="f", digest=_d(cas.put_bytes(b"f")))])
    leaf_d = cas.put_bytes(leaf.SerializeToString())
    mid = re_pb.Directory(directories=[re_pb.DirectoryNode(name="leaf", digest=_d(leaf_d))])
    mid_d = cas.put_bytes(mid.SerializeToString())
    gone = digest_bytes(b"never uploaded", SHA256)
    root = re_pb.Directory(directories=[re_pb.DirectoryNode(name="gone", digest=_d(gone)),
                                        re_pb.DirectoryNode(name="mid", digest=_d(mid_d))])
    root_d = cas.put_bytes(root.SerializeToString())
    stub = re_grpc.ContentAddressableStorageStub(channel)
    pages = list(stub.GetTree(re_pb.GetTreeRequest(
        root_digest=_d(root_d), page_size=1, digest_function=re_pb.DigestFunction.SHA256),
        timeout=30))
    assert [len(p.directories) for p in pages] == [1, 1, 1]
    assert [p.directories[0] for p in pages] == [root, mid, leaf]
    assert [bool(p.next_page_token) for p in pages] == [True, True, False]
    resumed = list(stub.GetTree(re_pb.GetTreeRequest(
        root_digest=_d(root_d), page_token=pages[0].next_page_token,
        digest_function=re_pb.DigestFunction.SHA256), timeout=30))
    assert [d for p in resumed for d in p.directories] == [mid, leaf]
    with pytest.raises(grpc.RpcError) as info:
        list(stub.GetTree(re_pb.GetTreeRequest(root_digest=_d(gone)), timeout=30))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_action_cache(cluster: Cluster) -> None:
    """GetActionResult misses with NOT_FOUND; UpdateActionResult stores a result whose blobs
    are in the CAS (inlined stdout becomes a blob) and refuses one naming absent blobs."""
    channel = _channel(cluster)
    cas = RemoteCAS(cluster.addr, Config(home=cluster.root / "client"), channel=channel,
                    function=SHA256)
    ac = RemoteActionCache(channel, function=SHA256)
    key = digest_bytes(b"an action", SHA256)
    assert ac.get(key) is None
    out = cas.put_bytes(b"output")
    ac.put(key, ActionResult(output_files=(OutputFile("out", out),)))
    got = ac.get(key)
    assert got is not None and got.output_files == (OutputFile("out", out),)
    assert RemoteActionCache(channel, function=BLAKE3).get(key) is None  # other function
    stub = re_grpc.ActionCacheStub(channel)
    raw_key = digest_bytes(b"inline", SHA256)
    stub.UpdateActionResult(re_pb.UpdateActionResultRequest(
        action_digest=_d(raw_key), action_result=re_pb.ActionResult(stdout_raw=b"said"),
        digest_function=re_pb.DigestFunction.SHA256), timeout=30)
    stored = ac.get(raw_key)
    assert stored is not None and stored.stdout_digest == digest_bytes(b"said", SHA256)
    absent = digest_bytes(b"absent", SHA256)
    with pytest.raises(Exception, match="CAS lacks"):
        ac.put(digest_bytes(b"other", SHA256),
               ActionResult(output_files=(OutputFile("x", absent),)))


def test_execute_streams_operations_for_both_functions(cluster: Cluster) -> None:
    """Execute of a SHA-256 action (v2.0 outputs) streams Operations named by the job, with
    ExecuteOperationMetadata stages, and ends with an ExecuteResponse whose outputs are
    SHA-256 blobs; the same command as a BLAKE3 action runs separately with BLAKE3 outputs; a
    repeat is answered from the action cache in one done Operation."""
    cluster.start_worker("w1", capacity=2)
    channel = _channel(cluster)
    cfg = Config(home=cluster.root / "client")
    stub = re_grpc.ExecutionStub(channel)
    script = "sleep 0.5; echo to stdout; echo made > out.txt"
    for function in (SHA256, BLAKE3):
        cas = RemoteCAS(cluster.addr, cfg, channel=channel, function=function)
        digest = _action(cas, script, ["out.txt"], function)
        ops = _operations(stub, digest, function)
        assert len({op.name for op in ops}) == 1 and ops[0].name
        stages = [_meta(op).stage for op in ops]
        assert stages[0] in (re_pb.ExecutionStage.QUEUED, re_pb.ExecutionStage.EXECUTING)
        assert stages[-1] == re_pb.ExecutionStage.COMPLETED
        assert [op.done for op in ops] == [False] * (len(ops) - 1) + [True]
        meta = _meta(ops[-1])
        assert (meta.action_digest.hash, meta.digest_function) == (digest.hash, FN[function])
        resp = _response(ops[-1])
        assert resp.status.code == 0 and not resp.cached_result
        assert resp.result.exit_code == 0 and resp.result.execution_metadata.worker == "w1"
        (out,) = resp.result.output_files
        assert out.path == "out.txt"
        assert Digest(out.digest.hash, out.digest.size_bytes) == digest_bytes(b"made\n", function)
        assert cas.get_bytes(Digest(out.digest.hash, out.digest.size_bytes)) == b"made\n"
        stdout = Digest(resp.result.stdout_digest.hash, resp.result.stdout_digest.size_bytes)
        assert cas.get_bytes(stdout) == b"to stdout\n"
        (hit,) = _operations(stub, digest, function)
        assert _response(hit).cached_result and _response(hit).result == resp.result


def test_wait_execution_after_a_reconnect(cluster: Cluster) -> None:
    """A client that drops its Execute stream, and a scheduler killed and restarted in the
    meantime, do not lose the execution: WaitExecution on a new connection follows it to its
    ExecuteResponse. An unknown name is NOT_FOUND."""
    cluster.start_worker("w1", capacity=1)
    cfg = Config(home=cluster.root / "client")
    channel = _channel(cluster)
    cas = RemoteCAS(cluster.addr, cfg, channel=channel, function=SHA256)
    digest = _action(cas, "sleep 3; echo late", [], SHA256)
    stream = re_grpc.ExecutionStub(channel).Execute(re_pb.ExecuteRequest(
        action_digest=_d(digest), digest_function=re_pb.DigestFunction.SHA256), timeout=60)
    first = next(iter(stream))
    stream.cancel()
    channel.close()
    assert not first.done
    cluster.kill("scheduler", signal.SIGKILL)
    time.sleep(0.5)
    cluster.start_scheduler()
    again = re_grpc.ExecutionStub(_channel(cluster))
    ops = list(again.WaitExecution(re_pb.WaitExecutionRequest(name=first.name), timeout=120))
    assert ops[-1].name == first.name and _meta(ops[-1]).stage == re_pb.ExecutionStage.COMPLETED
    resp = _response(ops[-1])
    assert resp.status.code == 0 and resp.result.exit_code == 0
    with pytest.raises(grpc.RpcError) as info:
        list(again.WaitExecution(re_pb.WaitExecutionRequest(name="no-such-op"), timeout=30))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def _precondition(details: bytes) -> list[tuple[str, str]]:
    status = status_pb2.Status.FromString(details)
    return _violations(status)


def _violations(status: status_pb2.Status) -> list[tuple[str, str]]:
    out = []
    for detail in status.details:
        pf = error_details_pb2.PreconditionFailure()
        if detail.Is(pf.DESCRIPTOR) and detail.Unpack(pf):
            out += [(v.type, v.subject) for v in pf.violations]
    return out


def test_missing_blobs_are_named(cluster: Cluster) -> None:
    """An Execute whose action blob is absent fails with FAILED_PRECONDITION naming it (REAPI's
    PreconditionFailure in the rich status); one whose input file is absent ends with that
    status in its ExecuteResponse, the blob named, so a client can upload it and retry."""
    cluster.start_worker("w1", capacity=1)
    channel = _channel(cluster)
    cas = RemoteCAS(cluster.addr, Config(home=cluster.root / "client"), channel=channel,
                    function=BLAKE3)
    stub = re_grpc.ExecutionStub(channel)
    absent = digest_bytes(b"no such action")
    with pytest.raises(grpc.RpcError) as info:
        _operations(stub, absent, BLAKE3)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    trailer = dict(info.value.trailing_metadata() or ())["grpc-status-details-bin"]
    assert _precondition(trailer) == [("MISSING", f"blobs/blake3/{absent.hash}/{absent.size}")]

    missing_file = digest_bytes(b"never uploaded input")
    root = re_pb.Directory(files=[re_pb.FileNode(name="in.txt", digest=_d(missing_file))])
    root_blob = root.SerializeToString()
    cmd = re_pb.Command(arguments=["/bin/cat", "in.txt"]).SerializeToString()
    action = re_pb.Action(command_digest=_d(digest_bytes(cmd)),
                          input_root_digest=_d(digest_bytes(root_blob)),
                          platform=re_pb.Platform(properties=[
                              re_pb.Platform.Property(name="executor", value="local")]))
    blob = action.SerializeToString()
    cas.upload({digest_bytes(b): b for b in (cmd, root_blob, blob)})
    ops = _operations(stub, digest_bytes(blob), BLAKE3)
    resp = _response(ops[-1])
    assert resp.status.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert _violations(resp.status) == [
        ("MISSING", f"blobs/blake3/{missing_file.hash}/{missing_file.size}")]


def test_outputs_are_relative_to_the_working_directory(cluster: Cluster) -> None:
    """REAPI names output paths relative to the working directory: a command run in "sub"
    writing ../top.txt and here.txt gets both back under those names; an output that would
    leave the input root fails the execution with INVALID_ARGUMENT and nothing runs."""
    cluster.start_worker("w1", capacity=1)
    channel = _channel(cluster)
    cas = RemoteCAS(cluster.addr, Config(home=cluster.root / "client"), channel=channel,
                    function=SHA256)
    stub = re_grpc.ExecutionStub(channel)
    sub = re_pb.Directory().SerializeToString()
    root = re_pb.Directory(directories=[re_pb.DirectoryNode(
        name="sub", digest=_d(digest_bytes(sub, SHA256)))]).SerializeToString()

    def run(outputs: list[str]) -> re_pb.ExecuteResponse:
        script = "echo up > ../top.txt; echo in > here.txt"
        cmd = re_pb.Command(arguments=["/bin/sh", "-c", script], working_directory="sub",
                            output_paths=sorted(outputs))
        cmd_blob = cmd.SerializeToString()
        action = re_pb.Action(command_digest=_d(digest_bytes(cmd_blob, SHA256)),
                              input_root_digest=_d(digest_bytes(root, SHA256)))
        blob = action.SerializeToString()
        cas.upload({digest_bytes(b, SHA256): b for b in (sub, root, cmd_blob, blob)})
        return _response(_operations(stub, digest_bytes(blob, SHA256), SHA256)[-1])

    resp = run(["../top.txt", "here.txt"])
    got = {o.path: cas.get_bytes(Digest(o.digest.hash, o.digest.size_bytes))
           for o in resp.result.output_files}
    assert got == {"../top.txt": b"up\n", "here.txt": b"in\n"}
    refused = run(["../../outside.txt"])
    assert refused.status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "escapes its sandbox" in refused.status.message


def test_output_directories_come_back_as_trees(cluster: Cluster) -> None:
    """An output directory (Bazel 4's output_directories) comes back as an OutputDirectory whose
    Tree lists its files and subdirectories (symlinks left out), every blob in the CAS."""
    cluster.start_worker("w1", capacity=1)
    channel = _channel(cluster)
    cas = RemoteCAS(cluster.addr, Config(home=cluster.root / "client"), channel=channel,
                    function=SHA256)
    script = ("mkdir -p outdir/sub && echo a > outdir/a.txt && printf '#!/bin/sh\\n' > "
              "outdir/sub/run.sh && chmod +x outdir/sub/run.sh && ln -s /etc/passwd outdir/l")
    command = re_pb.Command(arguments=["/bin/sh", "-c", script], output_directories=["outdir"])
    cmd = command.SerializeToString()
    root = re_pb.Directory().SerializeToString()
    action = re_pb.Action(command_digest=_d(digest_bytes(cmd, SHA256)),
                          input_root_digest=_d(digest_bytes(root, SHA256)))
    blob = action.SerializeToString()
    cas.upload({digest_bytes(b, SHA256): b for b in (cmd, blob)})
    resp = _response(_operations(re_grpc.ExecutionStub(channel), digest_bytes(blob, SHA256),
                                 SHA256)[-1])
    assert resp.status.code == 0 and not resp.result.output_files
    (out,) = resp.result.output_directories
    assert out.path == "outdir"
    tree = re_pb.Tree.FromString(cas.get_bytes(Digest(out.tree_digest.hash,
                                                      out.tree_digest.size_bytes)))
    assert [f.name for f in tree.root.files] == ["a.txt"] and not tree.root.symlinks
    (sub,) = tree.root.directories
    (child,) = tree.children
    assert sub.name == "sub" and digest_bytes(child.SerializeToString(), SHA256) == \
        Digest(sub.digest.hash, sub.digest.size_bytes)
    (script_file,) = child.files
    assert (script_file.name, script_file.is_executable) == ("run.sh", True)
    a = tree.root.files[0].digest
    assert cas.get_bytes(Digest(a.hash, a.size_bytes)) == b"a\n"
