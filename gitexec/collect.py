"""Collecting results produced on other machines (`git exec collect`, scale-out over CI).

A second way to drive a run: instead of starting agents, the engine is handed the
results `run-ticket` reported, in plan order, and they go through the same scheduler and
merge queue as a local run (merge rules, gates, status write-back, the journal). The run
stays resumable (`stopped`) until every ticket has ended, so the next wave's collect
continues the same integration branch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gitexec import events as ev
from gitexec.engine import Engine
from gitexec.runmetrics import metrics
from gitexec.runstate import RunState, RunStatus
from gitexec.tickets import TicketState


@dataclass(frozen=True)
class RemoteResult:
    """What `git exec run-ticket` reported for one ticket."""

    ticket: str
    status: TicketState
    base: str
    commit: str | None
    attempts: int = 1
    agent: str | None = None
    duration_s: float = 0.0
    reason: str | None = None


def collect(engine: Engine, results: Sequence[RemoteResult]) -> RunState:
    """Merge `results` into the run of `engine` (built with offline=True), in plan order."""
    assert engine.offline, "an engine collecting results is built with offline=True"
    with engine.session():
        order = {tid: n for n, tid in enumerate(engine.spec.plan.order())}
        for result in sorted(results, key=lambda r: order.get(r.ticket, len(order))):
            _collect_one(engine, result)
            engine.settle()
        for tid in engine.merges.take_buffered():
            engine.scheduler.stopped(tid, "waiting for its turn to merge", keep_result=True)
        engine.merges.record_unmerged()
        state = engine.state
        counts = metrics(state)
        left = sorted(t for t, ts in state.tickets.items() if not ts.status.terminal)
        if left:
            final = RunStatus.STOPPED
        elif counts["completed"] == counts["total"]:
            final = RunStatus.COMPLETED
        else:
            final = RunStatus.FAILED
        engine.emit(ev.RunFinished(state=final, head=engine.merges.head, waiting_for=tuple(left)))
    return engine.state


def _collect_one(engine: Engine, r: RemoteResult) -> None:
    ts = engine.state.tickets.get(r.ticket)
    if ts is None or ts.status.terminal or r.ticket not in engine.tickets:
        return  # not in this run, or collected already
    scheduler = engine.scheduler
    known = r.agent if r.agent and r.agent in engine.config.agents else None
    agent = known or scheduler[r.ticket].agent
    attempts = max(1, r.attempts)
    engine.emit(
        ev.TicketCollected(
            ticket=r.ticket,
            agent=agent,
            attempts=attempts,
            base=r.base,
            commit=r.commit,
            duration_s=r.duration_s,
        )
    )
    scheduler.collected(r.ticket, agent, attempts)
    if r.status is not TicketState.COMPLETED or r.commit is None:
        state = r.status if r.status.terminal else TicketState.FAILED
        scheduler.finish(r.ticket, state, r.reason or f"{state.value} on its runner")
        return
    tickets = engine.state.tickets
    missing = [
        d
        for d in engine.tickets[r.ticket].depends_on
        if d in tickets and tickets[d].status is not TicketState.COMPLETED
    ]
    if missing:
        scheduler.finish(
            r.ticket,
            TicketState.BLOCKED,
            f"ran before its dependencies were merged: {', '.join(missing)}",
        )
        return
    engine.apply(engine.merges.submit(r.ticket, r.base, r.commit))
