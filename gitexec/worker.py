"""One attempt of one ticket in one slot: prepare the slot, render the agent's argv, run
it, commit what it changed, run `validate`; the answer is an `Outcome` value.

A worker runs on its own thread with a read-only `WorkerContext`: it never touches the
scheduler or the integration branch. What happens along the way is journaled through
`ctx.emit` (thread-safe), so status and dashboards see an attempt as it goes.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from gitexec import agents
from gitexec import events as ev
from gitexec.config import AgentSpec, Config
from gitexec.errors import CommandError
from gitexec.gitutil import Identity, RepoPaths
from gitexec.integration import ticket_message
from gitexec.pool import SetupError, Slot
from gitexec.scheduler import Attempt
from gitexec.tickets import Ticket


class AgentPlaces:
    """Counts running agents against an adjustable limit (`jobs`).

    The pool has one slot more than `jobs`: the spare slot's ticket resets its worktree
    while the others' agents run, then waits here for a place before its agent starts.
    """

    def __init__(self, limit: int) -> None:
        self._cond = threading.Condition()
        self._limit = limit
        self._active = 0

    def set_limit(self, limit: int) -> None:
        with self._cond:
            self._limit = limit
            self._cond.notify_all()

    @contextlib.contextmanager
    def held(self, cancel: threading.Event) -> Iterator[bool]:
        """Hold a place while the block runs; yields False when cancelled while waiting."""
        admitted = self._acquire(cancel)
        try:
            yield admitted
        finally:
            if admitted:
                with self._cond:
                    self._active -= 1
                    self._cond.notify_all()

    def _acquire(self, cancel: threading.Event) -> bool:
        with self._cond:
            while self._active >= self._limit:
                if cancel.is_set():
                    return False
                self._cond.wait(0.1)
            self._active += 1
            return True


@dataclass(frozen=True)
class WorkerContext:
    """What every attempt of a run shares; workers only read it."""

    paths: RepoPaths
    run_id: str
    run_dir: Path
    config: Config
    identity: Identity
    places: AgentPlaces
    emit: Callable[[ev.Event], object]  # journals from any thread

    def log(self, tid: str) -> Path:
        return self.run_dir / "logs" / f"{tid}.log"

    def progress_file(self, tid: str) -> Path:
        return self.run_dir / "progress" / tid


@dataclass
class Job:
    """An attempt handed to a worker thread."""

    attempt: Attempt
    ticket: Ticket
    agent: AgentSpec
    slot: Slot
    cancel: threading.Event = field(default_factory=threading.Event)
    waited_s: float = 0.0  # time spent waiting for an agent place (not engine overhead)

    @property
    def base(self) -> str:
        return self.attempt.base


@dataclass(frozen=True)
class Outcome:
    ok: bool
    commit: str | None = None
    reason: str | None = None
    retryable: bool = True
    cancelled: bool = False


def work(ctx: WorkerContext, job: Job) -> Outcome:
    """Run one attempt to its outcome; never raises (a worker must always report back)."""
    started = time.monotonic()
    try:
        outcome = _attempt(ctx, job)
    except (SetupError, agents.TemplateError) as exc:
        outcome = Outcome(False, reason=str(exc), retryable=False)
    except CommandError as exc:
        outcome = Outcome(False, reason=f"git failed in {job.slot.name}:\n{exc}")
    except Exception as exc:
        outcome = Outcome(False, reason=f"internal error: {type(exc).__name__}: {exc}")
    ctx.emit(
        ev.WorkDone(
            ticket=job.ticket.id,
            ok=outcome.ok,
            slot_s=round(time.monotonic() - started, 6),
            wait_s=round(job.waited_s, 6),
        )
    )
    return outcome


def _attempt(ctx: WorkerContext, job: Job) -> Outcome:
    t, slot = job.ticket, job.slot
    progress = ctx.progress_file(t.id)
    with contextlib.suppress(FileNotFoundError):
        progress.unlink()
    env = agents.agent_environment(
        job.agent,
        run_id=ctx.run_id,
        ticket=t,
        worktree=slot.path,
        base=job.base,
        progress_file=progress,
        conflicts=job.attempt.conflicts,
    )
    slot.prepare(ctx.paths, job.base, ctx.config.setup, env)
    argv = command_for(ctx, job)
    log = ctx.log(t.id)
    timeout = timeout_for(ctx.config, t, job.agent)

    with _admitted(ctx, job) as admitted:
        if not admitted:
            return Outcome(False, reason="stopped before the agent started", cancelled=True)
        result = agents.run_process(
            argv,
            cwd=slot.path,
            env=env,
            log=log,
            timeout_s=timeout,
            cancel=job.cancel,
            on_start=lambda pid, pgid: _started(ctx, t.id, pid, pgid),
            header=f"=== {t.id} attempt {job.attempt.attempt} ({job.agent.name}) "
            f"in {slot.name} ===\n",
        )
    ctx.emit(
        ev.AgentExited(
            ticket=t.id,
            exit_code=result.exit_code,
            timed_out=result.timed_out,
            cancelled=result.cancelled,
            duration_s=round(result.duration_s, 6),
        )
    )
    if result.cancelled:
        return Outcome(False, reason="stopped", cancelled=True)
    if result.timed_out:
        return Outcome(False, reason=f"agent timed out after {timeout:g}s")
    if result.exit_code != 0:
        return Outcome(False, reason=f"agent exited with status {result.exit_code}")

    collected = slot.collect(job.base, ticket_message(t.id, t.title, ctx.run_id), ctx.identity)
    ctx.emit(
        ev.TicketCommitted(
            ticket=t.id,
            commit=collected.commit,
            own_commits=collected.own_commits,
            empty=collected.empty(job.base),
        )
    )
    if t.validate:
        failed = _validate(ctx, job, env, log, timeout)
        if failed is not None:
            return failed
    return Outcome(True, commit=collected.commit)


def _started(ctx: WorkerContext, tid: str, pid: int, pgid: int) -> None:
    ctx.emit(ev.AgentStarted(ticket=tid, pid=pid, pgid=pgid))


def _validate(
    ctx: WorkerContext, job: Job, env: dict[str, str], log: Path, timeout: float | None
) -> Outcome | None:
    """Run the ticket's `validate` commands in its worktree; an Outcome when one fails."""
    t = job.ticket
    ctx.emit(ev.TicketValidating(ticket=t.id))
    with _admitted(ctx, job) as admitted:
        if not admitted:
            return Outcome(False, reason="stopped before validation", cancelled=True)
        for command in t.validate:
            check = agents.run_process(
                ["sh", "-c", command],
                cwd=job.slot.path,
                env=env,
                log=log,
                timeout_s=timeout,
                cancel=job.cancel,
                header=f"=== validate: {command}\n",
            )
            ctx.emit(
                ev.TicketValidated(
                    ticket=t.id,
                    command=command,
                    exit_code=check.exit_code,
                    ok=check.ok,
                    duration_s=round(check.duration_s, 6),
                )
            )
            if check.cancelled:
                return Outcome(False, reason="stopped", cancelled=True)
            if not check.ok:
                why = "timed out" if check.timed_out else f"exited {check.exit_code}"
                return Outcome(False, reason=f"validation {command!r} {why}")
    return None


