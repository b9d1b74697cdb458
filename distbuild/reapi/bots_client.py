"""The Remote Workers API (``google.devtools.remoteworkers.v1test2.Bots``) from the bot's side.

A farm's scheduler (BuildGrid's, for one) hands work to its bots through one session per bot:
``CreateBotSession`` opens it, then the bot calls ``UpdateBotSession`` again and again, each
call reporting the state of every lease it holds (the result of those it completed) and
answered with the leases it should hold now. The farm may hold a call open until it has work
for the bot; the bot cancels a pending call to report a finished lease at once.

Thin: the bot loop (``distbuild/worker/bot.py``) passes and receives the dataclasses below;
messages stop here. A lease's payload is a REAPI ``Action`` (or only its ``Digest``), packed in
an ``Any``; a completed lease carries an ``ActionResult`` and a ``google.rpc.Status`` (OK
whenever the action ran, whatever its exit code).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, status_pb2

from distbuild._proto.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb
from distbuild._proto.google.devtools.remoteworkers.v1test2 import (
    bots_pb2,
    bots_pb2_grpc,
    worker_pb2,
)
from distbuild.actions import Action, ActionResult
from distbuild.cas.digest import Digest
from distbuild.codec import action_from_proto, digest_from_proto
from distbuild.errors import InvalidRequest, RemoteError, Unavailable
from distbuild.reapi import convert
from distbuild.rpc.status import error_from_rpc, failure_status

ACTIVE = "ACTIVE"
COMPLETED = "COMPLETED"
CANCELLED = "CANCELLED"
_STATE_NAMES = {bots_pb2.PENDING: ACTIVE, bots_pb2.ACTIVE: ACTIVE,
                bots_pb2.COMPLETED: COMPLETED, bots_pb2.CANCELLED: CANCELLED}
_ACTION_TYPE = re_pb.Action.DESCRIPTOR.full_name
_DIGEST_TYPE = re_pb.Digest.DESCRIPTOR.full_name
# Codes after which the same session is tried again (others: the farm lost the session).
_TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED,
                        grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN})
CAPACITY_KEY = "capacity"  # Worker.configs key BuildGrid reads a bot's concurrent leases from


@dataclass(frozen=True)
class LeaseWork:
    """A lease the farm handed us: its Action, or only the Action's digest to fetch."""

    lease_id: str
    action: Action | None = None
    action_digest: Digest | None = None
    error: str = ""  # a payload we cannot run (reported back as INVALID_ARGUMENT)


@dataclass(frozen=True)
class LeaseReport:
    """What we tell the farm about a lease we hold."""

    lease_id: str
    state: str  # ACTIVE | COMPLETED
    result: ActionResult | None = None  # COMPLETED and ran
    failure_kind: str = ""  # COMPLETED without running: a DistbuildError class name
    failure: str = ""
    retryable: bool = False  # the farm may give it to another bot


@dataclass
class SessionReply:
    """The farm's answer: the session's name and version, and the leases we should hold."""

    name: str
    version: str
    active: dict[str, LeaseWork] = field(default_factory=dict)  # by lease id
    cancelled: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class BotIdentity:
    """Who the bot is and what it offers (the first device's properties, its capacity)."""

    bot_id: str
    properties: tuple[tuple[str, str], ...]
    capacity: int


