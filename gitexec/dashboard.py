"""Showing a run: a rich live dashboard on a terminal, one plain line per event otherwise.

Reporters receive a read-only `RunView` (the journal's `RunState`, the number of agent
places, agents' progress files), never the engine, so `git exec monitor` can show the
same picture from another terminal.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from gitexec import events as ev
from gitexec.dialects import Usage
from gitexec.fields import format_duration
from gitexec.resources import live_usage
from gitexec.runstate import RunState, TicketRun
from gitexec.tickets import TicketState

if TYPE_CHECKING:
    from rich.console import RenderableType


class RunView(Protocol):
    """What a reporter may see of a live run."""

    @property
    def state(self) -> RunState: ...
    @property
    def jobs(self) -> int: ...
    def progress(self, tid: str) -> float | None: ...
    def eta_s(self) -> float | None: ...


class Reporter(Protocol):
    """Shows a run as it happens (rich dashboard, plain lines, or nothing)."""

    def start(self, run: RunView) -> None: ...

    def event(self, event: ev.Event, run: RunView) -> None: ...

    def tick(self, run: RunView) -> None: ...

    def notice(self, text: str) -> None: ...

    def finish(self, run: RunView) -> None: ...


# --- what a dashboard shows ----------------------------------------------------------------


@dataclass(frozen=True)
class AgentRow:
    agent_id: str
    ticket: str
    status: str
    progress: float | None
    eta: str
    cost: str = "-"
    usage: str = "-"  # a running agent's CPU and resident memory ("85% 312M")


@dataclass(frozen=True)
class Snapshot:
    """Everything on the dashboard, computed once per refresh."""

    state: RunState
    jobs: int
    busy: int
    active_groups: int
    groups: int
    completion: float
    active_conflicts: int
    eta_s: float | None
    rows: tuple[AgentRow, ...]
    paused: bool
    stopping: bool


_STATUS_WORDS = {
    TicketState.RUNNING: "executing",
    TicketState.VALIDATING: "validating",
    TicketState.MERGING: "merging",
}


def status_word(t: TicketRun) -> str:
    """What a ticket in flight is doing, by name (not all of it is an agent running)."""
    if t.status is TicketState.RUNNING and t.agent_started_at is None:
        return "waiting for a place" if t.waiting_for_place else "preparing"
    if t.status is TicketState.MERGING and t.awaiting_gate:
        return "awaiting gate"
    return _STATUS_WORDS.get(t.status, t.status.value)


def cost_text(cost_usd: float | None, usage: Usage | None) -> str:
    if cost_usd is not None and cost_usd > 0:
        return f"${cost_usd:.4f}" if cost_usd < 1 else f"${cost_usd:.2f}"
    if usage is not None:
        return f"{(usage.input_tokens + usage.output_tokens) / 1000:.1f}k tok"
    return "-"


def snapshot(
    state: RunState,
    *,
    jobs: int,
    progress: Callable[[str], float | None],
    eta_s: float | None,
    now: float | None = None,
    waiting_rows: int = 4,
) -> Snapshot:
    now = now or time.time()
    active = [t for t in state.tickets.values() if t.status in _STATUS_WORDS]
    rows: list[AgentRow] = []
    for t in sorted(active, key=lambda t: (t.slot or 0, t.id)):
        p = progress(t.id)
        elapsed = now - (t.agent_started_at or now)
        if p is None and t.estimate_s and t.agent_started_at:
            p = min(99.0, 100.0 * elapsed / t.estimate_s)
        remaining = format_duration(max(0.0, t.estimate_s - elapsed)) if t.agent_started_at else "-"
        where = f"slot-{t.slot}" if t.slot is not None else "-"
        cost = cost_text(
            t.live_cost_usd if t.live_cost_usd is not None else t.total_cost_usd,
            t.live_usage or t.usage,
        )
        usage = live_usage(state, t)
        rows.append(
            AgentRow(
                where, t.id, status_word(t), p, remaining, cost, usage.text() if usage else "-"
            )
        )
    waiting = [
        t
        for t in state.tickets.values()
        if t.status in (TicketState.PENDING, TicketState.READY, TicketState.THROTTLED)
    ]
    done_ids = {tid for tid, t in state.tickets.items() if t.status is TicketState.COMPLETED}
    for t in sorted(waiting, key=lambda t: (t.group, -t.priority, t.id))[:waiting_rows]:
        if t.status is TicketState.THROTTLED:
            until = t.throttled_until or now
            rows.append(AgentRow("-", t.id, "throttled", None, format_duration(until - now)))
            continue
        blocked = any(d not in done_ids and d in state.tickets for d in t.depends_on)
        rows.append(AgentRow("-", t.id, "waiting", 0.0, "deps" if blocked else "queued"))
    for t in sorted(state.tickets.values(), key=lambda t: -(t.finished_at or 0))[:2]:
        if t.status.terminal:
            rows.append(
                AgentRow(
                    "-",
                    t.id,
                    t.status.value,
                    100.0 if t.status.succeeded else None,
                    "-",
                    cost_text(t.total_cost_usd, t.usage),
                )
            )
    groups_with_work = {t.group for t in state.tickets.values() if not t.status.terminal}
    total = len(state.tickets) or 1
    finished = sum(1 for t in state.tickets.values() if t.status.terminal)
    conflicts = sum(1 for t in state.tickets.values() if t.conflicts and not t.status.terminal)
    return Snapshot(
        state=state,
        jobs=jobs,
        busy=sum(
            1
            for t in active
            if t.agent_started_at is not None or t.status is TicketState.VALIDATING
        ),
        active_groups=len(groups_with_work),
        groups=len(state.groups),
        completion=finished / total,
        active_conflicts=conflicts,
        eta_s=eta_s,
        rows=tuple(rows),
        paused=state.paused,
        stopping=state.stopping,
    )


def remaining_s(state: RunState, jobs: int, progress: Callable[[str], float | None]) -> float:
    """ETA: a list schedule of what is left on `jobs` slots.

    Estimates are calibrated by how long finished tickets took against theirs; running
    tickets use their reported progress when they write GITEXEC_PROGRESS_FILE.
    """
    from gitexec.plan import Graph, simulate
    from gitexec.tickets import Ticket

    graph = Graph(
        Ticket(id=t.id, title=t.title, file=t.file, depends_on=t.depends_on, priority=t.priority)
        for t in state.tickets.values()
    )
    est = [state.tickets[t.id].estimate_s for t in graph.tickets]
    ratios = sorted(
        state.tickets[t.id].agent_s / est[i]
        for i, t in enumerate(graph.tickets)
        if state.tickets[t.id].status is TicketState.COMPLETED
        and est[i] > 0
        and state.tickets[t.id].agent_s > 0
    )
    scale = ratios[len(ratios) // 2] if ratios else 1.0
    durations = [e * scale for e in est]
    now = time.time()
    done: list[int] = []
    running: list[tuple[int, float]] = []
    for i, t in enumerate(graph.tickets):
        ts = state.tickets[t.id]
        if ts.status.terminal:
            done.append(i)
        elif ts.status in _STATUS_WORDS:
            elapsed = now - (ts.agent_started_at or now)
            p = progress(t.id)
            if p and p > 0:
                remaining = elapsed * (100.0 - p) / p
            else:
                remaining = max(durations[i] - elapsed, 0.05 * durations[i])
            running.append((i, remaining))
    order = graph.topological_order() or list(range(len(graph)))
    rank = graph.bottom_levels(order, durations)
    prio = [t.priority for t in graph.tickets]
    return simulate(
        graph, durations, jobs, key=lambda i: (-prio[i], -rank[i], i), done=done, running=running
    )


# --- reporters -----------------------------------------------------------------------------


class QuietReporter:
    """`--no-monitor`: only the summary printed by the command at the end."""

    def start(self, run: RunView) -> None:
        pass

    def event(self, event: ev.Event, run: RunView) -> None:
        pass

    def tick(self, run: RunView) -> None:
        pass

    def notice(self, text: str) -> None:
        print(f"gitexec: {text}", file=sys.stderr, flush=True)

    def finish(self, run: RunView) -> None:
        pass


def describe(event: ev.Event, state: RunState) -> str | None:
    """One line for an event worth a line; None for the rest."""
    match event:
        case ev.RunStarted():
            return (
                f"run {event.run}: {len(event.tickets)} ticket(s), jobs {event.jobs}, "
                f"base {event.base_rev} ({event.base[:12]})"
            )
        case ev.AgentStarted():
            extra = " alone" if event.sequential else ""
            where = f"slot {event.slot}, {event.agent}, attempt {event.attempt}{extra}"
            return f"start     {event.ticket} ({where})"
        case ev.TicketThrottled():
            wait = format_duration(event.delay_s)
            return f"throttled {event.ticket}: waits {wait} ({event.reason})"
        case ev.TicketMerged():
            t = state.tickets.get(event.ticket)
            took = f", {t.agent_s:.1f}s" if t else ""
            settled = ", ".join(f"{path} by {rule}" for path, rule in event.resolved)
            gate = " (awaiting gate)" if event.awaiting_gate else ""
            extra = f" ({settled})" if settled else ""
            return f"merged    {event.ticket} -> {event.head[:12]}{took}{extra}{gate}"
        case ev.TicketFinished():
            return f"{event.state.value:<9} {event.ticket}: {event.reason}"
        case ev.TicketRetry():
            return f"retry     {event.ticket} in {event.delay_s:g}s: {event.reason}"
        case ev.TicketRequeued() if event.reason:
            return f"requeued  {event.ticket}: {event.reason}"
        case ev.Conflict():
            return f"conflict  {event.ticket} ({event.step.value}): {', '.join(event.paths[:5])}"
        case ev.ScopeViolation():
            return f"scope     {event.ticket} ({event.action}): {', '.join(event.paths[:5])}"
        case ev.Overlap():
            a, b = event.tickets
            where = "merged" if event.against == "merged" else "running"
            return f"overlap   {a} and {where} {b}: {', '.join(event.paths[:5])}"
        case ev.GatePassed():
            return f"gate ok   {', '.join(event.tickets)}"
        case ev.GateFailed():
            return f"gate FAIL {event.ticket}: rolled back ({event.runs} gate run(s))"
        case ev.Control():
            return f"control   {event.action}"
        case ev.RunWarning():
            return f"warning   {event.message}"
        case ev.RunFinished():
            return f"finished  {event.state.value} at {event.head[:12]}"
    return None


class PlainReporter:
    """One line per event on stderr: readable in CI logs."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.started = time.time()

    def start(self, run: RunView) -> None:
        self.started = run.state.started_at or time.time()

    def event(self, event: ev.Event, run: RunView) -> None:
        line = describe(event, run.state)
        if line:
            stamp = (event.t or time.time()) - self.started
            print(f"[{stamp:7.1f}s] {line}", file=self.stream, flush=True)

    def tick(self, run: RunView) -> None:
        pass

    def notice(self, text: str) -> None:
        print(f"gitexec: {text}", file=self.stream, flush=True)

    def finish(self, run: RunView) -> None:
        pass