@contextlib.contextmanager
def _admitted(ctx: WorkerContext, job: Job) -> Iterator[bool]:
    """Hold one of the `jobs` agent places, counting the wait (not engine overhead)."""
    waiting = time.monotonic()
    with ctx.places.held(job.cancel) as admitted:
        job.waited_s += time.monotonic() - waiting
        yield admitted


def timeout_for(config: Config, ticket: Ticket, agent: AgentSpec) -> float | None:
    for value in (ticket.timeout_s, agent.timeout_s, config.timeout_s):
        if value:
            return value
    return None


def command_for(ctx: WorkerContext, job: Job) -> tuple[str, ...]:
    """The agent's argv for this attempt, its templates rendered (never through a shell)."""
    t = job.ticket
    prompt = ""
    if any("prompt" in arg for arg in job.agent.command):
        template = None
        if job.agent.prompt_template:
            template = job.slot.path / job.agent.prompt_template
        prompt = agents.render_prompt(
            t,
            base=job.base,
            run_id=ctx.run_id,
            conflicts=job.attempt.conflicts,
            template_file=template,
        )
    context = {
        "ticket": agents.ticket_context(t),
        "prompt": prompt,
        "run": t.run or "",
        "worktree": str(job.slot.path),
        "base": job.base,
        "run_id": ctx.run_id,
        "conflicts": list(job.attempt.conflicts),
    }
    return agents.render_command(job.agent, context)
