"""In-place runs hold their output paths: a second run of the same outputs waits."""

from __future__ import annotations

import threading
import time

from distbuild.inplace import OutputLocks


def test_overlapping_holds_wait_and_disjoint_ones_do_not() -> None:
    """A hold on paths another hold has (in any spelling) waits until it is released; a hold
    on other paths proceeds at once."""
    locks = OutputLocks()
    order: list[str] = []
    entered = threading.Event()
    release = threading.Event()

    def first() -> None:
        with locks.hold(["/t/deps/liba.rlib", "/t/deps/a.d"]):
            order.append("first in")
            entered.set()
            release.wait(10)
            order.append("first out")

    def second() -> None:
        with locks.hold(["/t/deps/../deps/a.d"]):
            order.append("second in")

    t1 = threading.Thread(target=first)
    t1.start()
    assert entered.wait(10)
    t2 = threading.Thread(target=second)
    t2.start()
    with locks.hold(["/t/deps/libb.rlib"]):  # disjoint: not blocked
        order.append("other")
    time.sleep(0.2)  # give the second hold every chance to (wrongly) get in
    assert "second in" not in order
    release.set()
    t1.join(10)
    t2.join(10)
    assert order == ["first in", "other", "first out", "second in"]
    assert locks.held() == frozenset()