def spend_text(metrics: dict[str, Any]) -> str:
    """The run's spend so far, for a header: "$0.1234 (12.3k tokens)", "unknown", "-"."""
    tokens = metrics["input_tokens"] + metrics["output_tokens"]
    if not tokens and not metrics["cost_usd"]:
        return "-"
    cost = metrics["cost_usd"]
    money = "unknown" if cost is None else f"${cost:.4f}"
    return f"{money} ({tokens / 1000:.1f}k tokens)"


def render(snap: Snapshot, events: deque[str]) -> RenderableType:
    from rich.console import Group
    from rich.panel import Panel
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    s = snap.state
    flags = " [PAUSED]" if snap.paused else ""
    flags += " [STOPPING]" if snap.stopping else ""
    head = Table.grid(padding=(0, 3))
    m = s.metrics()
    head.add_row(
        f"Active Groups: {snap.active_groups}/{snap.groups}",
        f"Running Agents: {snap.busy}/{snap.jobs}",
        f"Completion Rate: {snap.completion:.0%} ({m['completed']}/{m['total']})",
        f"Active Conflicts: {snap.active_conflicts}",
        f"ETA: {format_duration(snap.eta_s) if snap.eta_s is not None else '-'}",
        f"Cost: {spend_text(m)}",
    )
    matrix = Table(expand=True, show_edge=False, pad_edge=False)
    for column in ("Agent ID", "Ticket", "Status", "Progress", "ETA", "Cost", "CPU/RSS"):
        matrix.add_column(column, no_wrap=True)
    for row in snap.rows:
        progress: RenderableType = Text("-")
        if row.progress is not None:
            bar = ProgressBar(total=100, completed=row.progress, width=12)
            progress = Table.grid()
            progress.add_row(bar, Text(f" {row.progress:3.0f}%"))
        matrix.add_row(
            row.agent_id, Text(row.ticket), row.status, progress, row.eta, row.cost, row.usage
        )
    log = Text("\n".join(events)) if events else Text("")
    return Panel(
        Group(head, Text(""), matrix, Text(""), log),
        title=Text(f"gitexec run {s.run_id}{flags}"),
        subtitle=Text(
            f"{s.integration.removeprefix('refs/heads/')}  "
            f"wall {format_duration(s.wall_s(time.time()))}"
        ),
    )


