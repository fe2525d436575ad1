"""The lanes slot resets share: side by side up to the count, alone when asked, in turn."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from gitexec.lanes import Lanes


def hold(lanes: Lanes, alone: bool, log: list[str], name: str, go: threading.Event) -> None:
    with lanes.taken(alone=alone):
        log.append(f"+{name}")
        go.wait(30)
        log.append(f"-{name}")


def started(name: str, log: list[str]) -> bool:
    return f"+{name}" in log


def wait_until(predicate: Callable[[], bool], limit_s: float = 30) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.005)


def test_lanes_hold_side_by_side_up_to_their_count() -> None:
    lanes, log, go = Lanes(2), list[str](), threading.Event()
    threads = [threading.Thread(target=hold, args=(lanes, False, log, n, go)) for n in "abc"]
    for t in threads:
        t.start()
    wait_until(lambda: len(log) == 2)
    time.sleep(0.05)
    assert sorted(log) == ["+a", "+b"]  # the third waits for a lane
    go.set()
    for t in threads:
        t.join()
    assert sorted(x for x in log if x.startswith("+")) == ["+a", "+b", "+c"]


def test_one_that_goes_alone_waits_for_the_lanes_and_keeps_later_ones_out() -> None:
    lanes, log = Lanes(2), list[str]()
    first, heavy, last = threading.Event(), threading.Event(), threading.Event()
    a = threading.Thread(target=hold, args=(lanes, False, log, "a", first))
    a.start()
    wait_until(lambda: started("a", log))
    h = threading.Thread(target=hold, args=(lanes, True, log, "h", heavy))
    h.start()
    time.sleep(0.05)
    # A lane is free, but a later arrival does not pass the one waiting to go alone.
    b = threading.Thread(target=hold, args=(lanes, False, log, "b", last))
    b.start()
    time.sleep(0.05)
    assert log == ["+a"]
    first.set()
    wait_until(lambda: started("h", log))
    time.sleep(0.05)
    assert log == ["+a", "-a", "+h"]  # alone: b still waits
    heavy.set()
    wait_until(lambda: started("b", log))
    assert log == ["+a", "-a", "+h", "-h", "+b"]
    with lanes.taken():  # a lane is still free beside b
        pass
    last.set()
    for t in (a, h, b):
        t.join()
