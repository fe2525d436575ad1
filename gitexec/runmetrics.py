"""What a run's state adds up to: counts, parallelism, efficiency, conflicts, gates, spend,
the measured critical path, and the JSON `status --format json` prints."""

from __future__ import annotations

from typing import Any

from gitexec.runstate import ACTIVE, RunState
from gitexec.ticketrun import iso
from gitexec.tickets import TicketState


def metrics(state: RunState, now: float | None = None) -> dict[str, Any]:
    """Counts, parallelism, utilisation, efficiency, conflicts, gates, tokens and cost."""
    ts = list(state.tickets.values())
    wall = state.wall_s(now)
    agent = sum(t.agent_s for t in ts)
    slot = sum(t.slot_s - t.wait_s for t in ts)
    overhead = max(0.0, slot - agent) + state.merge_s
    done = [t for t in ts if t.status is TicketState.COMPLETED]
    count = {s: sum(1 for t in ts if t.status is s) for s in TicketState}
    gate_s, gate_only_s = state.gate_times(now)
    return {
        "total": len(ts),
        "completed": count[TicketState.COMPLETED],
        "failed": count[TicketState.FAILED],
        "conflict": count[TicketState.CONFLICT],
        "blocked": count[TicketState.BLOCKED],
        "cancelled": count[TicketState.CANCELLED],
        "running": sum(count[s] for s in ACTIVE),
        "pending": count[TicketState.PENDING]
        + count[TicketState.READY]
        + count[TicketState.THROTTLED],
        "throttled": count[TicketState.THROTTLED],
        "skipped": len(state.skipped),
        "average_ticket_s": round(sum(t.agent_s for t in done) / len(done), 3) if done else 0,
        "parallelism_factor": _ratio(agent / wall, 2) if wall > 0 else 0.0,
        "resource_utilization": _ratio(min(1.0, slot / (state.jobs * wall)), 3)
        if wall > 0 and state.jobs
        else 0.0,
        "coordination_efficiency": round(agent / (agent + overhead), 3)
        if agent + overhead > 0
        else 1.0,
        "conflicts": state.conflicts_seen,
        "conflicts_auto_resolved": state.conflicts_resolved,
        "conflicts_auto_resolved_pct": round(100 * state.conflicts_resolved / state.conflicts_seen)
        if state.conflicts_seen
        else 100,
        "conflict_resolution_s": round(state.conflict_resolution_s, 3),
        "critical_path_s": round(critical_path_s(state), 3),
        "gate_runs": state.gate_runs,
        "gate_failures": state.gate_failures,
        "gate_s": round(gate_s, 3),
        "gate_only_s": round(min(gate_only_s, wall), 3),
        "wall_s": round(wall, 3),
        "throttled_s": round(sum(t.throttled_s for t in ts), 3),
        **spend(state),
    }


def spend(state: RunState) -> dict[str, Any]:
    """Tokens and cost of the run so far (running attempts included); the cost is None
    when any part of it is unknown."""
    tokens = [u for t in state.tickets.values() for u in (t.usage, t.live_usage) if u]
    costs = [c for t in state.tickets.values() for c in (t.total_cost_usd, t.live_cost_usd) if c]
    unknown = any(t.cost_unknown for t in state.tickets.values())
    return {
        "cost_usd": None if unknown else round(sum(costs), 6),
        "input_tokens": sum(u.input_tokens for u in tokens),
        "output_tokens": sum(u.output_tokens for u in tokens),
    }


def critical_path_s(state: RunState) -> float:
    """The longest dependency chain by measured agent time."""
    memo: dict[str, float] = {}

    def longest(tid: str, depth: int = 0) -> float:
        if tid in memo:
            return memo[tid]
        t = state.tickets[tid]
        best = 0.0
        if depth < 10_000:
            best = max(
                (longest(d, depth + 1) for d in t.depends_on if d in state.tickets), default=0.0
            )
        memo[tid] = best + t.agent_s
        return memo[tid]

    order = sorted(state.tickets, key=lambda k: len(state.tickets[k].depends_on))
    return max((longest(t) for t in order), default=0.0)


def status_json(state: RunState, now: float | None = None) -> dict[str, Any]:
    return {
        "run": state.run_id,
        "state": state.status.value,
        "base": state.base,
        "base_rev": state.base_rev,
        "integration": state.integration,
        "head": state.head,
        "jobs": state.jobs,
        "paused": state.paused,
        "started_at": iso(state.started_at),
        "finished_at": iso(state.finished_at),
        "tickets": {tid: t.to_json() for tid, t in sorted(state.tickets.items())},
        "skipped": state.skipped,
        "metrics": metrics(state, now),
        "overlaps": [
            {"tickets": list(pair), "paths": paths}
            for pair, paths in sorted(state.active_overlaps().items())
        ],
        "validation": state.validation,
        "reason": state.stop_reason,
        "budget": {
            "run_usd": state.budget_usd,
            "ticket_usd": state.ticket_budget_usd,
            "hard": state.budget_hard,
        },
        "quotas": _quotas(state),
        "warnings": state.warnings,
    }


def _ratio(value: float, digits: int) -> float:
    """`value` rounded to `digits` decimals, but never a positive value shown as 0."""
    rounded = round(value, digits)
    return rounded if rounded or value <= 0 else float(f"{value:.2g}")


def _quotas(state: RunState) -> dict[str, dict[str, Any]]:
    """Each pool's state, and its max_parallel where `adjust --quota` set it live."""
    out: dict[str, dict[str, Any]] = {n: q.to_json() for n, q in state.quotas.items()}
    for pool, limit in state.quota_limits.items():
        out.setdefault(pool, {})["max_parallel"] = limit
    return dict(sorted(out.items()))
