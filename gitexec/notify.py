"""Notifications: the config's `notify:` commands, run on a run's events (run finished, a
ticket failed or ended in a conflict, a provider throttled, a budget was reached).

The event goes to each command as JSON on stdin and in `GITEXEC_EVENT` (its kind), with
`{{ message }}`, `{{ event }}`, ... in its argv. Commands run one at a time on a thread of
their own with a bounded queue, so they never hold up the run; what goes wrong with them
(a non-zero exit, a timeout, a missing program, a flood) is a warning in the journal, and
their output goes to `logs/notify.log`, never into the run's outcome.
"""

from __future__ import annotations

import contextlib
import functools
import json
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from gitexec import events as ev
from gitexec import process
from gitexec.notifyspec import NotifySpec
from gitexec.records import to_record
from gitexec.runmetrics import metrics
from gitexec.runstate import RunState
from gitexec.secrets import Redactor
from gitexec.templating import BoundedEnvironment, RenderError, render_bounded
from gitexec.ticketrun import iso
from gitexec.tickets import ConflictStep, TicketState

QUEUE_SIZE = 32  # notifications waiting; more are dropped (with a warning)
CLOSE_TIMEOUT_S = 15.0
GRACE_S = 2.0  # after a timeout: SIGTERM, then SIGKILL this much later
LOG_CAP = 1024 * 1024


@dataclass(frozen=True)
class Notification:
    """An event worth telling someone about, as notify commands receive it."""

    kind: str  # one of notifyspec.NOTIFY_EVENTS
    message: str  # one line for people
    payload: Mapping[str, Any]  # the JSON on stdin


def notification(event: ev.Event, run_id: str, state: RunState | None) -> Notification | None:
    """The notification an event makes, or None (most events make none)."""
    kind: str | None
    match event:
        case ev.RunFinished():
            kind = "run-finished"
        case ev.TicketFinished(state=TicketState.FAILED):
            kind = "ticket-failed"
        case ev.Conflict(step=ConflictStep.FAIL):
            kind = "conflict"
        case ev.TicketThrottled():
            kind = "throttled"
        case ev.BudgetReached():
            kind = "budget-reached"
        case _:
            kind = None
    if kind is None:
        return None
    record = to_record(event)
    # Conflict hunks are file contents: too big for a message, and in the report anyway.
    details = {k: v for k, v in record.items() if k not in ("event", "seq", "t", "text")}
    payload: dict[str, Any] = {"event": kind, "run": run_id, "time": iso(event.t or None)}
    payload.update(details)
    if state is not None:
        payload.update(_context(event, state))
    message = f"gitexec run {run_id}: {_describe(kind, payload)}"
    payload["message"] = message
    return Notification(kind, message, payload)


def _context(event: ev.Event, state: RunState) -> dict[str, Any]:
    if isinstance(event, ev.RunFinished):
        m = metrics(state)
        keys = ("total", "completed", "failed", "conflict", "blocked", "cancelled", "wall_s")
        return {
            "integration": state.integration,
            "metrics": {k: m[k] for k in (*keys, "cost_usd")},
        }
    if isinstance(event, ev.TicketEvent) and event.ticket in state.tickets:
        t = state.tickets[event.ticket]
        return {"title": t.title, "agent": t.agent, "attempts": t.attempts, "file": t.file}
    return {}


def _describe(kind: str, p: Mapping[str, Any]) -> str:
    ticket = p.get("ticket", "")
    if kind == "run-finished":
        m = p.get("metrics") or {}
        done = f": {m['completed']}/{m['total']} tickets completed" if m else ""
        return f"{p.get('state')}{done}"
    if kind == "ticket-failed":
        return f"{ticket} failed: {p.get('reason') or 'no reason given'}"
    if kind == "conflict":
        return f"{ticket} ended in a conflict on {', '.join(p.get('paths') or []) or '?'}"
    if kind == "throttled":
        return f"{ticket} throttled, waits {p.get('delay_s', 0):g}s: {p.get('reason')}"
    return f"budget reached: ${p['spent_usd']:.4f} of ${p['budget_usd']:.4f} spent"


@dataclass(frozen=True)
class _Job:
    spec: NotifySpec
    argv: tuple[str, ...]
    note: Notification