class RichReporter:
    """The live dashboard: a run's tickets, slots and ETA, redrawn in place (TTY only)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console(stderr=True)
        self.live = Live(console=self.console, refresh_per_second=4, transient=False)
        self.events: deque[str] = deque(maxlen=8)

    def start(self, run: RunView) -> None:
        self.live.start()
        self.tick(run)

    def event(self, event: ev.Event, run: RunView) -> None:
        line = describe(event, run.state)
        if line:
            self.events.append(time.strftime("%H:%M:%S ") + line)

    def tick(self, run: RunView) -> None:
        snap = snapshot(run.state, jobs=run.jobs, progress=run.progress, eta_s=run.eta_s())
        self.live.update(render(snap, self.events))

    def notice(self, text: str) -> None:
        self.live.console.print(f"gitexec: {text}", markup=False, highlight=False)

    def finish(self, run: RunView) -> None:
        self.tick(run)
        self.live.stop()


def choose_reporter(
    monitor: bool | None, stream: TextIO | None = None
) -> QuietReporter | PlainReporter | RichReporter:
    """--monitor (default on a terminal): rich; no terminal: plain lines; --no-monitor: quiet."""
    if monitor is False:
        return QuietReporter()
    out = stream or sys.stderr
    if out.isatty():
        return RichReporter()
    return PlainReporter(out)
