"""Remote Workers API messages <-> the bot's dataclasses (distbuild/reapi/bots_client.py)."""

from __future__ import annotations

from google.protobuf import any_pb2
from google.rpc import code_pb2

from distbuild._proto.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb
from distbuild._proto.google.devtools.remoteworkers.v1test2 import bots_pb2
from distbuild.actions import ActionResult
from distbuild.cas.digest import SHA256, digest_bytes
from distbuild.reapi import bots_client
from distbuild.reapi.bots_client import COMPLETED, LeaseReport


def _lease(lease_id: str, payload: object, state: int = bots_pb2.ACTIVE) -> bots_pb2.Lease:
    packed = any_pb2.Any()
    packed.Pack(payload)  # type: ignore[arg-type]
    return bots_pb2.Lease(id=lease_id, state=state, payload=packed)  # type: ignore[arg-type]


def test_lease_payloads_become_work() -> None:
    """An Action payload is decoded, a Digest payload names the Action to fetch, anything
    else is work the bot reports as invalid; cancelled leases are listed as such."""
    command = digest_bytes(b"command", SHA256)
    action = re_pb.Action(command_digest=re_pb.Digest(hash=command.hash, size_bytes=7),
                          input_root_digest=re_pb.Digest(hash=command.hash, size_bytes=7))
    digest = re_pb.Digest(hash=command.hash, size_bytes=7)
    session = bots_pb2.BotSession(name="main/s", version="3", leases=[
        _lease("a", action), _lease("d", digest), _lease("x", re_pb.Platform()),
        _lease("c", digest, bots_pb2.CANCELLED)])
    reply = bots_client._reply(session)
    assert (reply.name, reply.version) == ("main/s", "3")
    assert reply.active["a"].action is not None
    assert reply.active["a"].action.command_digest == command
    assert reply.active["d"].action_digest == command
    assert "not a REAPI Action" in reply.active["x"].error
    assert reply.cancelled == {"c"}


def test_completed_leases_carry_a_result_or_a_status_the_farm_retries() -> None:
    """A lease that ran reports OK with its ActionResult (any exit code); one another bot
    might run reports UNAVAILABLE (BuildGrid retries it); one that can never run reports
    its own code; a running lease is just ACTIVE."""
    ran = bots_client._lease_to_proto(LeaseReport("r", COMPLETED, result=ActionResult(exit_code=3)))
    assert ran.status.code == code_pb2.OK
    result = re_pb.ActionResult()
    assert ran.result.Unpack(result) and result.exit_code == 3
    retry = bots_client._lease_to_proto(LeaseReport("t", COMPLETED, failure_kind="ExecutionError",
                                                    failure="bot shut down", retryable=True))
    assert retry.status.code == code_pb2.UNAVAILABLE
    bad = bots_client._lease_to_proto(LeaseReport("b", COMPLETED, failure_kind="PathEscape",
                                                  failure="../x"))
    assert bad.status.code == code_pb2.INVALID_ARGUMENT
    running = bots_client._lease_to_proto(LeaseReport("a", bots_client.ACTIVE))
    assert running.state == bots_pb2.ACTIVE and not running.HasField("result")
