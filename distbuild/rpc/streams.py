"""A bound on how long a server stream may stay silent before its first message.

Keepalive (``server.py``) notices a dead or silent connection, but not a server whose
transport answers while the handler behind it never starts (a stuck thread pool, a job queue
that takes no submissions). A stream that must open with a message (the scheduler's Execute
and WaitExecution send the job's state at once) is cancelled if that message does not come
within ``seconds``, and the caller gets ``Unresponsive``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, TypeVar

import grpc

from distbuild.errors import Unresponsive

T = TypeVar("T")


def first_within(call: Any, seconds: float, what: str) -> Iterator[Any]:
    """Iterate ``call`` (a server-stream call: an iterator with ``cancel()``), cancelling it
    with ``Unresponsive`` if its first message takes longer than ``seconds``."""
    silent = threading.Event()

    def give_up() -> None:
        silent.set()
        call.cancel()

    timer = threading.Timer(seconds, give_up)
    timer.daemon = True
    timer.start()
    try:
        for message in call:
            timer.cancel()
            yield message
    except grpc.RpcError as e:
        if silent.is_set():
            raise Unresponsive(f"{what}: no answer within {seconds:.0f} s") from e
        raise
    finally:
        timer.cancel()
