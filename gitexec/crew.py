"""The attempts a run has going: one worker thread each, and how they are stopped.

The engine starts an attempt with `start`, hears of its end through `done` (called on the
worker's thread; the engine queues it for the main thread), and takes it back with
`finished`. Cancelling only asks: the worker stops its agent and reports as usual.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence

from gitexec import agents
from gitexec.journal import JournalClosed
from gitexec.worker import AgentPlaces, Job, Outcome, WorkerContext, work


class Crew:
    """The running attempts by ticket id (main thread only, except each worker's `done`)."""

    def __init__(self, done: Callable[[Job, Outcome], None], places: AgentPlaces) -> None:
        self._done = done
        self._places = places
        self._jobs: dict[str, Job] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._cancelled: set[str] = set()  # cancelled by request (not by a stop)

    def __bool__(self) -> bool:
        return bool(self._jobs)

    def __iter__(self) -> Iterator[Job]:
        return iter(list(self._jobs.values()))

    def start(self, ctx: WorkerContext, job: Job) -> None:
        tid = job.ticket.id
        self._jobs[tid] = job
        self._places.claim(job.place, *job.claim)
        thread = threading.Thread(
            target=self._work, args=(ctx, job), name=f"gitexec-{tid}", daemon=True
        )
        self._threads[tid] = thread
        thread.start()

    def _work(self, ctx: WorkerContext, job: Job) -> None:
        # JournalClosed: the engine died of an error and stopped listening.
        with contextlib.suppress(JournalClosed):
            self._done(job, work(ctx, job))

    def finished(self, tid: str) -> bool:
        """The attempt on `tid` has reported; whether it was cancelled by request."""
        self._threads.pop(tid, None)
        self._places.finished(self._jobs.pop(tid).place)
        cancelled = tid in self._cancelled
        self._cancelled.discard(tid)
        return cancelled

    def cancel(self, tids: Sequence[str]) -> None:
        """Cancelled while running: their agents stop, then they end cancelled."""
        for tid in tids:
            self._cancelled.add(tid)
            self._jobs[tid].cancel.set()

    def stop_all(self) -> None:
        """A stop: every agent stops (their tickets are not cancelled)."""
        for job in self._jobs.values():
            job.cancel.set()

    def abandon(self) -> None:
        """The engine is failing: stop every agent and wait (bounded) for its thread."""
        self.stop_all()
        deadline = time.monotonic() + agents.KILL_GRACE_S + 5
        for thread in list(self._threads.values()):
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
