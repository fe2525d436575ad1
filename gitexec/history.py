"""What past runs took: a compact history under the git common dir (`history.jsonl`, one
JSON line per finished run with each ticket's facts), kept small (the newest runs that
fit a byte budget) and safe to share between processes, and what it teaches: estimates for
tickets that declare none, and the patterns `history` and `diagnose` show (patterns.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import statistics
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from gitexec.plan import Measured
from gitexec.runstate import RunState, TicketRun
from gitexec.tickets import Ticket, TicketState

HISTORY_FILE = "history.jsonl"
LOCK_FILE = "history.lock"
VERSION = 1
MAX_RUNS = 200  # the newest runs kept ...
MAX_BYTES = 4 * 1024 * 1024  # ... within this many bytes (the newest run is always kept)
RECENT = 5  # a ticket's measured estimate: the median of its last RECENT completed runs


_STATES = {s.value: s for s in TicketState}


class TicketFacts(NamedTuple):
    """One ticket in one finished run: how it ended, what it took and cost (a NamedTuple:
    a history holds tens of thousands, read at every `plan`)."""

    ticket: str
    outcome: TicketState
    agent: str
    duration_s: float = 0.0  # agent (and validate) time over all attempts
    attempts: int = 0
    failed_attempts: int = 0
    throttles: int = 0
    conflicts: tuple[str, ...] = ()  # paths it conflicted on
    cost_usd: float | None = None  # None: unknown (or the agent reports no cost)
    input_tokens: int = 0
    output_tokens: int = 0
    cpu_s: float = 0.0
    peak_rss_mb: float | None = None

    @classmethod
    def of(cls, t: TicketRun) -> TicketFacts:
        return cls(
            ticket=t.id,
            outcome=t.status,
            agent=t.agent,
            duration_s=round(t.agent_s, 3),
            attempts=t.attempts,
            failed_attempts=t.failed_attempts,
            throttles=t.throttles,
            conflicts=tuple(t.conflicts),
            cost_usd=None if t.total_cost_usd is None else round(t.total_cost_usd, 6),
            input_tokens=t.usage.input_tokens if t.usage else 0,
            output_tokens=t.usage.output_tokens if t.usage else 0,
            cpu_s=round(t.cpu_s, 3),
            peak_rss_mb=None if t.peak_rss_mb is None else round(t.peak_rss_mb, 1),
        )

    @property
    def ran(self) -> bool:
        """Its agent ran (blocked and cancelled tickets never started)."""
        return self.attempts > 0

    def to_json(self) -> dict[str, Any]:
        """Compact: keys at their default are left out."""
        out: dict[str, Any] = {"outcome": self.outcome.value, "agent": self.agent}
        for key in ("duration_s", "attempts", "failed_attempts", "throttles"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        for key in ("cost_usd", "peak_rss_mb"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        for key in ("input_tokens", "output_tokens", "cpu_s"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.conflicts:
            out["conflicts"] = list(self.conflicts)
        return out

    @classmethod
    def from_json(cls, tid: str, raw: Any) -> TicketFacts | None:
        """The facts of a record, or None when it does not read as one."""
        if not isinstance(raw, dict):
            return None
        outcome = _STATES.get(raw.get("outcome"))  # type: ignore[arg-type]
        if outcome is None:
            return None
        conflicts = raw.get("conflicts", [])
        return cls(
            ticket=tid,
            outcome=outcome,
            agent=raw["agent"] if isinstance(raw.get("agent"), str) else "",
            duration_s=_number(raw.get("duration_s")) or 0.0,
            attempts=int(_number(raw.get("attempts")) or 0),
            failed_attempts=int(_number(raw.get("failed_attempts")) or 0),
            throttles=int(_number(raw.get("throttles")) or 0),
            conflicts=tuple(p for p in conflicts if isinstance(p, str))
            if isinstance(conflicts, list)
            else (),
            cost_usd=_number(raw.get("cost_usd")),
            input_tokens=int(_number(raw.get("input_tokens")) or 0),
            output_tokens=int(_number(raw.get("output_tokens")) or 0),
            cpu_s=_number(raw.get("cpu_s")) or 0.0,
            peak_rss_mb=_number(raw.get("peak_rss_mb")),
        )


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if 0 <= value < 1e15 else None


@dataclass(frozen=True)
class RunFacts:
    """A finished run: its end, and the facts of each ticket that ended in it."""

    run: str
    finished_at: float
    state: str
    jobs: int
    wall_s: float
    tickets: tuple[TicketFacts, ...]

    @classmethod
    def of(cls, state: RunState) -> RunFacts:
        return cls(
            run=state.run_id,
            finished_at=round(state.finished_at or state.last_event_at, 3),
            state=state.status.value,
            jobs=state.jobs,
            wall_s=round(state.wall_s(), 3),
            tickets=tuple(
                TicketFacts.of(t) for _, t in sorted(state.tickets.items()) if t.status.terminal
            ),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "v": VERSION,
            "run": self.run,
            "finished_at": self.finished_at,
            "state": self.state,
            "jobs": self.jobs,
            "wall_s": self.wall_s,
            "tickets": {f.ticket: f.to_json() for f in self.tickets},
        }

    @classmethod
    def from_json(cls, raw: Any) -> RunFacts | None:
        if not isinstance(raw, dict) or raw.get("v") != VERSION:
            return None
        run, tickets = raw.get("run"), raw.get("tickets")
        if not isinstance(run, str) or not isinstance(tickets, dict):
            return None
        facts = (TicketFacts.from_json(str(tid), t) for tid, t in tickets.items())
        return cls(
            run=run,
            finished_at=_number(raw.get("finished_at")) or 0.0,
            state=raw["state"] if isinstance(raw.get("state"), str) else "",
            jobs=int(_number(raw.get("jobs")) or 0),
            wall_s=_number(raw.get("wall_s")) or 0.0,
            tickets=tuple(f for f in facts if f is not None),
        )


# --- the file --------------------------------------------------------------------------------


def record_run(
    state_dir: Path, state: RunState, *, max_runs: int = MAX_RUNS, max_bytes: int = MAX_BYTES
) -> str | None:
    """Add a run's facts to the history (replacing an earlier record of the same run, as a
    resumed run or the next wave's `collect` writes again); None, or why it could not be
    written. A history that cannot be written never fails the run."""
    facts = RunFacts.of(state)
    if not facts.tickets:
        return None
    line = (json.dumps(facts.to_json(), separators=(",", ":")) + "\n").encode()
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        with _locked(state_dir):
            path = state_dir / HISTORY_FILE
            torn = path.is_file() and path.stat().st_size > 0 and not _ends_with_newline(path)
            with open(path, "ab") as f:
                if torn:  # a writer killed mid-line: end its line, so ours stands alone
                    f.write(b"\n")
                f.write(line)
                f.flush()
                os.fdatasync(f.fileno())
            lines = _read_lines(path)
            if len(lines) > max_runs or sum(map(len, lines)) > max_bytes:
                _compact(path, lines, max_runs=max_runs, max_bytes=max_bytes)
    except OSError as exc:
        return f"the run history ({state_dir / HISTORY_FILE}) could not be written: {exc}"
    return None


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """Writers take turns: runs record after letting go of the engine lock, so the next
    run or a `collect` may be finishing at the same moment."""
    fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _read_lines(path: Path) -> list[bytes]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return [line + b"\n" for line in data.split(b"\n") if line.strip()]


def _compact(path: Path, lines: list[bytes], *, max_runs: int, max_bytes: int) -> None:
    """Rewrite the history with the newest runs that fit (torn and superseded lines go);
    readers see the old file or the new one, never half of one."""
    kept: list[bytes] = []
    seen: set[str] = set()
    size = 0
    for line in reversed(lines):
        facts = _parse(line)
        if facts is None or facts.run in seen:
            continue
        if kept and (len(kept) >= max_runs or size + len(line) > max_bytes):
            break
        seen.add(facts.run)
        kept.append(line)
        size += len(line)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".history-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.writelines(reversed(kept))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _parse(line: bytes) -> RunFacts | None:
    try:
        return RunFacts.from_json(json.loads(line))
    except (ValueError, RecursionError):
        return None


# --- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class History:
    """Past runs, oldest first (one record per run: its latest)."""

    runs: tuple[RunFacts, ...] = ()
    skipped: int = 0  # lines that did not read (torn by a crash, or from another version)

    @classmethod
    def load(cls, state_dir: Path, *, limit: int | None = None) -> History:
        """The history of this repository; `limit`: only the newest runs."""
        latest: dict[str, RunFacts] = {}
        skipped = 0
        for line in _read_lines(state_dir / HISTORY_FILE):
            facts = _parse(line)
            if facts is None:
                skipped += 1
                continue
            latest.pop(facts.run, None)
            latest[facts.run] = facts
        runs = sorted(latest.values(), key=lambda r: r.finished_at)
        if limit is not None:
            runs = runs[-limit:] if limit > 0 else []
        return cls(tuple(runs), skipped)

    def facts(self) -> Iterator[tuple[RunFacts, TicketFacts]]:
        for run in self.runs:
            for t in run.tickets:
                yield run, t

    def of_ticket(self, tid: str) -> list[tuple[RunFacts, TicketFacts]]:
        return [(r, t) for r, t in self.facts() if t.ticket == tid]

    def estimates(self, tickets: Iterable[Ticket], default_agent: str) -> Measured:
        """Estimates for the tickets that declare none: the median of a ticket's last
        completed runs, else the mean of its agent's completed tickets."""
        own: dict[str, list[float]] = {}
        by_agent: dict[str, list[float]] = {}
        for _, t in self.facts():
            if t.outcome is TicketState.COMPLETED and t.duration_s > 0:
                own.setdefault(t.ticket, []).append(t.duration_s)
                by_agent.setdefault(t.agent, []).append(t.duration_s)
        agent_mean = {a: round(statistics.fmean(d), 3) for a, d in by_agent.items()}
        seconds: dict[str, float] = {}
        from_agent: set[str] = set()
        for ticket in tickets:
            if ticket.estimate_s is not None:
                continue
            if ticket.id in own:
                seconds[ticket.id] = round(statistics.median(own[ticket.id][-RECENT:]), 3)
                continue
            mean = agent_mean.get(ticket.agent or default_agent)
            if mean is not None:
                seconds[ticket.id] = mean
                from_agent.add(ticket.id)
        return Measured(seconds, frozenset(from_agent))

    def expected_cost(self, tickets: Iterable[Ticket], default_agent: str) -> CostRange | None:
        """What running `tickets` should cost, from what past runs spent: per ticket, the
        range of its own last runs with the same agent, else what its agent's tickets
        cost (the middle 80% once there are ten of them). None: no past run knew a cost."""
        own: dict[tuple[str, str], list[float]] = {}
        by_agent: dict[str, list[float]] = {}
        for _, t in self.facts():
            if t.ran and t.cost_usd is not None:
                own.setdefault((t.ticket, t.agent), []).append(t.cost_usd)
                by_agent.setdefault(t.agent, []).append(t.cost_usd)
        if not by_agent:
            return None
        low = high = 0.0
        unknown: list[str] = []
        for ticket in tickets:
            agent = ticket.agent or default_agent
            costs = own.get((ticket.id, agent), [])[-RECENT:] or by_agent.get(agent, [])
            if not costs:
                unknown.append(ticket.id)
                continue
            if len(costs) >= 10:
                deciles = statistics.quantiles(costs, n=10)
                low, high = low + deciles[0], high + deciles[-1]
            else:
                low, high = low + min(costs), high + max(costs)
        return CostRange(round(low, 6), round(high, 6), tuple(unknown))


@dataclass(frozen=True)
class CostRange:
    """A run's expected cost in USD, and the tickets no past run gives a cost for."""

    low_usd: float
    high_usd: float
    unknown: tuple[str, ...] = ()

    def describe(self) -> str:
        span = f"${self.low_usd:.2f}" + (
            f"–${self.high_usd:.2f}" if round(self.high_usd, 2) != round(self.low_usd, 2) else ""
        )
        text = f"expected cost {span} (from past runs)"
        if self.unknown:
            shown = ", ".join(self.unknown[:5]) + (", ..." if len(self.unknown) > 5 else "")
            text += f"; no past cost for {len(self.unknown)} ticket(s): {shown}"
        return text


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def cost_total(costs: Iterable[float | None]) -> float | None:
    """The sum of known costs; None when there were none."""
    known = [c for c in costs if c is not None]
    return round(sum(known), 6) if known else None


def by_ticket(history: History) -> Mapping[str, list[TicketFacts]]:
    out: dict[str, list[TicketFacts]] = {}
    for _, t in history.facts():
        out.setdefault(t.ticket, []).append(t)
    return out
