"""Server and channel construction: message limits, auth, TLS, liveness, in one place.

Liveness: a scheduler that is frozen (a hung process, a stopped VM) or behind a network black
hole answers nothing, and TCP alone notices that only after many minutes. Every channel
therefore pings its server (HTTP/2 keepalive) every ``unresponsive_timeout / 2`` seconds,
with or without calls in flight, and gives a connection up when a ping or the server's first
SETTINGS frame has not come back within the other half: every call on it then fails (as
``Unresponsive``, ``status.py``) within ``scheduler.unresponsive_timeout`` and the master
compiles locally. Servers accept pings that often (gRPC's default is to answer frequent pings
with GOAWAY). Reconnection backs off to at most that long, so a scheduler that comes back is
used again within seconds.
"""

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
# Clients may ping every half second, with or without calls, without being told to go away.
_SERVER_OPTIONS = [
    *_OPTIONS,
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 500),
    ("grpc.http2.max_ping_strikes", 0),
]


def channel_options(cfg: Config) -> list[tuple[str, int]]:
    """Message limits plus the keepalive that detects an unresponsive server (see above)."""
    half_ms = max(int(cfg.scheduler.unresponsive_timeout * 500), 250)
    return [
        *_OPTIONS,
        ("grpc.keepalive_time_ms", half_ms),
        ("grpc.keepalive_timeout_ms", half_ms),
        ("grpc.http2.ping_timeout_ms", half_ms),  # newer gRPC cores wait 1 min by default
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),  # a long job's stream is quiet, not dead
        ("grpc.min_reconnect_backoff_ms", 2 * half_ms),  # also the connect timeout
        ("grpc.max_reconnect_backoff_ms", 2 * half_ms),
    ]


def make_server(cfg: Config, max_workers: int = 64) -> grpc.Server:
    """A thread-pool gRPC server that enforces the configured token."""
    interceptors = [TokenAuthInterceptor(cfg.auth.token)] if cfg.auth.token else []
    return grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                       interceptors=interceptors, options=_SERVER_OPTIONS,
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
    options = channel_options(cfg)
    channel = (grpc.secure_channel(addr, creds, options=options) if creds is not None
               else grpc.insecure_channel(addr, options=options))
    interceptors = client_interceptors(cfg.auth)
    return grpc.intercept_channel(channel, *interceptors) if interceptors else channel
