"""Changing a run's plan while it goes, and taking it over after a crash: retry,
reassign, cancel, add tickets, limits of resources and agents, and `restore` from a
replayed journal. Pure, like the scheduler these functions act on; every change that a
resumed run must know is emitted as an event.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from gitexec import events as ev
from gitexec.scheduler import Phase, Record, Refused, Scheduler
from gitexec.tickets import Ticket, TicketState


class Replayed(Protocol):
    """A ticket as the journal left it (ticketrun.TicketRun)."""

    @property
    def status(self) -> TicketState: ...
    @property
    def agent(self) -> str: ...
    @property
    def agents_tried(self) -> list[str]: ...
    @property
    def priority(self) -> int: ...
    @property
    def attempts(self) -> int: ...
    @property
    def failures(self) -> int: ...
    @property
    def reruns(self) -> int: ...
    @property
    def sequential(self) -> bool: ...
    @property
    def conflicts(self) -> list[str]: ...
    @property
    def conflict_text(self) -> dict[str, str]: ...
    @property
    def awaiting_gate(self) -> bool: ...
    @property
    def result_ready(self) -> bool: ...
    @property
    def commit(self) -> str | None: ...
    @property
    def base(self) -> str | None: ...
    @property
    def left(self) -> tuple[str, str] | None: ...
    @property
    def keep_worktree(self) -> bool: ...


def set_priority(s: Scheduler, tid: str, priority: int) -> None:
    s.known(tid).priority = priority
    s.reorder()


def make_sequential(s: Scheduler, tids: Iterable[str]) -> list[str]:
    """Run these tickets one at a time (those not yet completed); returns them."""
    changed = []
    for tid in tids:
        r = s.known(tid)
        if r.phase is not Phase.DONE or r.outcome in (TicketState.FAILED, TicketState.CONFLICT):
            r.sequential = True
            changed.append(tid)
    return changed


def retry(
    s: Scheduler,
    tid: str,
    *,
    agent: str | None = None,
    keep_worktree: bool = False,
    left: tuple[str, str] | None = None,
) -> list[str]:
    """Put a failed ticket (and the dependents it blocked) back in the queue; or, for a
    pending ticket and an agent, reassign it. With `keep_worktree`, the next attempt
    starts from what the failed one `left` (base, commit). Returns the tickets requeued."""
    r = s.known(tid)
    if agent is not None and r.phase is Phase.PENDING:
        r.agent = agent
        if agent not in r.agents_tried:
            r.agents_tried.append(agent)
        s.emit(ev.TicketRequeued(ticket=tid, agent=agent, reason="reassigned"))
        return [tid]
    retriable = (TicketState.FAILED, TicketState.CONFLICT, TicketState.CANCELLED)
    if r.phase is not Phase.DONE or r.outcome not in retriable:
        state = r.outcome.value if r.outcome is not None else r.phase.value
        raise Refused(
            f"{tid} is {state}; only failed, conflict or cancelled tickets can be "
            "retried" + (" (or pending ones reassigned)" if agent else "")
        )
    if keep_worktree and left is None:
        raise Refused(f"{tid}: no failed attempt of it left a worktree to keep")
    requeued = [tid]
    stack = [tid]
    while stack:
        for dep in s.dependents[stack.pop()]:
            if s.records[dep].outcome is TicketState.BLOCKED:
                requeued.append(dep)
                stack.append(dep)
    for t in requeued:
        x = s.records[t]
        if t == tid and agent is not None:
            x.agent = agent
        keep = keep_worktree and t == tid
        x.phase = Phase.PENDING
        x.outcome = None
        x.failures = x.reruns = x.attempts = 0
        x.not_before = 0.0
        x.start_from = left if keep else None
        s.emit(
            ev.TicketRequeued(
                ticket=t,
                agent=x.agent,
                reset_attempts=True,
                keep_worktree=keep,
                reason="retry requested" if t == tid else f"unblocked by retry of {tid}",
            )
        )
    s.reorder()
    return requeued


def cancel(s: Scheduler, tids: Sequence[str], *, force: bool) -> tuple[list[str], list[str]]:
    """Cancel pending tickets (their dependents are blocked, naming the cancelled one);
    running ones only with `force`: (cancelled now, running ones the caller must stop)."""
    now, stop = [], []
    for tid in tids:
        r = s.known(tid)
        if r.phase is Phase.PENDING:
            now.append(tid)
        elif r.phase is Phase.RUNNING and force:
            stop.append(tid)
        elif r.phase is Phase.RUNNING:
            raise Refused(f"{tid} is running; `cancel --force` stops its agent")
        else:
            state = r.outcome.value if r.outcome is not None else "merging"
            raise Refused(f"{tid} is {state}: it cannot be cancelled")
    for tid in now:
        s.finish(tid, TicketState.CANCELLED, "cancelled")
    return now, stop


def add(
    s: Scheduler,
    tickets: Sequence[Ticket],
    *,
    ranks: Mapping[str, float],
    group: int,
    done: Iterable[str] = (),
) -> None:
    """Tickets enqueued into the run: they wait for their dependencies like the others
    (`done`: dependencies completed before the run, which count as merged)."""
    finished = set(done)
    for t in tickets:
        agent = t.agent or s.default_agent
        r = Record(
            ticket=t,
            agent=agent,
            priority=t.priority,
            rank=ranks.get(t.id, 0.0),
            group=group,
            agents_tried=[agent],
        )
        s.records[t.id] = r
        s.dependents.setdefault(t.id, [])
    for t in tickets:
        r = s.records[t.id]
        for dep in t.depends_on:
            if dep in finished:
                continue
            s.dependents.setdefault(dep, []).append(t.id)
            if s.records[dep].outcome is not TicketState.COMPLETED:
                r.deps_left += 1
    s.reorder()


def restore(s: Scheduler, tickets: Mapping[str, Replayed]) -> None:
    """Take over a replayed run: what ended stays ended, merged work unlocks its
    dependents, merges waiting for their gate stay with the merge queue, finished
    results merge (without running again) once their dependencies have, and everything
    else waits to run."""
    for tid, t in tickets.items():
        r = s.records.get(tid)
        if r is None:
            continue
        r.agent = t.agent or r.agent
        r.priority = t.priority
        r.attempts = t.attempts
        r.failures = t.failures
        r.reruns = t.reruns
        r.sequential = t.sequential
        r.agents_tried = list(dict.fromkeys([*t.agents_tried, r.agent]))
        r.conflicts = tuple(t.conflicts) if t.reruns or t.sequential else ()
        r.conflict_hunks = dict(t.conflict_text) if r.conflicts else {}
        r.start_from = t.left if t.keep_worktree else None
        if t.status.terminal:
            r.phase = Phase.DONE
            r.outcome = t.status
        elif t.awaiting_gate:
            r.phase = Phase.MERGING
        else:
            r.phase = Phase.PENDING
            if t.result_ready and t.commit and t.base:
                r.kept = (t.base, t.commit)
    for tid, r in s.records.items():
        if r.outcome is TicketState.COMPLETED:
            for dep in s.dependents[tid]:
                s.records[dep].deps_left -= 1
    s.reorder()


def limits(s: Scheduler, *, resources: Mapping[str, float], agents: Mapping[str, int]) -> None:
    """Capacities and agent limits set live (`adjust --resource`, `--agent`)."""
    s.capacities.update(resources)
    s.agent_limits.update(agents)