class Notifier:
    """Runs `notify:` commands for the events it observes, in the background.

    `observe` never blocks (the engine calls it for every event it journals); `warn`
    reports trouble (from any thread; the engine journals it as a warning); `close` lets
    queued notifications run for up to `timeout` seconds, then cancels the rest.
    """

    def __init__(
        self,
        specs: Sequence[NotifySpec],
        *,
        run_id: str,
        cwd: Path,
        log: Path,
        warn: Callable[[str], object],
        state: RunState | None = None,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self.specs = tuple(specs)
        self.run_id = run_id
        self.cwd = cwd
        self.log = log
        self.state = state
        self._warn = warn
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=queue_size)
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._dropped = 0
        self._closed = False
        self._templates: dict[str, jinja2.Template] = {}
        self._redact = Redactor.from_environ()

    # --- the engine's side ----------------------------------------------------------------

    def observe(self, event: ev.Event) -> None:
        """Queue the notify commands this event calls for (never waits for them)."""
        if not self.specs or self._closed:
            return
        note = notification(event, self.run_id, self.state)
        if note is None:
            return
        for spec in self.specs:
            if note.kind not in spec.on:
                continue
            argv = self._render(spec, note)
            if argv is not None:
                self._put(_Job(spec, argv, note))

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Let queued notifications run for at most `timeout` seconds, then stop."""
        self._closed = True
        thread = self._thread
        if thread is None:
            return
        deadline = time.monotonic() + timeout
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            self._cancel.set()
            thread.join(GRACE_S + 1.0)
        if self._dropped:
            self.warn(f"notify: {self._dropped} notification(s) were dropped")

    # --- the worker's side ----------------------------------------------------------------

    def _render(self, spec: NotifySpec, note: Notification) -> tuple[str, ...] | None:
        context = {
            "event": note.payload,
            "kind": note.kind,
            "message": note.message,
            "run_id": self.run_id,
            "ticket": note.payload.get("ticket", ""),
        }
        out = []
        for arg in spec.command:
            try:
                template = self._templates.get(arg)
                if template is None:
                    template = self._templates[arg] = _sandbox().compile_text(arg)
                out.append(render_bounded(template, context))
            except RenderError as exc:
                self.warn(f"notify {spec.command[0]!r}: argument {arg!r}: {exc}")
                return None
        return tuple(out)

    def _put(self, job: _Job) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="gitexec-notify", daemon=True)
            self._thread.start()
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self._dropped += 1
            if self._dropped == 1:  # once: a flood must not flood the journal too
                self.warn(
                    f"notify: more than {self._queue.maxsize} notifications waiting; "
                    "dropping new ones until the commands catch up"
                )

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None or self._cancel.is_set():
                return
            self._run(job)

    def _run(self, job: _Job) -> None:
        note = job.note
        env = {
            "GITEXEC_EVENT": note.kind,
            "GITEXEC_RUN": self.run_id,
            "GITEXEC_TICKET": str(note.payload.get("ticket") or ""),
            "GITEXEC_MESSAGE": note.message,
        }
        name = job.argv[0]
        try:
            result = process.run_process(
                job.argv,
                cwd=self.cwd,
                env=env,
                log=self.log,
                timeout_s=job.spec.timeout_s,
                cancel=self._cancel,
                header=f"=== notify {note.kind}: {name} ===\n",
                grace_s=GRACE_S,
                stdin=(json.dumps(note.payload) + "\n").encode(),
                redact=self._redact.redact_bytes,
                log_cap=LOG_CAP,
                sample_every_s=3600.0,
            )
        except Exception as exc:  # whatever happens to a notification, the run goes on
            self.warn(f"notify {name!r} on {note.kind}: {type(exc).__name__}: {exc}")
            return
        problem = None
        if result.start_error:
            problem = f"could not start: {result.start_error}"
        elif result.timed_out:
            problem = f"timed out after {job.spec.timeout_s:g}s"
        elif result.cancelled:
            problem = "cancelled at the end of the run"
        elif result.exit_code != 0:
            problem = f"exited with status {result.exit_code}"
        if problem:
            self.warn(f"notify {name!r} on {note.kind} {problem} (see {self.log})")

    def warn(self, message: str) -> None:
        """Report trouble; a warning that cannot be journaled any more is not an error."""
        with contextlib.suppress(Exception):
            self._warn(message)


@functools.cache
def _sandbox() -> BoundedEnvironment:
    return BoundedEnvironment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False
    )
