"""One ticket within one run, as the journal tells it: where it is, what it took, what it
cost; and a quota pool as status shows it. `RunState` (runstate.py) keeps them up to date."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from gitexec.dialects import Usage
from gitexec.tickets import TicketState


@dataclass
class TicketRun:
    """One ticket within one run."""

    id: str
    title: str
    file: str
    agent: str
    depends_on: tuple[str, ...] = ()
    group: int = 0
    estimate_s: float = 0.0
    priority: int = 0
    paths: tuple[str, ...] = ()
    budget_usd: float | None = None
    status: TicketState = TicketState.PENDING
    attempts: int = 0
    slot: int | None = None
    base: str | None = None
    started_at: float | None = None  # first dispatch
    attempt_started_at: float | None = None
    agent_started_at: float | None = None
    waiting_for_place: bool = False  # prepared, waiting for one of the `jobs` agent places
    finished_at: float | None = None
    agent_s: float = 0.0  # time in agent and validate commands, over all attempts
    slot_s: float = 0.0  # time holding a slot (reset, agent, commit, validate)
    wait_s: float = 0.0  # of that, time waiting for one of the `jobs` agent places
    commit: str | None = None
    merge_commit: str | None = None
    reason: str | None = None
    note: str | None = None
    conflicts: list[str] = field(default_factory=list)
    conflict_with: list[str] = field(default_factory=list)
    conflict_text: dict[str, str] = field(default_factory=dict)
    scope_violations: list[str] = field(default_factory=list)
    gate_output: str | None = None
    reruns: int = 0
    failures: int = 0  # failed attempts on the current agent (the retry policy counts these)
    failed_attempts: int = 0  # over all agents (throttled attempts are not failed ones)
    throttles: int = 0
    throttled_at: float | None = None
    throttled_until: float | None = None
    throttled_s: float = 0.0  # time spent waiting for a provider (not agent time)
    agents_tried: list[str] = field(default_factory=list)
    usage: Usage | None = None  # tokens over all attempts (None: the agent reports none)
    cost_usd: float | None = None  # over the attempts whose cost is known
    cost_unknown: bool = False  # some attempt used tokens at a price nobody knows
    live_usage: Usage | None = None  # the running attempt's tokens so far
    live_cost_usd: float | None = None
    model: str | None = None
    session_id: str | None = None
    session_agent: str | None = None  # the agent whose session that is
    last_slot: int | None = None  # where its last attempt ran (sessions live in a worktree)
    left: tuple[str, str] | None = None  # (base, commit) a failed attempt left behind
    keep_worktree: bool = False  # the next attempt starts from `left`
    summary: str | None = None
    cpu_s: float = 0.0
    peak_rss_mb: float | None = None
    pid: int | None = None
    pgid: int | None = None
    sequential: bool = False
    result_ready: bool = False  # committed and validated, not yet merged
    awaiting_gate: bool = False  # merged, the integration gate has not passed yet
    previous_head: str | None = None  # the integration head this ticket was merged onto

    @property
    def duration_s(self) -> float:
        return self.agent_s

    @property
    def total_cost_usd(self) -> float | None:
        """What the ticket cost; None when unknown (never a made-up 0)."""
        return None if self.cost_unknown else self.cost_usd

    def ledger(self) -> dict[str, Any]:
        """Usage and cost, as status, reports and the ticket file show them."""
        return {
            "usage": None if self.usage is None else self.usage.to_json(),
            "cost_usd": None if self.total_cost_usd is None else round(self.total_cost_usd, 6),
            "model": self.model,
            "session_id": self.session_id,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "title": self.title,
            "attempts": self.attempts,
            "agent": self.agent,
            "slot": self.slot,
            "group": self.group,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "duration_s": round(self.agent_s, 3),
            "commit": self.commit,
            "merge_commit": self.merge_commit,
            "reason": self.reason,
            "note": self.note,
            "conflicts": self.conflicts,
            "scope_violations": self.scope_violations,
            **self.ledger(),
            "summary": self.summary,
            "failed_attempts": self.failed_attempts,
            "throttled": self.throttles,
            "throttled_until": iso(self.throttled_until),
            "cpu_s": round(self.cpu_s, 3),
            "throttled_s": round(self.throttled_s, 3),  # waiting for a provider, not agent time
            "peak_rss_mb": self.peak_rss_mb,
        }


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    stamp = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
    return stamp.isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class QuotaView:
    """A quota pool as status shows it: open, paused (until when) or probing."""

    state: str = "open"
    until: float | None = None
    throttled_count: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "until": iso(self.until),
            "throttled_count": self.throttled_count,
        }
