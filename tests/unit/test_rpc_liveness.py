"""Silence from a server is noticed: a stream's first reply is bounded, a dead connection's
error says so (Unresponsive), and channels ping."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from distbuild.config import Config, SchedulerConfig
from distbuild.errors import Unavailable, Unresponsive
from distbuild.rpc.server import channel_options, make_channel
from distbuild.rpc.status import error_from_rpc
from distbuild.rpc.streams import first_within


@pytest.fixture
def silent_server() -> Iterator[tuple[str, threading.Event]]:
    """A real gRPC server whose stream method sends nothing until released."""
    release = threading.Event()

    def stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        release.wait(30)
        yield b"late"

    def answer(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        yield b"first"
        release.wait(30)

    handlers = grpc.method_handlers_generic_handler("t.Silent", {
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
        "Answer": grpc.unary_stream_rpc_method_handler(answer)})
    server = grpc.server(futures.ThreadPoolExecutor(4))
    server.add_generic_rpc_handlers((handlers,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", release
    release.set()
    server.stop(0)


def _call(addr: str, method: str) -> Any:
    channel = make_channel(addr, Config())
    return channel.unary_stream(f"/t.Silent/{method}")(b"", timeout=60)


def test_stream_without_a_first_reply_is_unresponsive(silent_server: tuple[str, Any]) -> None:
    """A stream whose first message does not come within the bound is cancelled with
    Unresponsive, after about that long (not the call's 60 s deadline)."""
    addr, _ = silent_server
    start = time.monotonic()
    with pytest.raises(Unresponsive, match="no answer within 1 s"):
        list(first_within(_call(addr, "Stream"), 1.0, "test server"))
    assert time.monotonic() - start < 30


def test_quiet_stream_after_its_first_reply_is_left_alone(silent_server: tuple[str, Any]
                                                         ) -> None:
    """Once the first message came, a quiet stream (a long job) is not cancelled by it."""
    addr, release = silent_server
    replies = []
    for message in first_within(_call(addr, "Answer"), 0.5, "test server"):
        replies.append(message)
        time.sleep(1.0)  # past the bound
        release.set()
    assert replies == [b"first"]


def test_silence_and_refusal_are_told_apart() -> None:
    """gRPC's errors for a connection that died of silence map to Unresponsive; a refused
    connection stays a plain Unavailable (a restart: worth waiting for)."""

    class Failed(grpc.RpcError, grpc.Call):  # type: ignore[misc]
        def __init__(self, code: grpc.StatusCode, details: str):
            self._code, self._details = code, details

        def code(self) -> grpc.StatusCode:
            return self._code

        def details(self) -> str:
            return self._details

        def trailing_metadata(self) -> tuple[()]:
            return ()

    silent = [(grpc.StatusCode.UNAVAILABLE, "Stream removed (ping timeout)"),
              (grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses; last error: "
               "UNKNOWN: ipv4:10.0.0.2:7000: connection attempt timed out before receiving "
               "SETTINGS frame"),
              (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")]
    for code, details in silent:
        assert type(error_from_rpc(Failed(code, details))) is Unresponsive, details
    refused = error_from_rpc(Failed(grpc.StatusCode.UNAVAILABLE, "failed to connect to all "
                                    "addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: "
                                    "Failed to connect to remote host: Connection refused"))
    assert type(refused) is Unavailable


def test_channels_ping_within_the_configured_time() -> None:
    """Keepalive pings go out, with or without calls, every half unresponsive_timeout, and
    are given up on after the other half."""
    cfg = Config(scheduler=SchedulerConfig(unresponsive_timeout=4.0))
    options = dict(channel_options(cfg))
    assert options["grpc.keepalive_time_ms"] == 2000
    assert options["grpc.keepalive_timeout_ms"] == options["grpc.http2.ping_timeout_ms"] == 2000
    assert options["grpc.keepalive_permit_without_calls"] == 1
    assert options["grpc.http2.max_pings_without_data"] == 0
