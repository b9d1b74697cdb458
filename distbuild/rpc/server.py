"""Server and channel construction: message limits, auth, TLS, in one place."""

from __future__ import annotations

from concurrent import futures

import grpc

from distbuild.config import Config
from distbuild.errors import ConfigError
from distbuild.rpc.auth import (
    TokenAuthInterceptor,
    channel_credentials,
    client_interceptors,
    server_credentials,
)

MAX_MESSAGE = 64 << 20
BATCH_LIMIT = 3 << 20  # blobs above this go through ByteStream, batches stay under it
STREAM_CHUNK = 1 << 20

_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
]


def make_server(cfg: Config, max_workers: int = 64) -> grpc.Server:
    """A thread-pool gRPC server that enforces the configured token."""
    interceptors = [TokenAuthInterceptor(cfg.auth.token)] if cfg.auth.token else []
    return grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                       interceptors=interceptors, options=_OPTIONS,
                       maximum_concurrent_rpcs=None)


def bind(server: grpc.Server, addr: str, cfg: Config) -> int:
    """Listen on ``addr`` (host:port, port 0 = any); returns the port. TLS when configured."""
    creds = server_credentials(cfg.auth)
    try:
        port = (server.add_secure_port(addr, creds) if creds is not None
                else server.add_insecure_port(addr))
    except RuntimeError as e:
        raise ConfigError(f"cannot listen on {addr}: {e}") from e
    if port == 0:
        raise ConfigError(f"cannot listen on {addr} (address in use?)")
    return port


def make_channel(addr: str, cfg: Config) -> grpc.Channel:
    """A channel to ``addr`` carrying the configured token, over TLS when configured."""
    creds = channel_credentials(cfg.auth)
    channel = (grpc.secure_channel(addr, creds, options=_OPTIONS) if creds is not None
               else grpc.insecure_channel(addr, options=_OPTIONS))
    interceptors = client_interceptors(cfg.auth)
    return grpc.intercept_channel(channel, *interceptors) if interceptors else channel
