"""Execution patterns in the run history: the slowest tickets, flaky ones, the files that
conflict most, and how each agent does. `history` prints them, `diagnose
--analyze-bottlenecks` turns them into advice."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from gitexec.fields import format_duration
from gitexec.history import History, TicketFacts, by_ticket, cost_total, median
from gitexec.tickets import TicketState

_OWN_OUTCOMES = (TicketState.COMPLETED, TicketState.FAILED)  # what the ticket's agent decided


@dataclass(frozen=True)
class Slow:
    ticket: str
    runs: int  # completed runs measured
    median_s: float
    last_s: float
    agent: str


@dataclass(frozen=True)
class Flaky:
    """A ticket whose outcome is not a function of its input: it failed, then passed."""

    ticket: str
    runs: int
    outcomes: tuple[str, ...]  # oldest first, its last ten
    passed_after_failing: int  # runs that completed after a failed run before
    retried_to_pass: int  # runs where it completed only after failed attempts
    changes: int  # outcome changes from one run to the next (completed <-> failed)


@dataclass(frozen=True)
class HotSpot:
    path: str
    conflicts: int  # (run, ticket) pairs that conflicted on it
    tickets: tuple[str, ...]


@dataclass(frozen=True)
class AgentRecord:
    agent: str
    tickets: int  # ticket runs its agent ran in
    completed: int
    success_rate: float
    mean_s: float | None  # of completed tickets
    attempts: int
    failed_attempts: int
    throttles: int
    cost_usd: float | None  # known costs summed (None: none known)
    mean_cost_usd: float | None
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class Patterns:
    runs: int
    slowest: tuple[Slow, ...]
    flaky: tuple[Flaky, ...]
    hot_spots: tuple[HotSpot, ...]
    agents: tuple[AgentRecord, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "slowest": [asdict(s) for s in self.slowest],
            "flaky": [asdict(f) for f in self.flaky],
            "conflict_hot_spots": [asdict(h) for h in self.hot_spots],
            "agents": {
                a.agent: {k: v for k, v in asdict(a).items() if k != "agent"} for a in self.agents
            },
        }


def analyze(history: History, *, top: int = 10) -> Patterns:
    tickets = by_ticket(history)
    return Patterns(
        runs=len(history.runs),
        slowest=_slowest(tickets, top),
        flaky=_flaky(tickets, top),
        hot_spots=_hot_spots(history, top),
        agents=_agents(history),
    )


def _slowest(tickets: Mapping[str, list[TicketFacts]], top: int) -> tuple[Slow, ...]:
    out = []
    for tid, facts in tickets.items():
        done = [f for f in facts if f.outcome is TicketState.COMPLETED]
        if done:
            durations = [f.duration_s for f in done]
            out.append(
                Slow(
                    tid, len(done), round(median(durations), 3), done[-1].duration_s, done[-1].agent
                )
            )
    out.sort(key=lambda s: (-s.median_s, s.ticket))
    return tuple(out[:top])


def _flaky(tickets: Mapping[str, list[TicketFacts]], top: int) -> tuple[Flaky, ...]:
    out = []
    for tid, facts in tickets.items():
        own = [f for f in facts if f.outcome in _OWN_OUTCOMES]
        retried = sum(1 for f in own if f.outcome is TicketState.COMPLETED and f.failed_attempts)
        pairs = list(itertools.pairwise(own))
        changes = sum(1 for a, b in pairs if a.outcome is not b.outcome)
        recovered = sum(
            1
            for a, b in pairs
            if a.outcome is TicketState.FAILED and b.outcome is TicketState.COMPLETED
        )
        if retried or changes:
            outcomes = tuple(f.outcome.value for f in own[-10:])
            out.append(Flaky(tid, len(own), outcomes, recovered, retried, changes))
    out.sort(key=lambda f: (-(f.passed_after_failing + f.retried_to_pass + f.changes), f.ticket))
    return tuple(out[:top])


def _hot_spots(history: History, top: int) -> tuple[HotSpot, ...]:
    counts: dict[str, int] = {}
    who: dict[str, set[str]] = {}
    for _, t in history.facts():
        for path in set(t.conflicts):
            counts[path] = counts.get(path, 0) + 1
            who.setdefault(path, set()).add(t.ticket)
    ranked = sorted(counts, key=lambda p: (-counts[p], p))[:top]
    return tuple(HotSpot(p, counts[p], tuple(sorted(who[p]))) for p in ranked)


def _agents(history: History) -> tuple[AgentRecord, ...]:
    runs: dict[str, list[TicketFacts]] = {}
    for _, t in history.facts():
        if t.ran:
            runs.setdefault(t.agent, []).append(t)
    out = []
    for agent, facts in sorted(runs.items()):
        done = [f.duration_s for f in facts if f.outcome is TicketState.COMPLETED]
        cost = cost_total(f.cost_usd for f in facts)
        priced = sum(1 for f in facts if f.cost_usd is not None)
        out.append(
            AgentRecord(
                agent=agent,
                tickets=len(facts),
                completed=len(done),
                success_rate=round(len(done) / len(facts), 3),
                mean_s=round(statistics.fmean(done), 3) if done else None,
                attempts=sum(f.attempts for f in facts),
                failed_attempts=sum(f.failed_attempts for f in facts),
                throttles=sum(f.throttles for f in facts),
                cost_usd=cost,
                mean_cost_usd=round(cost / priced, 6) if cost is not None and priced else None,
                input_tokens=sum(f.input_tokens for f in facts),
                output_tokens=sum(f.output_tokens for f in facts),
            )
        )
    return tuple(out)


def advice(p: Patterns) -> list[str]:
    """What the history suggests doing, most useful first."""
    out = []
    for f in p.flaky[:3]:
        how = []
        if f.retried_to_pass:
            how.append(f"needed a retry to pass in {f.retried_to_pass} run(s)")
        if f.changes:
            how.append(f"changed outcome {f.changes} time(s) in {f.runs} run(s)")
        out.append(
            f"{f.ticket} is flaky ({'; '.join(how)}): give it `retries: 1`, or make its "
            "agent's work or its `validate` deterministic"
        )
    for h in p.hot_spots[:3]:
        if h.conflicts < 2:
            continue
        who = ", ".join(h.tickets[:4])
        out.append(
            f"{h.path} conflicted {h.conflicts} time(s) ({who}): declare it in their `paths` "
            "so they never run at the same time, or give it a merge rule"
        )
    for a in p.agents:
        if a.tickets >= 3 and a.success_rate < 0.8:
            out.append(
                f"agent {a.agent} completed {a.success_rate:.0%} of its {a.tickets} tickets: "
                "check its logs, or give its tickets a `fallback` agent"
            )
    return out


def render_text(p: Patterns, *, file: str) -> list[str]:
    """`git exec history` as plain lines."""
    lines = [f"{p.runs} run(s) in {file}"]
    if p.slowest:
        lines.append("Slowest tickets (median of completed runs):")
        lines.extend(
            f"  {s.ticket:<20} {format_duration(s.median_s):>7}  last {format_duration(s.last_s)}, "
            f"{s.runs} run(s), {s.agent}"
            for s in p.slowest
        )
    if p.flaky:
        lines.append("Flaky tickets (failed, then passed):")
        lines.extend(
            f"  {f.ticket:<20} {' '.join(f.outcomes)}"
            + (
                f"  (passed after retries in {f.retried_to_pass} run(s))"
                if f.retried_to_pass
                else ""
            )
            for f in p.flaky
        )
    if p.hot_spots:
        lines.append("Conflict hot spots:")
        lines.extend(
            f"  {h.path:<30} {h.conflicts:>3}x  {', '.join(h.tickets)}" for h in p.hot_spots
        )
    if p.agents:
        lines.append("Agents:")
        lines.append(f"  {'agent':<10} {'tickets':>7} {'success':>7} {'mean':>8} {'cost':>10}")
        for a in p.agents:
            mean = format_duration(a.mean_s) if a.mean_s is not None else "-"
            cost = "-" if a.cost_usd is None else f"${a.cost_usd:.4f}"
            lines.append(
                f"  {a.agent:<10} {a.tickets:>7} {a.success_rate:>7.0%} {mean:>8} {cost:>10}"
            )
    return lines


def ticket_lines(rows: Sequence[tuple[str, TicketFacts]]) -> list[str]:
    """One ticket's runs, oldest first."""
    out = [f"  {'run':<28} {'outcome':<9} {'time':>7} {'tries':>5} {'cost':>10}  conflicts"]
    for run, f in rows:
        cost = "-" if f.cost_usd is None else f"${f.cost_usd:.4f}"
        out.append(
            f"  {run:<28} {f.outcome.value:<9} {format_duration(f.duration_s):>7} "
            f"{f.attempts:>5} {cost:>10}  {', '.join(f.conflicts) or '-'}"
        )
    return out
