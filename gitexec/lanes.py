"""A few lanes shared by threads in turn: one takes a lane, or all of them to go alone."""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Iterator


class Lanes:
    """At most `count` holders at once; one that goes `alone` holds every lane. Turns are
    taken in order of arrival, so no one waits for ever behind later arrivals."""

    def __init__(self, count: int) -> None:
        self.count = max(1, count)
        self._used = 0
        self._queue: collections.deque[object] = collections.deque()
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def taken(self, *, alone: bool = False) -> Iterator[None]:
        want = self.count if alone else 1
        me = object()
        with self._changed:
            self._queue.append(me)
            self._changed.wait_for(lambda: self._queue[0] is me and self._used + want <= self.count)
            self._queue.popleft()
            self._used += want
            self._changed.notify_all()  # the next in line may fit beside this one
        try:
            yield
        finally:
            with self._changed:
                self._used -= want
                self._changed.notify_all()
