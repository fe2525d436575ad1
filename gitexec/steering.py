"""Steering a live run: what signals and requests from other terminals set (pause, stop,
jobs, priorities, quotas, retries), each acted on through the scheduler and the pool and
journaled. The driver's loop reads `Steering`; control.py talks to `LiveControls`."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from gitexec import events as ev
from gitexec.errors import UserError
from gitexec.pool import Pool
from gitexec.scheduler import Refused, Scheduler
from gitexec.worker import AgentPlaces


@dataclass
class Steering:
    """The flags the loop obeys."""

    paused: bool = False
    stop_requested: bool = False  # nothing new starts; running tickets finish
    force_stop: bool = False  # running agents are killed
    preserve_state: bool = True  # pending tickets stay pending (resumable), not cancelled
    reason: str | None = None  # why the run stops, when not asked to (budget, ...)

    def request_stop(self, scheduler: Scheduler, *, force: bool) -> None:
        self.stop_requested = True
        scheduler.stopping = True
        if force:
            self.force_stop = True


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
        self.scheduler.set_quota(pool, max_parallel)
        self.emit(ev.Control(action="quota", pool=pool, max_parallel=max_parallel))

    def set_priority(self, tid: str, priority: int) -> None:
        with _refusals():
            self.scheduler.set_priority(tid, priority)
        self.emit(ev.Control(action="priority", ticket=tid, priority=priority))

    def retry(self, tid: str, *, agent: str | None) -> list[str]:
        with _refusals():
            return self.scheduler.retry(tid, agent=agent)

    def run_alone(self, group: int) -> list[str]:
        members = [t for t, g in self.groups.items() if g == group and t in self.scheduler.records]
        if not members:
            raise UserError(f"no group {group} in run {self.run_id}")
        changed = self.scheduler.make_sequential(members)
        self.emit(ev.Control(action="fallback-sequential", group=group, tickets=tuple(changed)))
        return changed


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    try:
        yield
    except Refused as exc:
        raise UserError(str(exc)) from None
