"""Shared-token authentication in gRPC metadata, and TLS credentials from config.auth."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from distbuild.config import AuthConfig
from distbuild.errors import ConfigError

TOKEN_KEY = "authorization"
_PREFIX = "Bearer "


class TokenAuthInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Refuses every call whose ``authorization: Bearer <token>`` is missing or wrong."""

    def __init__(self, token: str):
        self._expected = (_PREFIX + token).encode()

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        got = dict(details.invocation_metadata or ()).get(TOKEN_KEY)
        if got is None:
            return _refusal(continuation(details),
                            "missing auth token: this server requires the shared token "
                            "(set [auth] token in config.toml or DISTBUILD_TOKEN)")
        if not hmac.compare_digest(str(got).encode(), self._expected):
            return _refusal(continuation(details),
                            "wrong auth token: the token sent does not match the server's "
                            "(check [auth] token / DISTBUILD_TOKEN)")
        return continuation(details)


def _refusal(handler: Any, message: str) -> Any:
    def deny(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    if handler is None:
        return None
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny)
    return grpc.unary_unary_rpc_method_handler(deny)


class _TokenClientInterceptor(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[misc]
    grpc.StreamStreamClientInterceptor,  # type: ignore[misc]
):
    def __init__(self, token: str):
        self._pair = (TOKEN_KEY, _PREFIX + token)

    def _details(self, details: Any) -> Any:
        metadata = list(details.metadata or ())
        metadata.append(self._pair)
        return details._replace(metadata=metadata)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, it: Any) -> Any:
        return continuation(self._details(details), it)

    def intercept_stream_stream(self, continuation: Any, details: Any, it: Any) -> Any:
        return continuation(self._details(details), it)


def client_interceptors(auth: AuthConfig) -> list[Any]:
    return [_TokenClientInterceptor(auth.token)] if auth.token else []


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as e:
        raise ConfigError(f"[auth] {what} = {path!r}: {e}") from e


def server_credentials(auth: AuthConfig) -> grpc.ServerCredentials | None:
    """TLS server credentials when cert and key are configured, else None (plaintext)."""
    if not (auth.tls_cert or auth.tls_key):
        return None
    if not (auth.tls_cert and auth.tls_key):
        raise ConfigError("[auth] TLS needs both tls_cert and tls_key")
    key, cert = _read(auth.tls_key, "tls_key"), _read(auth.tls_cert, "tls_cert")
    return grpc.ssl_server_credentials([(key, cert)])


def channel_credentials(auth: AuthConfig) -> grpc.ChannelCredentials | None:
    """TLS channel credentials when a CA (or a cert) is configured, else None (plaintext)."""
    if auth.tls_ca:
        return grpc.ssl_channel_credentials(root_certificates=_read(auth.tls_ca, "tls_ca"))
    if auth.tls_cert:
        # A self-signed server certificate doubles as its own CA.
        return grpc.ssl_channel_credentials(root_certificates=_read(auth.tls_cert, "tls_cert"))
    return None
