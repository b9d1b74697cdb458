"""Exceptions <-> gRPC status codes, in exactly one place.

Servers: ``@guarded`` wraps a servicer method so that a ``DistbuildError`` ends the call with
the matching status code, the exception's message as details, and the exception's class name
in the ``distbuild-error`` trailing metadata. Clients: ``error_from_rpc`` turns a failed call
back into the same exception class (or, for foreign servers, the closest one by code).

Failures that travel inside messages (a job's error, ``ExecuteResponse.status``, a batch
item's status) are ``google.rpc.Status`` values made by ``failure_status``: the same code, the
message, and the error's class name as a ``google.rpc.ErrorInfo`` detail (domain
``cargo-distbuild``), which ``failure_from_status`` reads back. A missing blob also carries
REAPI's ``PreconditionFailure`` (type ``MISSING``, subject ``blobs/{hash}/{size}``), which
clients such as Bazel use to upload what is missing and retry.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from google.rpc import error_details_pb2, status_pb2

from distbuild import errors
from distbuild.errors import DistbuildError

log = logging.getLogger(__name__)

ERROR_KEY = "distbuild-error"
DETAILS_KEY = "grpc-status-details-bin"

# Most specific first: the first matching class wins.
_CODES: tuple[tuple[type[DistbuildError], grpc.StatusCode], ...] = (
    (errors.BlobTooLarge, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.MissingBlobs, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.UnknownJob, grpc.StatusCode.NOT_FOUND),
    (errors.InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.BlobNotFound, grpc.StatusCode.NOT_FOUND),
    (errors.CorruptBlob, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.CasError, grpc.StatusCode.INTERNAL),
    (errors.ActionTimeout, grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.ActionCancelled, grpc.StatusCode.CANCELLED),
    (errors.ExecutorUnavailable, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ExecutionError, grpc.StatusCode.INTERNAL),
    (errors.NoSuitableWorker, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.AuthError, grpc.StatusCode.UNAUTHENTICATED),
    (errors.JobFailed, grpc.StatusCode.ABORTED),
    (errors.RemoteError, grpc.StatusCode.UNAVAILABLE),
    (errors.ConfigError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.DistbuildError, grpc.StatusCode.UNKNOWN),
)

_BY_CODE: dict[grpc.StatusCode, type[DistbuildError]] = {
    grpc.StatusCode.UNAVAILABLE: errors.Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.Unavailable,
    grpc.StatusCode.UNAUTHENTICATED: errors.AuthError,
    grpc.StatusCode.PERMISSION_DENIED: errors.AuthError,
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidRequest,
    grpc.StatusCode.NOT_FOUND: errors.BlobNotFound,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.BlobTooLarge,
}


def code_for(exc: DistbuildError) -> grpc.StatusCode:
    """The status code a server answers ``exc`` with."""
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.UNKNOWN


def _abort(context: grpc.ServicerContext, exc: DistbuildError) -> None:
    # The rich status (gRPC's "grpc-status-details-bin" trailer) carries the details clients
    # such as Bazel read, e.g. which blobs are missing.
    context.set_trailing_metadata(((ERROR_KEY, type(exc).__name__),
                                   (DETAILS_KEY, status_of(exc).SerializeToString())))
    context.abort(code_for(exc), str(exc))


F = TypeVar("F", bound=Callable[..., Any])


def guarded(method: F) -> F:
    """Decorate a servicer method: DistbuildError -> status code (unary and streaming)."""
    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def gen_wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
            try:
                yield from method(self, request, context)
            except DistbuildError as e:
                _abort(context, e)

        return gen_wrapper  # type: ignore[return-value]

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except DistbuildError as e:
            _abort(context, e)

    return wrapper  # type: ignore[return-value]


def error_from_rpc(err: grpc.RpcError, what: str = "") -> DistbuildError:
    """The DistbuildError a failed call stands for (``raise error_from_rpc(e) from e``)."""
    code = err.code() if isinstance(err, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (err.details() if isinstance(err, grpc.Call) else str(err)) or str(code)
    name = ""
    if isinstance(err, grpc.Call):
        for key, value in err.trailing_metadata() or ():
            if key == ERROR_KEY:
                name = str(value)
    cls = getattr(errors, name, None) if name else None
    if not (isinstance(cls, type) and issubclass(cls, DistbuildError)):
        cls = _BY_CODE.get(code, errors.RemoteError)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED and not name:
        cls = errors.Unresponsive  # this call's deadline passed without an answer
    if code == grpc.StatusCode.UNAVAILABLE and not name:
        if _NO_ANSWER.search(details):
            cls = errors.Unresponsive
            details = f"{what + ': ' if what else ''}not answering ({details})"
        else:
            details = f"{what + ': ' if what else ''}unreachable ({details})"
    return cls(details)


# What gRPC says when a connection died of silence (keepalive, rpc/server.py) rather than
# being refused or closed: a frozen server or a network black hole.
_NO_ANSWER = re.compile(r"ping timeout|keepalive|SETTINGS frame|timed out|Deadline",
                        re.IGNORECASE)


DOMAIN = "cargo-distbuild"


def failure_status(kind: str, message: str, missing: tuple[str, ...] = ()) -> status_pb2.Status:
    """A google.rpc.Status for a failure of class ``kind`` (a DistbuildError class name).

    ``missing``: blob subjects (``blobs/{hash}/{size}``) a PreconditionFailure names.
    """
    cls = getattr(errors, kind, None)
    code = (code_for(cls(message)) if isinstance(cls, type) and issubclass(cls, DistbuildError)
            else grpc.StatusCode.UNKNOWN)
    status = status_pb2.Status(code=code.value[0], message=message)
    status.details.add().Pack(error_details_pb2.ErrorInfo(reason=kind or "DistbuildError",
                                                          domain=DOMAIN))
    if missing:
        status.details.add().Pack(error_details_pb2.PreconditionFailure(violations=[
            error_details_pb2.PreconditionFailure.Violation(type="MISSING", subject=s)
            for s in missing]))
    return status


def status_of(exc: BaseException) -> status_pb2.Status:
    """``failure_status`` for an exception (an unexpected one is INTERNAL)."""
    if isinstance(exc, DistbuildError):
        return failure_status(type(exc).__name__, str(exc),
                              getattr(exc, "subjects", ()))
    return status_pb2.Status(code=grpc.StatusCode.INTERNAL.value[0],
                             message=f"{type(exc).__name__}: {exc}")


def failure_from_status(status: status_pb2.Status) -> tuple[str, str]:
    """(kind, message) of a failure status; kind is "" for OK, else our class name or, from a
    foreign server, the closest class for its code."""
    if status.code == 0:
        return "", status.message
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Is(info.DESCRIPTOR) and detail.Unpack(info) and info.domain == DOMAIN:
            return info.reason, status.message
    code = next((c for c in grpc.StatusCode if c.value[0] == status.code),
                grpc.StatusCode.UNKNOWN)
    return _BY_CODE.get(code, errors.RemoteError).__name__, status.message


def code_name(status: status_pb2.Status) -> str:
    """The status code's name ("DEADLINE_EXCEEDED"...)."""
    return next((c.name for c in grpc.StatusCode if c.value[0] == status.code), "UNKNOWN")