class BotsClient:
    """Calls the Bots service of the farm instance ``instance`` over ``channel``."""

    def __init__(self, channel: grpc.Channel, instance: str, identity: BotIdentity):
        self._stub = bots_pb2_grpc.BotsStub(channel)
        self.instance = instance
        self.identity = identity

    def _session(self, name: str, version: str, status: bots_pb2.BotStatus,
                 leases: Iterable[LeaseReport]) -> bots_pb2.BotSession:
        ident = self.identity
        worker = worker_pb2.Worker(
            devices=[worker_pb2.Device(handle=ident.bot_id, properties=[
                worker_pb2.Device.Property(key=k, value=v) for k, v in ident.properties])],
            configs=[worker_pb2.Worker.Config(key=CAPACITY_KEY, value=str(ident.capacity))])
        return bots_pb2.BotSession(name=name, bot_id=ident.bot_id, status=status,
                                   worker=worker, version=version,
                                   leases=[_lease_to_proto(r) for r in leases])

    def create(self, timeout: float) -> SessionReply:
        """Open a session (RemoteError subclasses on failure)."""
        request = bots_pb2.CreateBotSessionRequest(
            parent=self.instance, bot_session=self._session("", "", bots_pb2.OK, ()))
        try:
            reply = self._stub.CreateBotSession(request, timeout=timeout)
        except grpc.RpcError as e:
            raise error_from_rpc(e, f"farm instance {self.instance!r}: CreateBotSession") from e
        return _reply(reply)

    def update(self, name: str, version: str, leases: Iterable[LeaseReport], timeout: float,
               terminating: bool = False) -> grpc.Future:
        """Start an UpdateBotSession call; ``finish`` turns its future into a SessionReply."""
        request = bots_pb2.UpdateBotSessionRequest(name=name, bot_session=self._session(
            name, version, bots_pb2.BOT_TERMINATING if terminating else bots_pb2.OK, leases))
        future: grpc.Future = self._stub.UpdateBotSession.future(request, timeout=timeout)
        return future

    @staticmethod
    def finish(future: grpc.Future) -> SessionReply | None:
        """The reply of a finished ``update`` call; None when it brought no news (we cancelled
        it, or its deadline passed).

        Raises:
            Unavailable: the farm cannot answer now (unreachable, out of threads, an internal
                error): the session may well live on, try again.
            RemoteError: the farm refused the session (it expired or the farm forgot it).
        """
        if future.cancelled():
            return None
        try:
            return _reply(future.result())
        except grpc.RpcError as e:
            code = e.code() if isinstance(e, grpc.Call) else grpc.StatusCode.UNKNOWN
            if code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED):
                return None
            details = e.details() if isinstance(e, grpc.Call) else str(e)
            if code in _TRANSIENT:
                raise Unavailable(f"UpdateBotSession: {code.name}: {details}") from e
            raise RemoteError(f"the farm refused the bot session: {code.name}: {details}") from e


def _reply(session: bots_pb2.BotSession) -> SessionReply:
    reply = SessionReply(name=session.name, version=session.version)
    for lease in session.leases:
        state = _STATE_NAMES.get(lease.state, "")
        if state == ACTIVE:
            reply.active[lease.id] = _work(lease)
        elif state == CANCELLED:
            reply.cancelled.add(lease.id)
    return reply


def _work(lease: bots_pb2.Lease) -> LeaseWork:
    """The Action a lease's payload carries (or names)."""
    payload = lease.payload if lease.HasField("payload") else lease.inline_assignment
    type_name = payload.TypeName()
    try:
        if type_name == _ACTION_TYPE:
            msg = re_pb.Action()
            payload.Unpack(msg)
            return LeaseWork(lease.id, action=action_from_proto(msg))
        if type_name == _DIGEST_TYPE:
            digest = re_pb.Digest()
            payload.Unpack(digest)
            return LeaseWork(lease.id, action_digest=digest_from_proto(digest))
    except InvalidRequest as e:
        return LeaseWork(lease.id, error=f"lease {lease.id}: {e}")
    return LeaseWork(lease.id, error=f"lease {lease.id}: a payload of type {type_name!r} is "
                                     "not a REAPI Action (cargo-distbuild bots run actions)")


def _lease_to_proto(report: LeaseReport) -> bots_pb2.Lease:
    if report.state != COMPLETED:
        return bots_pb2.Lease(id=report.lease_id, state=bots_pb2.ACTIVE)
    lease = bots_pb2.Lease(id=report.lease_id, state=bots_pb2.COMPLETED,
                           status=_status(report))
    if report.result is not None:
        packed = any_pb2.Any()
        packed.Pack(convert.result_to_proto(report.result))
        lease.result.CopyFrom(packed)
    return lease


def _status(report: LeaseReport) -> status_pb2.Status:
    if report.result is not None:
        return status_pb2.Status(code=code_pb2.OK)
    if report.retryable:
        # UNAVAILABLE: what a farm retries on another bot (BuildGrid retries it and INTERNAL).
        return status_pb2.Status(code=code_pb2.UNAVAILABLE,
                                 message=f"{report.failure_kind}: {report.failure}")
    return failure_status(report.failure_kind, report.failure)
