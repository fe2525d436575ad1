"""Steering a live run: what signals and requests from other terminals set (pause, stop,
jobs, priorities, quotas, retries), each acted on through the scheduler and the pool and
journaled. The driver's loop reads `Steering`; control.py talks to `LiveControls`."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from gitexec import events as ev
from gitexec import replan
from gitexec.errors import UserError
from gitexec.pool import Pool
from gitexec.scheduler import Refused, Scheduler
from gitexec.worker import AgentPlaces

# Signals this close together are one interrupt: a terminal's Ctrl-C reaches both git's
# wrapper and the engine, and git forwards it too.
SAME_INTERRUPT_S = 0.25


@dataclass
class Steering:
    """The flags the loop obeys."""

    paused: bool = False
    stop_requested: bool = False  # nothing new starts; running tickets finish
    force_stop: bool = False  # running agents are killed
    preserve_state: bool = True  # pending tickets stay pending (resumable), not cancelled
    reason: str | None = None  # why the run stops, when not asked to (budget, ...)
    interrupts: int = 0  # SIGINT/SIGTERM received (the run then exits 130)
    unannounced: bool = False  # an interrupt the loop has yet to say something about

    def request_stop(self, scheduler: Scheduler, *, force: bool) -> None:
        self.stop_requested = True
        scheduler.stopping = True
        if force:
            self.force_stop = True

    @contextlib.contextmanager
    def signals(self, scheduler: Scheduler) -> Iterator[None]:
        """While the run goes, the first SIGINT/SIGTERM stops it gracefully (state kept),
        a second forces it (from the main thread only: handlers must not print)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        last = [-SAME_INTERRUPT_S]

        def handle(signum: int, frame: FrameType | None) -> None:
            now = time.monotonic()
            if now - last[0] < SAME_INTERRUPT_S:
                return  # one Ctrl-C arrives twice under `git exec`: the terminal's, git's
            last[0] = now
            self.interrupts += 1
            self.request_stop(scheduler, force=self.interrupts > 1)
            self.unannounced = True

        saved = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in saved.items():
                signal.signal(s, h)

    def announcement(self) -> tuple[ev.Control, str] | None:
        """What to journal and say about an interrupt not yet announced."""
        if not self.unannounced:
            return None
        self.unannounced = False
        event = ev.Control(action="interrupt", force=self.force_stop, preserve_state=True)
        if self.force_stop:
            return event, "stopping now: killing running agents"
        return event, (
            "stopping: running tickets finish, nothing new starts, the run stays "
            "resumable (`git exec resume`); interrupt again to kill the agents"
        )


class LiveControls:
    """control.Controlled for one run."""

    def __init__(
        self,
        *,
        run_id: str,
        run_dir: Path,
        steering: Steering,
        scheduler: Scheduler,
        pool: Pool,
        places: AgentPlaces,
        emit: Callable[[ev.Event], object],
        agents: Collection[str],
        groups: Mapping[str, int],
        enqueue: Callable[[Sequence[tuple[str, str]]], list[str]],
        stop_attempts: Callable[[Sequence[str]], None],
        left_of: Callable[[str], tuple[str, str] | None],
    ) -> None:
        self.run_id = run_id
        self.run_dir = run_dir
        self.steering = steering
        self.scheduler = scheduler
        self.pool = pool
        self.places = places
        self.emit = emit
        self.agents = agents
        self.groups = groups
        self._enqueue = enqueue
        self._stop_attempts = stop_attempts
        self._left_of = left_of

    @property
    def jobs(self) -> int:
        return self.scheduler.jobs

    @property
    def paused(self) -> bool:
        return self.steering.paused

    def running(self) -> list[str]:
        return sorted(r.id for r in self.scheduler.running)

    def agent_names(self) -> list[str]:
        return list(self.agents)

    def pause(self) -> None:
        self.steering.paused = True
        self.emit(ev.Control(action="pause"))

    def unpause(self) -> None:
        self.steering.paused = False
        self.emit(ev.Control(action="resume"))

    def stop(self, *, force: bool, preserve_state: bool) -> None:
        self.steering.request_stop(self.scheduler, force=force)
        self.steering.preserve_state = preserve_state
        self.emit(ev.Control(action="stop", force=force, preserve_state=preserve_state))

    def set_jobs(self, jobs: int) -> None:
        old = self.scheduler.jobs
        self.scheduler.set_jobs(jobs)
        self.places.set_limit(jobs)
        self.pool.resize(jobs + 1)
        self.emit(ev.Control(action="adjust", jobs=jobs, previous=old))

    def set_quota(self, pool: str, max_parallel: int) -> None:
        self.scheduler.quotas.set_max_parallel(pool, max_parallel)
        self.emit(ev.Control(action="quota", pool=pool, max_parallel=max_parallel))

    def set_priority(self, tid: str, priority: int) -> None:
        with _refusals():
            replan.set_priority(self.scheduler, tid, priority)
        self.emit(ev.Control(action="priority", ticket=tid, priority=priority))

    def retry(self, tid: str, *, agent: str | None, keep_worktree: bool = False) -> list[str]:
        with _refusals():
            left = self._left_of(tid) if keep_worktree else None
            return replan.retry(
                self.scheduler, tid, agent=agent, keep_worktree=keep_worktree, left=left
            )

    def cancel(self, tids: Sequence[str], *, force: bool) -> list[str]:
        with _refusals():
            now, running = replan.cancel(self.scheduler, tids, force=force)
        self._stop_attempts(running)
        return [*now, *running]

    def enqueue(self, items: Sequence[tuple[str, str]]) -> list[str]:
        return self._enqueue(items)

    def set_resource(self, name: str, capacity: float) -> None:
        replan.limits(self.scheduler, resources={name: capacity}, agents={})
        self.emit(ev.Control(action="resource", resource=name, capacity=capacity))

    def set_agent_limit(self, name: str, max_parallel: int) -> None:
        if name not in self.agents:
            raise UserError(f"unknown agent {name!r} (agents: {', '.join(sorted(self.agents))})")
        replan.limits(self.scheduler, resources={}, agents={name: max_parallel})
        self.emit(ev.Control(action="agent", agent=name, max_parallel=max_parallel))

    def run_alone(self, group: int) -> list[str]:
        members = [t for t, g in self.groups.items() if g == group and t in self.scheduler.records]
        if not members:
            raise UserError(f"no group {group} in run {self.run_id}")
        changed = replan.make_sequential(self.scheduler, members)
        self.emit(ev.Control(action="fallback-sequential", group=group, tickets=tuple(changed)))
        return changed


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    try:
        yield
    except Refused as exc:
        raise UserError(str(exc)) from None
