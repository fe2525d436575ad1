"""What every report shares: a run as reports see it, with clean, redacted text.

Agents print anything: ANSI colours, NUL, invalid UTF-8, secrets from their environment.
Every string a report embeds goes through `RunReport.text` (or `log_tail`), which decodes
with replacement, strips terminal escapes, replaces characters XML 1.0 cannot hold and
redacts secrets, so each format only has to escape for its own syntax.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gitexec import events as ev
from gitexec.fields import strip_bidi
from gitexec.journal import JOURNAL, load_events
from gitexec.runstate import RUNS_DIR, RunState, TicketRun, load_run
from gitexec.secrets import REDACTED, Redactor, is_secret_name
from gitexec.tickets import TicketState

# Redaction lives in gitexec.secrets; these names stay importable from here.
__all__ = [
    "REDACTED",
    "GateSpan",
    "Outcome",
    "Redactor",
    "RunReport",
    "Span",
    "clean_text",
    "is_secret_name",
    "kind",
    "outcome",
    "tail_of",
]

# Terminal escape sequences: CSI (colours, cursor), OSC (titles, hyperlinks), DCS/SOS/PM/APC
# strings, two-character escapes, and the 8-bit CSI.
_ANSI = re.compile(
    r"""
      \x1b\[[0-?]*[ -/]*[@-~]
    | \x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?
    | \x1b[PX^_][^\x1b]*(?:\x1b\\)?
    | \x1b[ -/]*[0-~]
    | \x9b[0-?]*[ -/]*[@-~]
    """,
    re.VERBOSE,
)
# Characters outside XML 1.0's Char production (lone surrogates included), plus DEL and the
# C1 controls that XML 1.0 only discourages: all replaced by U+FFFD.
_NOT_XML = re.compile("[^\t\n\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def clean_text(value: str | bytes) -> str:
    """Printable text from raw output: decoded, escapes and bidirectional controls
    stripped, XML 1.0 safe, LF only.

    A carriage return inside a line (progress bars) keeps what a terminal would show last.
    """
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    text = _ANSI.sub("", text)
    text = strip_bidi(text)
    if "\r" in text:
        text = text.replace("\r\n", "\n")
        text = "\n".join(_overwritten(line) for line in text.split("\n"))
    return _NOT_XML.sub("\ufffd", text)


def _overwritten(line: str) -> str:
    parts = [p for p in line.split("\r") if p]
    return parts[-1] if parts else ""


class Outcome(enum.Enum):
    """How a ticket reads in a test report (doit's failure / error / skipped split)."""

    PASSED = "passed"
    FAILURE = "failure"  # the agent or its validation said no
    ERROR = "error"  # a conflict, or the agent/engine could not do its job
    SKIPPED = "skipped"  # blocked, cancelled, or not finished


# Reasons the engine gives when it, or the agent's setup, could not do the job (an error);
# any other failure is the agent's or its validation's verdict on the work (a failure).
_ENGINE_ERROR = re.compile(
    r"internal error|git failed|worktree setup command|prompt template|agent '[^']*': argument"
    r"|agent exited with status 12[67]\b|agent could not start"
)


def outcome(ticket: TicketRun) -> Outcome:
    status = ticket.status
    if status is TicketState.COMPLETED:
        return Outcome.PASSED
    if status is TicketState.FAILED:
        return Outcome.ERROR if _ENGINE_ERROR.match(ticket.reason or "") else Outcome.FAILURE
    if status is TicketState.CONFLICT:
        return Outcome.ERROR
    return Outcome.SKIPPED


def kind(ticket: TicketRun) -> str:
    """A short machine-readable cause: failed, timeout, validation, conflict, agent-error ..."""
    reason = ticket.reason or ""
    status = ticket.status
    if status is TicketState.FAILED:
        if reason.startswith("agent timed out"):
            return "timeout"
        if reason.startswith("validation "):
            return "validation"
        if reason.startswith(("agent exited with status 12", "agent could not start")):
            return "agent-error" if outcome(ticket) is Outcome.ERROR else "failed"
        if reason.startswith(("worktree setup command", "prompt template", "agent '")):
            return "setup-error"
        if outcome(ticket) is Outcome.ERROR:
            return "engine-error"
        return "failed"
    if not status.terminal:
        return "unfinished"
    return str(status.value)


@dataclass(frozen=True)
class Span:
    """One attempt of a ticket holding a slot: dispatch to work done (end None: still on)."""

    ticket: str
    slot: int | None
    attempt: int
    start: float
    end: float | None
    ok: bool | None


def spans_from_events(events: Iterable[ev.Event]) -> list[Span]:
    open_: dict[str, Span] = {}
    done: list[Span] = []
    for e in events:
        if isinstance(e, ev.TicketDispatched):
            open_[e.ticket] = Span(e.ticket, e.slot, e.attempt, e.t, None, None)
        elif isinstance(e, ev.TicketCollected):
            done.append(Span(e.ticket, None, e.attempts, e.t - e.duration_s, e.t, bool(e.commit)))
        elif isinstance(e, ev.WorkDone) and e.ticket in open_:
            s = open_.pop(e.ticket)
            done.append(Span(s.ticket, s.slot, s.attempt, s.start, e.t, e.ok))
        elif isinstance(e, ev.RunResumed):
            open_.clear()  # attempts cut off by a crash or stop never reported back
    done.extend(open_.values())
    done.sort(key=lambda s: (s.start, s.ticket))
    return done


@dataclass(frozen=True)
class GateSpan:
    """One run of the integration gate over a batch of merges (end None: still running)."""

    tickets: tuple[str, ...]
    start: float
    end: float | None
    ok: bool | None


def gate_spans_from_events(events: Iterable[ev.Event]) -> list[GateSpan]:
    out: list[GateSpan] = []
    current: GateSpan | None = None
    for e in events:
        if isinstance(e, ev.GateStarted):
            current = GateSpan(e.tickets, e.t, None, None)
        elif isinstance(e, (ev.GatePassed, ev.GateFailed)) and current is not None:
            out.append(GateSpan(current.tickets, current.start, e.t, isinstance(e, ev.GatePassed)))
            current = None
        elif isinstance(e, ev.RunResumed) and current is not None:
            out.append(GateSpan(current.tickets, current.start, e.t, None))  # cut off
            current = None
    if current is not None:
        out.append(current)
    return out


def spans_from_state(state: RunState) -> list[Span]:
    """Spans approximated from tickets alone (a state built without a journal)."""
    out = [
        Span(t.id, t.slot, max(1, t.attempts), t.started_at, t.finished_at, None)
        for t in state.tickets.values()
        if t.started_at is not None
    ]
    out.sort(key=lambda s: (s.start, s.ticket))
    return out


@dataclass
class RunReport:
    """A run plus where its logs are, the attempts on slots, and the redaction to apply."""

    state: RunState
    run_dir: Path | None = None
    spans: list[Span] = field(default_factory=list)
    redactor: Redactor = field(default_factory=Redactor.from_environ)
    gates: list[GateSpan] = field(default_factory=list)
    _texts: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.spans:
            self.spans = spans_from_state(self.state)

    @classmethod
    def load(
        cls, state_dir: Path, run_id: str, *, environ: Mapping[str, str] | None = None
    ) -> RunReport:
        """A run from its journal: works while it runs, and after it finished or crashed."""
        run_dir = state_dir / RUNS_DIR / run_id
        state = load_run(state_dir, run_id)
        events = load_events(run_dir / JOURNAL).events
        return cls(
            state,
            run_dir,
            spans_from_events(events),
            Redactor.from_environ(environ),
            gate_spans_from_events(events),
        )

    @property
    def run_id(self) -> str:
        return self.state.run_id

    def text(self, value: object) -> str:
        """Any value as report-safe text (None is empty)."""
        if value is None:
            return ""
        if isinstance(value, bytes):
            return self.redactor(clean_text(value))
        raw = value if isinstance(value, str) else str(value)
        done = self._texts.get(raw)
        if done is None:
            done = self._texts[raw] = self.redactor(clean_text(raw))
        return done

    def log_path(self, tid: str) -> Path | None:
        return None if self.run_dir is None else self.run_dir / "logs" / f"{tid}.log"

    def log_tail(self, tid: str, *, max_lines: int, max_chars: int) -> str:
        """The end of a ticket's log, cleaned and redacted; '' when there is none."""
        path = self.log_path(tid)
        if path is None or max_lines <= 0 or max_chars <= 0:
            return ""
        return tail_of(path, max_lines=max_lines, max_chars=max_chars, redact=self.redactor)

    def ordered(self) -> list[TicketRun]:
        """Tickets in plan order: group by group, then any the plan did not list."""
        seen: set[str] = set()
        out: list[TicketRun] = []
        for group in self.state.groups:
            for tid in group:
                t = self.state.tickets.get(tid)
                if t is not None and tid not in seen:
                    seen.add(tid)
                    out.append(t)
        rest = sorted((t for tid, t in self.state.tickets.items() if tid not in seen), key=_order)
        return out + rest

    def by_group(self) -> list[tuple[int, list[TicketRun]]]:
        groups: dict[int, list[TicketRun]] = {}
        for t in self.ordered():
            groups.setdefault(t.group, []).append(t)
        return sorted(groups.items())

    def target_parallelism(self) -> float:
        """The most parallelism this run could have had with these durations: the work over
        the shortest wall time that can do it, max(critical path, work / jobs), plus the time
        only gates ran (nothing else could). Without gates: min(jobs, work / path)."""
        work = sum(t.agent_s for t in self.state.tickets.values())
        path = self.state.measured_critical_path_s()
        if work <= 0 or path <= 0:
            return 1.0
        shortest = max(path, work / max(1, self.state.jobs))
        return float(f"{work / (shortest + self.state.gate_only_s):.3g}")


def _order(t: TicketRun) -> tuple[int, str]:
    return (t.group, t.id)


_TAIL_MARGIN = 4096  # read a little more, so a secret cut at the edge is still recognised


def tail_of(path: Path, *, max_lines: int, max_chars: int, redact: Redactor) -> str:
    """The last lines of a (possibly huge, binary-laden) file as clean, redacted text."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            want = max_chars * 4 + _TAIL_MARGIN  # up to 4 UTF-8 bytes a character
            start = max(0, size - want)
            f.seek(start)
            data = f.read()
    except OSError:
        return ""
    if start > 0:
        cut = data.find(b"\n")
        data = data[cut + 1 :] if cut >= 0 else data
    lines = redact(clean_text(data)).rstrip("\n").split("\n")
    cut_front = start > 0 or len(lines) > max_lines
    lines = lines[-max_lines:]
    kept: list[str] = []
    used = 0
    for line in reversed(lines):
        if used + len(line) + 1 > max_chars:
            if not kept:
                kept.append(line[-max_chars:])
            cut_front = True
            break
        kept.append(line)
        used += len(line) + 1
    text = "\n".join(reversed(kept))
    if cut_front and text:
        text = "[... earlier output not shown ...]\n" + text
    return text
