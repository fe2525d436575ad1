"""A run's state, rebuilt by replaying its journal; the engine applies the same events live.

One `apply` serves the running engine, `status`, `agents`, reports and `resume`, so what
they show can never drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from gitexec import events as ev
from gitexec.dialects import Status
from gitexec.events import Event
from gitexec.events import RunStatus as RunStatus  # re-exported: readers know it from here
from gitexec.journal import JOURNAL, load_events, lock_holder
from gitexec.ticketrun import QuotaView
from gitexec.ticketrun import TicketRun as TicketRun  # re-exported: readers know it from here
from gitexec.ticketrun import iso as iso
from gitexec.tickets import ConflictStep, TicketState

RUNS_DIR = "runs"


ACTIVE = (TicketState.RUNNING, TicketState.VALIDATING, TicketState.MERGING)


@dataclass
class RunState:
    run_id: str
    base: str = ""
    base_rev: str = ""
    integration: str = ""
    head: str = ""
    head_before: str | None = None  # where the last journaled move of the branch started
    # Heads the journal named before `head`: the engine moves the branch after journaling
    # (a pass's merges at once), so a crash can leave it at any of them.
    earlier_heads: set[str] = field(default_factory=set)
    jobs: int = 1
    strategy: str = ""
    merge_order: str = "completion"
    status: RunStatus = RunStatus.RUNNING
    started_at: float = 0.0
    finished_at: float | None = None
    last_event_at: float = 0.0
    tickets: dict[str, TicketRun] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    groups: list[list[str]] = field(default_factory=list)
    critical_path: list[str] = field(default_factory=list)
    conflicts_seen: int = 0
    conflicts_resolved: int = 0
    conflict_resolution_s: float = 0.0
    merge_s: float = 0.0
    gate_runs: int = 0
    gate_runs_passed: int = 0
    gate_failures: int = 0
    pid: int | None = None
    paused: bool = False
    stopping: bool = False
    warnings: list[str] = field(default_factory=list)
    overlaps: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    recorded: dict[str, str] = field(default_factory=dict)  # status committed for unmerged
    validation: dict[str, Any] | None = None  # `run --validate`: {"ok": ..., "problems": [...]}
    gating: list[str] = field(default_factory=list)  # tickets of the last gate started
    stop_reason: str | None = None
    budget_usd: float | None = None
    ticket_budget_usd: float | None = None
    budget_hard: bool = False
    quotas: dict[str, QuotaView] = field(default_factory=dict)
    resources: dict[str, float] = field(default_factory=dict)  # capacities set live
    agent_limits: dict[str, int] = field(default_factory=dict)  # max_parallel set live
    quota_limits: dict[str, int] = field(default_factory=dict)  # pools' max_parallel set live
    enqueued: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (file, text)
    problems: list[str] = field(default_factory=list)  # journal lines that were skipped
    samples: dict[str, ev.AgentSample] = field(default_factory=dict)  # running agents' latest
    gate_s: float = 0.0  # integration gates running, in all
    gate_only_s: float = 0.0  # ... while no ticket held a slot (nothing else could run)
    _conflict_started: dict[str, float] = field(default_factory=dict)
    _gate_since: float | None = None  # a gate is running since then
    _in_slots: set[str] = field(default_factory=set)  # tickets holding a slot
    _alone_since: float | None = None  # only a gate has been running since then

    # --- replay ----------------------------------------------------------------------------

    def apply(self, e: Event) -> None:
        self.last_event_at = max(self.last_event_at, e.t)
        if isinstance(e, ev.TicketEnqueued) and e.ticket not in self.tickets:
            self.tickets[e.ticket] = _ticket_run(e.ticket, e.info)
            self.enqueued[e.ticket] = (e.file, e.text)
            return
        if isinstance(e, ev.TicketEvent):
            on_ticket = _TICKET_HANDLERS.get(type(e))
            t = self.tickets.get(e.ticket)
            if t is None:
                self.problems.append(f"event {e.seq} ({e.kind}) names unknown ticket {e.ticket!r}")
            elif on_ticket is not None:
                on_ticket(self, t, e)
        else:
            on_run = _RUN_HANDLERS.get(type(e))
            if on_run is not None:
                on_run(self, e)
        self._time_gates(e)

    def _time_gates(self, e: Event) -> None:
        """Time gates, and the part of it when only a gate ran (nothing held a slot)."""
        if isinstance(e, ev.TicketDispatched):
            self._in_slots.add(e.ticket)
        elif isinstance(e, ev.WorkDone):
            self._in_slots.discard(e.ticket)
        elif isinstance(e, ev.GateStarted):
            self._gate_since = e.t
        elif isinstance(e, (ev.GatePassed, ev.GateFailed)) and self._gate_since is not None:
            self.gate_s += max(0.0, e.t - self._gate_since)
            self._gate_since = None
        elif isinstance(e, ev.RunResumed):  # what a crash cut off never reported back
            self._in_slots.clear()
            self._gate_since = self._alone_since = None
        alone = self._gate_since is not None and not self._in_slots
        if alone and self._alone_since is None:
            self._alone_since = e.t
        elif not alone and self._alone_since is not None:
            self.gate_only_s += max(0.0, e.t - self._alone_since)
            self._alone_since = None

    # --- queries ---------------------------------------------------------------------------

    def active_overlaps(self) -> dict[tuple[str, str], list[str]]:
        """Overlaps whose first ticket is still in flight (the others settle by merging)."""
        return {
            pair: paths
            for pair, paths in self.overlaps.items()
            if pair[0] in self.tickets and self.tickets[pair[0]].status in ACTIVE
        }

    def gate_times(self, now: float | None = None) -> tuple[float, float]:
        """Seconds gates ran, and of those while no ticket held a slot; a gate running at
        `now` counts up to `now`."""
        gate_s, gate_only_s = self.gate_s, self.gate_only_s
        if now is not None and not self.finished:
            if self._gate_since is not None:
                gate_s += max(0.0, now - self._gate_since)
            if self._alone_since is not None:
                gate_only_s += max(0.0, now - self._alone_since)
        return gate_s, gate_only_s

    @property
    def finished(self) -> bool:
        return self.status in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.STOPPED)

    def wall_s(self, now: float | None = None) -> float:
        end = self.finished_at or now or self.last_event_at
        return max(0.0, end - self.started_at) if self.started_at else 0.0


# --- event handlers ------------------------------------------------------------------------

# Each handler is registered for the event type it reads; ticket handlers also get the
# ticket the event names (events naming an unknown ticket are noted as problems).
_RUN_HANDLERS: dict[type[Event], Callable[[RunState, Any], None]] = {}
_TICKET_HANDLERS: dict[type[Event], Callable[[RunState, TicketRun, Any], None]] = {}
_R = TypeVar("_R", bound=Callable[["RunState", Any], None])
_T = TypeVar("_T", bound=Callable[["RunState", "TicketRun", Any], None])


def _on_run(kind: type[Event]) -> Callable[[_R], _R]:
    def register(handler: _R) -> _R:
        _RUN_HANDLERS[kind] = handler
        return handler

    return register


def _on_ticket(kind: type[ev.TicketEvent]) -> Callable[[_T], _T]:
    def register(handler: _T) -> _T:
        _TICKET_HANDLERS[kind] = handler
        return handler

    return register


@_on_run(ev.RunStarted)
def _run_started(s: RunState, e: ev.RunStarted) -> None:
    s.base = e.base
    s.base_rev = e.base_rev
    s.integration = e.integration
    s.head = e.head
    s.jobs = e.jobs
    s.strategy = e.strategy
    s.merge_order = e.merge_order
    s.started_at = e.t
    s.pid = e.pid
    s.skipped = list(e.skipped)
    s.groups = [list(g) for g in e.groups]
    s.critical_path = list(e.critical_path)
    s.budget_usd = e.budget_usd
    s.ticket_budget_usd = e.ticket_budget_usd
    s.budget_hard = e.budget_hard
    s.status = RunStatus.RUNNING
    for tid, info in e.tickets.items():
        s.tickets[tid] = _ticket_run(tid, info)


def _ticket_run(tid: str, info: ev.TicketInfo) -> TicketRun:
    return TicketRun(
        id=tid,
        title=info.title,
        file=info.file,
        agent=info.agent,
        depends_on=info.depends_on,
        group=info.group,
        estimate_s=info.estimate_s,
        priority=info.priority,
        paths=info.paths,
        budget_usd=info.budget_usd,
        agents_tried=[info.agent],
    )


@_on_run(ev.RunResumed)
def _run_resumed(s: RunState, e: ev.RunResumed) -> None:
    s.status = RunStatus.RUNNING
    s.finished_at = None
    s.pid = e.pid
    s.stopping = False
    s.paused = False  # a resumed run starts dispatching again
    s.jobs = e.jobs
    s.head = e.head
    for tid in e.reset:
        t = s.tickets.get(tid)
        if t is not None and not t.status.terminal:
            t.status = TicketState.PENDING
            t.slot = None
            t.pid = t.pgid = None
            t.agent_started_at = None


@_on_ticket(ev.TicketDispatched)
def _dispatched(s: RunState, t: TicketRun, e: ev.TicketDispatched) -> None:
    if t.throttled_at is not None:
        t.throttled_s += max(0.0, e.t - t.throttled_at)
        t.throttled_at = t.throttled_until = None
    t.status = TicketState.RUNNING
    t.attempts = e.attempt
    t.agent = e.agent
    t.slot = t.last_slot = e.slot
    t.base = e.base
    t.attempt_started_at = e.t
    t.result_ready = False
    t.commit = None
    if t.started_at is None:
        t.started_at = e.t
    t.sequential = e.sequential or t.sequential


@_on_ticket(ev.AttemptWaiting)
def _waiting(s: RunState, t: TicketRun, e: ev.AttemptWaiting) -> None:
    t.waiting_for_place = True


@_on_ticket(ev.AgentStarted)
def _agent_started(s: RunState, t: TicketRun, e: ev.AgentStarted) -> None:
    t.pid, t.pgid = e.pid, e.pgid
    t.agent_started_at = e.t
    t.waiting_for_place = False


@_on_ticket(ev.AgentExited)
def _agent_exited(s: RunState, t: TicketRun, e: ev.AgentExited) -> None:
    t.waiting_for_place = False
    t.agent_s += e.duration_s
    t.pid = t.pgid = None
    t.agent_started_at = None
    s.samples.pop(t.id, None)


@_on_ticket(ev.AgentSample)
def _sample(s: RunState, t: TicketRun, e: ev.AgentSample) -> None:
    s.samples[t.id] = e


@_on_ticket(ev.AgentReported)
def _reported(s: RunState, t: TicketRun, e: ev.AgentReported) -> None:
    t.live_usage = t.live_cost_usd = None
    if e.usage is not None:
        t.usage = e.usage if t.usage is None else t.usage + e.usage
    if e.cost_usd is not None:
        t.cost_usd = (t.cost_usd or 0.0) + e.cost_usd
    elif e.usage is not None and (e.usage.input_tokens or e.usage.output_tokens):
        t.cost_unknown = True
    t.model = e.model or t.model
    if e.session_id and e.status is not Status.THROTTLED:  # a throttled one saved nothing
        t.session_id, t.session_agent = e.session_id, t.agent
    t.summary = e.summary or t.summary
    t.cpu_s += e.cpu_s or 0.0
    if e.peak_rss_mb is not None:
        t.peak_rss_mb = max(t.peak_rss_mb or 0.0, e.peak_rss_mb)


@_on_ticket(ev.AgentUsage)
def _live_usage(s: RunState, t: TicketRun, e: ev.AgentUsage) -> None:
    t.live_usage, t.live_cost_usd = e.usage, e.cost_usd


@_on_ticket(ev.AttemptFailed)
def _attempt_failed(s: RunState, t: TicketRun, e: ev.AttemptFailed) -> None:
    t.failed_attempts += 1
    t.failures += 1
    if e.kept and e.base:
        t.left = (e.base, e.kept)


@_on_ticket(ev.TicketThrottled)
def _throttled(s: RunState, t: TicketRun, e: ev.TicketThrottled) -> None:
    t.status = TicketState.THROTTLED
    t.reason = e.reason
    t.throttles += 1
    t.throttled_at = e.t
    t.throttled_until = e.t + e.delay_s
    t.slot = None
    t.result_ready = False


@_on_ticket(ev.TicketCommitted)
def _committed(s: RunState, t: TicketRun, e: ev.TicketCommitted) -> None:
    t.commit = e.commit
    if e.empty:
        t.note = "no changes"


@_on_ticket(ev.TicketValidating)
def _validating(s: RunState, t: TicketRun, e: ev.TicketValidating) -> None:
    t.status = TicketState.VALIDATING


@_on_ticket(ev.TicketValidated)
def _validated(s: RunState, t: TicketRun, e: ev.TicketValidated) -> None:
    t.agent_s += e.duration_s


@_on_ticket(ev.WorkDone)
def _work_done(s: RunState, t: TicketRun, e: ev.WorkDone) -> None:
    t.slot_s += e.slot_s
    t.wait_s += e.wait_s
    t.slot = None
    t.result_ready = e.ok and t.commit is not None


@_on_ticket(ev.TicketCollected)
def _collected(s: RunState, t: TicketRun, e: ev.TicketCollected) -> None:
    t.status = TicketState.RUNNING
    t.agent = e.agent
    t.attempts = e.attempts
    t.base = e.base
    t.commit = e.commit
    t.agent_s += e.duration_s
    t.slot_s += e.duration_s
    if t.started_at is None:
        t.started_at = e.t
    t.result_ready = e.commit is not None
    if e.commit is not None and e.commit == e.base:
        t.note = "no changes"


@_on_ticket(ev.TicketMerging)
def _merging(s: RunState, t: TicketRun, e: ev.TicketMerging) -> None:
    t.status = TicketState.MERGING
    t.commit = e.commit


@_on_ticket(ev.TicketMerged)
def _merged(s: RunState, t: TicketRun, e: ev.TicketMerged) -> None:
    _moved(s, e.previous, e.head)
    s.merge_s += e.merge_s
    t.result_ready = False
    t.merge_commit = e.head
    t.previous_head = e.previous
    t.reason = None
    t.finished_at = e.t  # what its merge commit records, gated or not
    if e.commit is not None:
        t.commit = e.commit
    if e.awaiting_gate:
        t.awaiting_gate = True
        return
    t.status = TicketState.COMPLETED
    if t.id in s._conflict_started:
        s.conflicts_resolved += 1
        s.conflict_resolution_s += e.t - s._conflict_started.pop(t.id)
    if e.resolved:
        s.conflicts_seen += 1
        s.conflicts_resolved += 1
        t.note = "conflicts resolved by rules: " + ", ".join(p for p, _ in e.resolved)


@_on_ticket(ev.Conflict)
def _conflict(s: RunState, t: TicketRun, e: ev.Conflict) -> None:
    t.conflicts = list(e.paths)
    t.conflict_with = list(e.collided_with)
    t.conflict_text = dict(e.text)
    if t.id not in s._conflict_started:
        s.conflicts_seen += 1
        s._conflict_started[t.id] = e.t
    if e.step is ConflictStep.RERUN:
        t.reruns += 1
    if e.step is ConflictStep.SEQUENTIAL:
        t.sequential = True


@_on_ticket(ev.ScopeViolation)
def _scope(s: RunState, t: TicketRun, e: ev.ScopeViolation) -> None:
    t.scope_violations = list(e.paths)


@_on_ticket(ev.TicketRetry)
def _retry(s: RunState, t: TicketRun, e: ev.TicketRetry) -> None:
    t.result_ready = False
    t.status = TicketState.PENDING
    t.reason = e.reason
    t.agent = e.agent
    t.slot = None


@_on_ticket(ev.TicketFinished)
def _finished(s: RunState, t: TicketRun, e: ev.TicketFinished) -> None:
    t.result_ready = False
    t.status = e.state
    t.reason = e.reason
    t.finished_at = e.t
    t.slot = None
    if t.status is not TicketState.CONFLICT:
        s._conflict_started.pop(t.id, None)


@_on_ticket(ev.TicketRequeued)
def _requeued(s: RunState, t: TicketRun, e: ev.TicketRequeued) -> None:
    t.result_ready = e.keep_result and t.commit is not None
    t.status = TicketState.PENDING
    t.reason = None
    t.finished_at = None
    t.awaiting_gate = False
    if e.agent and e.agent != t.agent:
        t.agent = e.agent
        t.failures = 0
        if e.agent not in t.agents_tried:
            t.agents_tried.append(e.agent)
    if e.reset_attempts:
        t.attempts = 0
        t.failures = 0
        t.reruns = 0
    t.keep_worktree = e.keep_worktree


def _moved(s: RunState, previous: str | None, head: str) -> None:
    s.earlier_heads.update(h for h in (s.head, previous) if h)
    s.head_before, s.head = previous, head
    s.earlier_heads.discard(head)


@_on_run(ev.HeadMoved)
def _head_moved(s: RunState, e: ev.HeadMoved) -> None:
    _moved(s, e.previous, e.head)
    for tid in e.tickets:
        t = s.tickets.get(tid)
        if t is not None:
            s.recorded[tid] = t.status.value


@_on_run(ev.GatePassed)
def _gate_passed(s: RunState, e: ev.GatePassed) -> None:
    s.gate_runs_passed += 1
    for tid in e.tickets:
        t = s.tickets.get(tid)
        if t is not None:
            t.awaiting_gate = False
            t.status = TicketState.COMPLETED


@_on_ticket(ev.GateFailed)
def _gate_failed(s: RunState, t: TicketRun, e: ev.GateFailed) -> None:
    s.gate_failures += 1
    t.awaiting_gate = False
    t.gate_output = e.output


@_on_run(ev.GateRun)
def _gate_run(s: RunState, e: ev.GateRun) -> None:
    s.gate_runs += 1


@_on_run(ev.GateStarted)
def _gate_started(s: RunState, e: ev.GateStarted) -> None:
    s.gating = list(e.tickets)


@_on_run(ev.Overlap)
def _overlap(s: RunState, e: ev.Overlap) -> None:
    s.overlaps[e.tickets] = list(e.paths)


@_on_run(ev.Validation)
def _validation(s: RunState, e: ev.Validation) -> None:
    s.validation = {"ok": e.ok, "problems": list(e.problems)}


@_on_run(ev.Control)
def _control(s: RunState, e: ev.Control) -> None:
    if e.action == "pause":
        s.paused = True
        s.status = RunStatus.PAUSED
    elif e.action == "resume":
        s.paused = False
        s.status = RunStatus.RUNNING
    elif e.action in ("stop", "interrupt"):
        s.stopping = True
    elif e.action == "adjust" and e.jobs:
        s.jobs = e.jobs
    elif e.action == "priority" and e.ticket in s.tickets and e.priority is not None:
        s.tickets[e.ticket].priority = e.priority
    elif e.action == "budget":
        s.budget_usd = e.usd
    elif e.action == "quota" and e.pool is not None and e.max_parallel is not None:
        s.quotas.setdefault(e.pool, QuotaView())
        s.quota_limits[e.pool] = e.max_parallel
    elif e.action == "resource" and e.resource is not None and e.capacity is not None:
        s.resources[e.resource] = e.capacity
    elif e.action == "agent" and e.agent is not None and e.max_parallel is not None:
        s.agent_limits[e.agent] = e.max_parallel
    elif e.action == "fallback-sequential":
        for tid in e.tickets:
            if tid in s.tickets:
                s.tickets[tid].sequential = True


@_on_run(ev.QuotaPaused)
def _quota_paused(s: RunState, e: ev.QuotaPaused) -> None:
    q = s.quotas.setdefault(e.pool, QuotaView())
    q.state, q.until = "paused", e.t + e.delay_s
    q.throttled_count += 1


@_on_run(ev.QuotaProbing)
def _quota_probing(s: RunState, e: ev.QuotaProbing) -> None:
    q = s.quotas.setdefault(e.pool, QuotaView())
    q.state, q.until = "probing", None


@_on_run(ev.QuotaOpened)
def _quota_opened(s: RunState, e: ev.QuotaOpened) -> None:
    q = s.quotas.setdefault(e.pool, QuotaView())
    q.state, q.until = "open", None


@_on_run(ev.RunWarning)
def _warning(s: RunState, e: ev.RunWarning) -> None:
    s.warnings.append(e.message)


@_on_run(ev.RunFinished)
def _run_finished(s: RunState, e: ev.RunFinished) -> None:
    s.status = e.state
    s.finished_at = e.t
    s.head = e.head
    s.paused = False
    s.stop_reason = e.reason


def replay(run_id: str, events: Iterable[Event]) -> RunState:
    state = RunState(run_id)
    for e in events:
        state.apply(e)
    return state


def load_run(state_dir: Path, run_id: str) -> RunState:
    """Rebuild a run from its journal; a run with no finish and no live engine is crashed.

    Lines that do not fit the event schema are skipped and listed in `problems`.
    """
    loaded = load_events(state_dir / RUNS_DIR / run_id / JOURNAL)
    state = replay(run_id, loaded.events)
    state.problems[:0] = loaded.problems
    if not state.finished:
        holder = lock_holder(state_dir)
        if holder is None or f"run {run_id}," not in holder:
            state.status = RunStatus.CRASHED
    return state


def list_runs(state_dir: Path) -> list[str]:
    """Run ids, oldest first (by journal modification time)."""
    runs = state_dir / RUNS_DIR
    if not runs.is_dir():
        return []
    found = [p for p in runs.iterdir() if (p / JOURNAL).is_file()]
    found.sort(key=lambda p: ((p / JOURNAL).stat().st_mtime, p.name))
    return [p.name for p in found]
