"""A run's state, rebuilt by replaying its journal; the engine applies the same events live.

One `apply` serves the running engine, `status`, `agents`, reports and `resume`, so what
they show can never drift apart.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gitexec.journal import JOURNAL, Event, lock_holder, read_events
from gitexec.tickets import TicketState

RUNS_DIR = "runs"


class RunStatus(enum.Enum):
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"
    COMPLETED = "completed"
    FAILED = "failed"
    CRASHED = "crashed"


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
    status: TicketState = TicketState.PENDING
    attempts: int = 0
    slot: int | None = None
    base: str | None = None
    started_at: float | None = None  # first dispatch
    attempt_started_at: float | None = None
    agent_started_at: float | None = None
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
    pid: int | None = None
    pgid: int | None = None
    sequential: bool = False
    result_ready: bool = False  # committed and validated, not yet merged
    awaiting_gate: bool = False  # merged, the integration gate has not passed yet
    previous_head: str | None = None  # the integration head this ticket was merged onto

    @property
    def duration_s(self) -> float:
        return self.agent_s

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
        }


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    stamp = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
    return stamp.isoformat(timespec="seconds").replace("+00:00", "Z")


_ACTIVE = (TicketState.RUNNING, TicketState.VALIDATING, TicketState.MERGING)


@dataclass
class RunState:
    run_id: str
    base: str = ""
    base_rev: str = ""
    integration: str = ""
    head: str = ""
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
    _conflict_started: dict[str, float] = field(default_factory=dict)

    # --- replay ----------------------------------------------------------------------------

    def apply(self, e: Event) -> None:
        handler = _HANDLERS.get(str(e.get("event")))
        self.last_event_at = max(self.last_event_at, float(e.get("t", 0.0)))
        if handler is not None:
            handler(self, e)

    def _ticket(self, e: Event) -> TicketRun | None:
        return self.tickets.get(str(e.get("ticket")))

    # --- queries ---------------------------------------------------------------------------

    def active_overlaps(self) -> dict[tuple[str, str], list[str]]:
        """Overlaps whose first ticket is still in flight (the others settle by merging)."""
        return {
            pair: paths
            for pair, paths in self.overlaps.items()
            if pair[0] in self.tickets and self.tickets[pair[0]].status in _ACTIVE
        }

    @property
    def finished(self) -> bool:
        return self.status in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.STOPPED)

    def wall_s(self, now: float | None = None) -> float:
        end = self.finished_at or now or self.last_event_at
        return max(0.0, end - self.started_at) if self.started_at else 0.0

    def metrics(self, now: float | None = None) -> dict[str, Any]:
        """DESIGN.md §7 metrics."""
        ts = list(self.tickets.values())
        wall = self.wall_s(now)
        agent = sum(t.agent_s for t in ts)
        slot = sum(t.slot_s - t.wait_s for t in ts)
        overhead = max(0.0, slot - agent) + self.merge_s
        done = [t for t in ts if t.status is TicketState.COMPLETED]
        count = {s: sum(1 for t in ts if t.status is s) for s in TicketState}
        return {
            "total": len(ts),
            "completed": count[TicketState.COMPLETED],
            "failed": count[TicketState.FAILED],
            "conflict": count[TicketState.CONFLICT],
            "blocked": count[TicketState.BLOCKED],
            "cancelled": count[TicketState.CANCELLED],
            "running": sum(count[s] for s in _ACTIVE),
            "pending": count[TicketState.PENDING] + count[TicketState.READY],
            "skipped": len(self.skipped),
            "average_ticket_s": round(sum(t.agent_s for t in done) / len(done), 3) if done else 0,
            "parallelism_factor": round(agent / wall, 2) if wall > 0 else 0.0,
            "resource_utilization": round(min(1.0, slot / (self.jobs * wall)), 3)
            if wall > 0 and self.jobs
            else 0.0,
            "coordination_efficiency": round(agent / (agent + overhead), 3)
            if agent + overhead > 0
            else 1.0,
            "conflicts": self.conflicts_seen,
            "conflicts_auto_resolved": self.conflicts_resolved,
            "conflicts_auto_resolved_pct": round(
                100 * self.conflicts_resolved / self.conflicts_seen
            )
            if self.conflicts_seen
            else 100,
            "conflict_resolution_s": round(self.conflict_resolution_s, 3),
            "critical_path_s": round(self.measured_critical_path_s(), 3),
            "gate_runs": self.gate_runs,
            "gate_failures": self.gate_failures,
            "wall_s": round(wall, 3),
        }

    def measured_critical_path_s(self) -> float:
        """The longest dependency chain by measured agent time."""
        memo: dict[str, float] = {}

        def longest(tid: str, depth: int = 0) -> float:
            if tid in memo:
                return memo[tid]
            t = self.tickets[tid]
            best = 0.0
            if depth < 10_000:
                best = max(
                    (longest(d, depth + 1) for d in t.depends_on if d in self.tickets), default=0.0
                )
            memo[tid] = best + t.agent_s
            return memo[tid]

        order = sorted(self.tickets, key=lambda k: len(self.tickets[k].depends_on))
        return max((longest(t) for t in order), default=0.0)

    def to_json(self, now: float | None = None) -> dict[str, Any]:
        return {
            "run": self.run_id,
            "state": self.status.value,
            "base": self.base,
            "base_rev": self.base_rev,
            "integration": self.integration,
            "head": self.head,
            "jobs": self.jobs,
            "paused": self.paused,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "tickets": {tid: t.to_json() for tid, t in sorted(self.tickets.items())},
            "skipped": self.skipped,
            "metrics": self.metrics(now),
            "overlaps": [
                {"tickets": list(pair), "paths": paths}
                for pair, paths in sorted(self.active_overlaps().items())
            ],
            "validation": self.validation,
            "warnings": self.warnings,
        }


# --- event handlers ------------------------------------------------------------------------


def _run_started(s: RunState, e: Event) -> None:
    s.base = e["base"]
    s.base_rev = e.get("base_rev", "")
    s.integration = e["integration"]
    s.head = str(e.get("head", e["base"]))
    s.jobs = int(e.get("jobs", 1))
    s.strategy = e.get("strategy", "")
    s.merge_order = e.get("merge_order", "completion")
    s.started_at = float(e["t"])
    s.pid = e.get("pid")
    s.skipped = list(e.get("skipped", []))
    s.groups = [list(g) for g in e.get("groups", [])]
    s.critical_path = list(e.get("critical_path", []))
    s.status = RunStatus.RUNNING
    for tid, info in e.get("tickets", {}).items():
        s.tickets[tid] = TicketRun(
            id=tid,
            title=info.get("title", tid),
            file=info.get("file", ""),
            agent=info.get("agent", ""),
            depends_on=tuple(info.get("depends_on", ())),
            group=int(info.get("group", 0)),
            estimate_s=float(info.get("estimate_s", 0.0)),
            priority=int(info.get("priority", 0)),
            paths=tuple(info.get("paths", ())),
        )


def _run_resumed(s: RunState, e: Event) -> None:
    s.status = RunStatus.RUNNING
    s.finished_at = None
    s.pid = e.get("pid")
    s.stopping = False
    s.jobs = int(e.get("jobs", s.jobs))
    for tid in e.get("reset", []):
        t = s.tickets.get(tid)
        if t is not None and not t.status.terminal:
            t.status = TicketState.PENDING
            t.slot = None


def _dispatched(s: RunState, e: Event) -> None:
    t = s._ticket(e)
    if t is None:
        return
    t.status = TicketState.RUNNING
    t.attempts = int(e.get("attempt", t.attempts + 1))
    t.agent = e.get("agent", t.agent)
    t.slot = e.get("slot")
    t.base = e.get("base")
    t.attempt_started_at = float(e["t"])
    t.result_ready = False
    t.commit = None
    if t.started_at is None:
        t.started_at = float(e["t"])
    t.sequential = bool(e.get("sequential", t.sequential))


def _agent_started(s: RunState, e: Event) -> None:
    t = s._ticket(e)
    if t is not None:
        t.pid, t.pgid = e.get("pid"), e.get("pgid")
        t.agent_started_at = float(e["t"])


def _agent_exited(s: RunState, e: Event) -> None:
    t = s._ticket(e)
    if t is not None:
        t.agent_s += float(e.get("duration_s", 0.0))
        t.pid = t.pgid = None
        t.agent_started_at = None


def _committed(s: RunState, e: Event) -> None:
    t = s._ticket(e)
    if t is not None:
        t.commit = e.get("commit")
        if e.get("empty"):
            t.note = "no changes"


def _validating(s: RunState, e: Event) -> None:
    t = s._ticket(e)
    if t is not None:
        t.status = TicketState.VALIDATING


def _validated(s: RunState, e: Event) -> None:
    t = s._ticket(e)
    if t is not None:
        t.agent_s += float(e.get("duration_s", 0.0))


def _work_done(s: RunState, e: Event) -> None:
    t = s._ticket(e)
    if t is not None:
        t.slot_s += float(e.get("slot_s", 0.0))
        t.wait_s += float(e.get("wait_s", 0.0))
        t.slot = None
        t.result_ready = bool(e.get("ok")) and t.commit is not None


def _merging(s: RunState, e: Event) -> None:
    t = s._ticket(e)
    if t is not None:
        t.status = TicketState.MERGING
        t.commit = e.get("commit", t.commit)


def _merged(s: RunState, e: Event) -> None:
    t = s._ticket(e)
    s.head = e["head"]
    s.merge_s += float(e.get("merge_s", 0.0))
    if t is None:
        return
    t.result_ready = False
    t.merge_commit = e["head"]
    t.previous_head = e.get("previous")
    t.reason = None
    if e.get("awaiting_gate"):
        t.awaiting_gate = True
        return
    t.status = TicketState.COMPLETED
    t.finished_at = float(e["t"])
    if t.id in s._conflict_started:
        s.conflicts_resolved += 1
        s.conflict_resolution_s += float(e["t"]) - s._conflict_started.pop(t.id)
    resolved = e.get("resolved") or []
    if resolved:
        s.conflicts_seen += 1
        s.conflicts_resolved += 1
        t.note = "conflicts resolved by rules: " + ", ".join(p for p, _ in resolved)


def _conflict(s: RunState, e: Event) -> None:
    t = s._ticket(e)
    if t is None:
        return
    t.conflicts = list(e.get("paths", []))
    t.conflict_with = list(e.get("with", []))
    t.conflict_text = dict(e.get("text", {}))
    if t.id not in s._conflict_started:
        s.conflicts_seen += 1
        s._conflict_started[t.id] = float(e["t"])
    step = e.get("step")
    if step == "rerun":
        t.reruns += 1
    if step == "sequential":
        t.sequential = True


def _scope(s: RunState, e: Event) -> None:
    t = s._ticket(e)
    if t is not None:
        t.scope_violations = list(e.get("paths", []))


def _retry(s: RunState, e: Event) -> None:
    t = s._ticket(e)
    if t is not None:
        t.result_ready = False
        t.status = TicketState.PENDING
        t.reason = e.get("reason")
        t.agent = e.get("agent", t.agent)
        t.slot = None


def _finished(s: RunState, e: Event) -> None:
    t = s._ticket(e)
    if t is None:
        return
    t.result_ready = False
    t.status = TicketState(e["state"])
    t.reason = e.get("reason")
    t.finished_at = float(e["t"])
    t.slot = None
    if t.status is not TicketState.CONFLICT:
        s._conflict_started.pop(t.id, None)


def _requeued(s: RunState, e: Event) -> None:
    t = s._ticket(e)
    if t is not None:
        t.result_ready = bool(e.get("keep_result")) and t.result_ready
        t.status = TicketState.PENDING
        t.reason = None
        t.finished_at = None
        if e.get("agent"):
            t.agent = e["agent"]
        if e.get("reset_attempts"):
            t.attempts = 0


def _head_moved(s: RunState, e: Event) -> None:
    s.head = e["head"]
    for tid in e.get("tickets", []):
        t = s.tickets.get(tid)
        if t is not None:
            s.recorded[tid] = t.status.value


def _gate_passed(s: RunState, e: Event) -> None:
    s.gate_runs_passed += 1
    for tid in e.get("tickets", []):
        t = s.tickets.get(tid)
        if t is not None:
            t.awaiting_gate = False
            t.status = TicketState.COMPLETED
            t.finished_at = float(e["t"])


def _gate_failed(s: RunState, e: Event) -> None:
    s.gate_failures += 1
    t = s.tickets.get(str(e.get("ticket")))
    if t is not None:
        t.awaiting_gate = False
        t.gate_output = str(e.get("output", ""))


def _gate_run(s: RunState, e: Event) -> None:
    s.gate_runs += 1


def _overlap(s: RunState, e: Event) -> None:
    a, b = e["tickets"]
    s.overlaps[(a, b)] = list(e.get("paths", []))


def _validation(s: RunState, e: Event) -> None:
    s.validation = {"ok": bool(e.get("ok")), "problems": list(e.get("problems", []))}


def _control(s: RunState, e: Event) -> None:
    action = e.get("action")
    if action == "pause":
        s.paused = True
        s.status = RunStatus.PAUSED
    elif action == "resume":
        s.paused = False
        s.status = RunStatus.RUNNING
    elif action == "stop":
        s.stopping = True
    elif action == "adjust" and e.get("jobs"):
        s.jobs = int(e["jobs"])
    elif action == "priority" and e.get("ticket") in s.tickets:
        s.tickets[e["ticket"]].priority = int(e["priority"])


def _warning(s: RunState, e: Event) -> None:
    s.warnings.append(str(e.get("message", "")))


def _run_finished(s: RunState, e: Event) -> None:
    s.status = RunStatus(e["state"])
    s.finished_at = float(e["t"])
    s.head = e.get("head", s.head)
    s.paused = False


_HANDLERS = {
    "run-started": _run_started,
    "run-resumed": _run_resumed,
    "ticket-dispatched": _dispatched,
    "agent-started": _agent_started,
    "agent-exited": _agent_exited,
    "ticket-committed": _committed,
    "ticket-validating": _validating,
    "ticket-validated": _validated,
    "work-done": _work_done,
    "ticket-merging": _merging,
    "ticket-merged": _merged,
    "conflict": _conflict,
    "scope-violation": _scope,
    "ticket-retry": _retry,
    "ticket-requeued": _requeued,
    "ticket-finished": _finished,
    "head-moved": _head_moved,
    "control": _control,
    "warning": _warning,
    "gate-passed": _gate_passed,
    "overlap": _overlap,
    "validation": _validation,
    "gate-failed": _gate_failed,
    "gate-run": _gate_run,
    "run-finished": _run_finished,
}


def replay(run_id: str, events: Iterable[Event]) -> RunState:
    state = RunState(run_id)
    for e in events:
        state.apply(e)
    return state


def load_run(state_dir: Path, run_id: str) -> RunState:
    """Rebuild a run from its journal; a run with no finish and no live engine is crashed."""
    state = replay(run_id, read_events(state_dir / RUNS_DIR / run_id / JOURNAL))
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
