"""One attempt of one ticket in one slot: prepare the slot, render the agent's argv, run
it, commit what it changed, run `validate`; the answer is an `Outcome` value.

A worker runs on its own thread with a read-only `WorkerContext`: it never touches the
scheduler or the integration branch. What happens along the way is journaled through
`ctx.emit` (thread-safe), so status and dashboards see an attempt as it goes.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pygit2

from gitexec import agents, budget, dialects, handoff, process, resources, secrets
from gitexec import events as ev
from gitexec.config import AgentSpec, Config
from gitexec.errors import CommandError
from gitexec.gitutil import Identity, RepoPaths
from gitexec.integration import ticket_message
from gitexec.merge import merge_trees
from gitexec.scheduler import Attempt, Urgency
from gitexec.slot import Slot
from gitexec.slotsetup import SetupError
from gitexec.tickets import Ticket

LIVE_USAGE_EVERY_S = 2.0


_places = itertools.count(1)  # one per attempt: a ticket's next attempt is another claim


class AgentPlaces:
    """Counts running agents against an adjustable limit (`jobs`); a free place goes to
    the most urgent attempt that wants one.

    The pool has one slot more than `jobs`: the spare slot's ticket resets its worktree
    while the others' agents run, then waits here for a place before its agent starts.
    Each attempt claims a place when dispatched, with its urgency, and takes one only
    while no more urgent claim is still preparing its slot. When an agent exits while a
    claim less urgent than the ticket its merge makes ready is waiting, its place is handed
    back only once the engine has handled its outcome (`hand_back`): by then that ticket is
    dispatched and claiming, so the next link of a chain is not overtaken by a spare that
    merely waited first. Under a run budget every place waits for the hand-back: the next
    agent starts only once the engine knows what the last one cost. Otherwise the place is
    free at once.
    """

    def __init__(self, limit: int) -> None:
        self._cond = threading.Condition()
        self._limit = limit
        self._claims: dict[int, Urgency] = {}  # dispatched, no place yet
        self._holding: set[int] = set()  # agent starting or running, or place not handed back
        self._handing_back: set[int] = set()  # outcome handled: free at the next hand-back
        self._makes_ready: dict[int, Urgency] = {}  # what each attempt's merge makes ready

    def must_wait(self, place: int) -> bool:
        with self._cond:
            return not self._may_take(place)

    def set_limit(self, limit: int) -> None:
        with self._cond:
            self._limit = limit
            self._cond.notify_all()

    def claim(self, place: int, urgency: Urgency, makes_ready: Urgency | None = None) -> None:
        with self._cond:
            self._claims[place] = urgency
            if makes_ready is not None:
                self._makes_ready[place] = makes_ready

    def finished(self, place: int) -> None:
        """The engine has the attempt's outcome: its place (if still held) goes at the next
        `hand_back`."""
        with self._cond:
            if self._claims.pop(place, None) is not None:
                self._cond.notify_all()
            if place in self._holding:
                self._handing_back.add(place)

    def hand_back(self) -> None:
        """Free the places of attempts whose outcome the engine has handled."""
        with self._cond:
            if self._handing_back:
                self._holding -= self._handing_back
                self._handing_back.clear()
                self._cond.notify_all()

    @contextlib.contextmanager
    def held(self, cancel: threading.Event, place: int, keep: bool | None = None) -> Iterator[bool]:
        """Hold a place while the block runs; yields False when cancelled while waiting.
        After the block the place stays taken until the engine hands it back: with `keep`
        True always, with None while a less urgent claim would overtake what its merge
        makes ready; with False it is free at once."""
        admitted = self._acquire(cancel, place)
        try:
            yield admitted
        finally:
            with self._cond:
                follows = self._makes_ready.pop(place, None)
                overtaken = follows is not None and any(u > follows for u in self._claims.values())
                if admitted and not (keep or (keep is None and overtaken)):
                    self._holding.discard(place)
                    self._cond.notify_all()

    def _may_take(self, place: int) -> bool:
        mine = self._claims.get(place)
        ahead = sum(1 for u in self._claims.values() if mine is not None and u < mine)
        return len(self._holding) + ahead < self._limit

    def _acquire(self, cancel: threading.Event, place: int) -> bool:
        with self._cond:
            while not self._may_take(place):
                if cancel.is_set():
                    self._claims.pop(place, None)
                    self._cond.notify_all()
                    return False
                self._cond.wait(0.1)
            self._claims.pop(place, None)
            self._holding.add(place)
            self._cond.notify_all()
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
    # Why an attempt whose slot is ready must not start its agent now (the run's budget
    # is spent, its quota pool is paused), or None.
    may_start: Callable[[Job], str | None] = lambda job: None
    budgeted: bool = False  # the run has a budget

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
    budget_left: float | None = None  # what this attempt may cost (None: no limit)
    dependencies: tuple[handoff.Dependency, ...] = ()  # what it builds on, for its prompt
    session_id: str | None = None  # the agent session this attempt continues
    # Its claim on an agent place: its urgency, and that of the most urgent ticket its
    # merge makes ready (None: none).
    claim: tuple[Urgency, Urgency | None] = ((0, 0.0, ""), None)
    place: int = field(default_factory=lambda: next(_places))
    stopped_for: str | None = None  # why it was stopped while running (over budget)
    agent_ran: bool = False

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
    throttled: bool = False  # the provider asked to wait: not a failed attempt
    retry_after_s: float | None = None
    left: tuple[str, str] | None = None  # (base, commit) of what a failed attempt left


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
    if job.agent_ran and not (outcome.ok or outcome.cancelled or outcome.throttled):
        outcome = replace(outcome, left=_left_behind(ctx, job))
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
    result_file = ctx.run_dir / "results" / f"{t.id}.{job.attempt.attempt}.json"
    result_file.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        result_file.unlink()
    env = agents.agent_environment(
        job.agent,
        run_id=ctx.run_id,
        ticket=t,
        worktree=slot.path,
        base=job.base,
        progress_file=progress,
        conflicts=job.attempt.conflicts,
    )
    env["GITEXEC_RESULT_FILE"] = str(result_file)
    # Secrets are taken out of everything the attempt writes, as it is written: whoever
    # reads a log or a report later, wherever, sees no secret of this environment.
    redactor = secrets.Redactor.from_environ({**os.environ, **env})
    log = ctx.log(t.id)
    timeout = timeout_for(ctx.config, t, job.agent)
    # The agent's shell starts now and joins its cgroup while the slot is reset.
    limits = resources.process_limits(job.agent)
    launch = process.Launch(slot.path, env, limits, with_stdin=job.agent.stdin == "prompt")
    try:
        ran = _run_agent(ctx, job, env, redactor, launch, log, timeout)
    finally:
        launch.abandon()  # nothing to do once the agent started
    if isinstance(ran, Outcome):
        return ran
    result, reader = ran
    ctx.emit(
        ev.AgentExited(
            ticket=t.id,
            exit_code=result.exit_code,
            timed_out=result.timed_out,
            cancelled=result.cancelled,
            duration_s=round(result.duration_s, 6),
        )
    )
    job.agent_ran = result.start_error is None
    if result.cancelled and job.stopped_for is None:
        return Outcome(False, reason="stopped", cancelled=True)
    if result.timed_out:
        return Outcome(False, reason=f"agent timed out after {timeout:g}s")
    if result.start_error:
        return Outcome(
            False, reason=f"agent could not start: {result.start_error}", retryable=False
        )
    written = result_file.read_bytes() if result_file.is_file() else None
    report = redacted(
        reader.result(exit_code=result.exit_code, result_file=written, pricing=ctx.config.pricing),
        redactor,
    )
    ctx.emit(_reported(t.id, report, result))
    if job.stopped_for is not None:  # stopped while it ran: what it spent is recorded above
        return Outcome(False, reason=job.stopped_for, retryable=False)
    over = budget.over_ticket_budget(report.cost_usd or 0.0, job.budget_left)
    if over is not None:
        return Outcome(False, reason=over, retryable=False)
    if report.status is dialects.Status.THROTTLED:
        return Outcome(
            False,
            reason=report.reason or "the provider asked to wait",
            throttled=True,
            retry_after_s=report.retry_after_s,
        )
    if report.status is dialects.Status.FAILURE:
        plain = job.agent.dialect is dialects.Dialect.PLAIN and written is None
        if plain or not report.reason:
            return Outcome(False, reason=f"agent exited with status {result.exit_code}")
        return Outcome(False, reason=report.reason)

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
        slot.sync_index()  # validation may ask git about the worktree
        failed = _validate(ctx, job, env, log, timeout, redactor)
        if failed is not None:
            return failed
    return Outcome(True, commit=collected.commit)


def _run_agent(
    ctx: WorkerContext,
    job: Job,
    env: dict[str, str],
    redactor: secrets.Redactor,
    launch: process.Launch,
    log: Path,
    timeout: float | None,
) -> tuple[process.ProcessResult, dialects.Reader] | Outcome:
    """Reset the slot, then run the agent to its end in `launch` (an Outcome if it never
    started)."""
    t, slot = job.ticket, job.slot
    slot.prepare(ctx.paths, job.base, ctx.config.setup, env)
    if job.attempt.start_from is not None:
        _carry_on(ctx, job, *job.attempt.start_from)
    prompt = prompt_for(ctx, job)
    argv = command_for(ctx, job, prompt)
    reader = dialects.Reader(job.agent.dialect, argv=argv)
    live = _LiveUsage(ctx, job, reader)
    to_stdin = prompt.encode() if prompt is not None and job.agent.stdin == "prompt" else None
    samples = resources.SampleGate()

    def sampled(sample: process.Sample) -> None:
        event = samples.event(t.id, sample)
        if event is not None:
            ctx.emit(event)

    with _admitted(ctx, job) as admitted:
        if not admitted:
            return Outcome(False, reason="stopped before the agent started", cancelled=True)
        refused = ctx.may_start(job)
        if refused is not None:  # decided while this slot was being prepared
            return Outcome(False, reason=refused, cancelled=True)
        result = agents.run_process(
            argv,
            cwd=slot.path,
            env=env,
            log=log,
            timeout_s=timeout,
            cancel=job.cancel,
            on_start=lambda pid, pgid: _started(ctx, job, pid, pgid),
            on_output=live.feed,
            stdin=to_stdin,
            redact=redactor.redact_bytes,
            log_cap=ctx.config.log_max_bytes,
            on_sample=sampled,
            launch=launch,
            header=f"=== {t.id} attempt {job.attempt.attempt} ({job.agent.name}) "
            f"in {slot.name} ===\n",
        )
    return result, reader


def _left_behind(ctx: WorkerContext, job: Job) -> tuple[str, str] | None:
    """What a failed attempt left in its worktree, as a commit on its base (for `retry
    --keep-worktree`); None when it left nothing, or the worktree cannot be read."""
    t = job.ticket
    message = ticket_message(t.id, f"left by attempt {job.attempt.attempt}", ctx.run_id)
    try:
        left = job.slot.collect(job.base, message, ctx.identity)
    except (CommandError, OSError):
        return None
    return None if left.empty(job.base) else (job.base, left.commit)


def _carry_on(ctx: WorkerContext, job: Job, old_base: str, left: str) -> None:
    """Start from what a failed attempt left: its changes, carried onto this attempt's
    base (a 3-way merge), as uncommitted work in the worktree. When they no longer apply,
    the attempt starts fresh and its log says so."""
    repo = job.slot.objects
    trees = [repo[pygit2.Oid(hex=c)].peel(pygit2.Tree).id for c in (old_base, job.base, left)]
    merged = merge_trees(repo, *trees)
    note = f"=== {job.ticket.id}: carrying on from what attempt left ({left[:12]})"
    if not merged.clean or merged.tree is None:
        note = f"=== {job.ticket.id}: what the failed attempt left no longer applies; fresh start"
    else:
        sig = ctx.identity.signature()
        carried = repo.create_commit(None, sig, sig, "carry on", merged.tree, [job.base])
        job.slot.carry(ctx.paths, job.base, str(carried))
    log = ctx.log(job.ticket.id)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as f:
        f.write(note + "\n")


def _reported(tid: str, report: dialects.Report, result: agents.ProcessResult) -> ev.AgentReported:
    return ev.AgentReported(
        ticket=tid,
        status=report.status,
        reason=report.reason,
        retry_after_s=report.retry_after_s,
        usage=report.usage,
        cost_usd=report.cost_usd,
        model=report.model,
        session_id=report.session_id,
        summary=report.summary,
        denials=report.denials,
        cpu_s=round(result.cpu_s, 3) if result.cpu_s is not None else None,
        peak_rss_mb=result.peak_rss_mb,
    )


class _LiveUsage:
    """Feeds the agent's output to its dialect reader as it comes: journals the tokens
    reported so far now and then (dashboard, run budget), and stops an attempt that goes
    over its ticket's budget."""

    def __init__(self, ctx: WorkerContext, job: Job, reader: dialects.Reader) -> None:
        self.ctx = ctx
        self.job = job
        self.reader = reader
        self._last: dialects.Usage | None = None
        self._at = 0.0

    def feed(self, chunk: bytes) -> None:
        self.reader.feed(chunk)
        usage = self.reader.usage()
        if usage is None or usage == self._last:
            return
        cost = self.reader.cost_usd(self.ctx.config.pricing)
        over = budget.over_ticket_budget(cost or 0.0, self.job.budget_left)
        if over is not None and self.job.stopped_for is None:
            self.job.stopped_for = over
            self.job.cancel.set()
        now = time.monotonic()
        if now - self._at < LIVE_USAGE_EVERY_S and over is None:
            return
        self._last, self._at = usage, now
        self.ctx.emit(ev.AgentUsage(ticket=self.job.ticket.id, usage=usage, cost_usd=cost))


def _started(ctx: WorkerContext, job: Job, pid: int, pgid: int) -> None:
    a = job.attempt
    ctx.emit(
        ev.AgentStarted(
            ticket=a.ticket,
            pid=pid,
            pgid=pgid,
            slot=a.slot,
            agent=a.agent,
            attempt=a.attempt,
            sequential=a.sequential,
        )
    )


def _validate(
    ctx: WorkerContext,
    job: Job,
    env: dict[str, str],
    log: Path,
    timeout: float | None,
    redactor: secrets.Redactor,
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
                redact=redactor.redact_bytes,
                log_cap=ctx.config.log_max_bytes,
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
    if ctx.places.must_wait(job.place):
        ctx.emit(ev.AttemptWaiting(ticket=job.ticket.id))
    # Validation runs after the agent, outside the agent's place, unless the run has a
    # budget: then no agent starts before the engine knows what the last one cost.
    keep = True if ctx.budgeted else False if job.ticket.validate else None
    with ctx.places.held(job.cancel, job.place, keep) as admitted:
        job.waited_s += time.monotonic() - waiting
        yield admitted


def timeout_for(config: Config, ticket: Ticket, agent: AgentSpec) -> float | None:
    for value in (ticket.timeout_s, agent.timeout_s, config.timeout_s):
        if value:
            return value
    return None


def prompt_for(ctx: WorkerContext, job: Job) -> str | None:
    """The ticket's prompt, when the agent takes one (in argv, a file, or stdin)."""
    agent = job.agent
    if agent.stdin != "prompt" and not any("prompt" in arg for arg in agent.command):
        return None
    template = Path(agent.prompt_template) if agent.prompt_template else None
    return agents.render_prompt(
        job.ticket,
        base=job.base,
        run_id=ctx.run_id,
        conflicts=job.attempt.conflicts,
        template_file=template,
        root=job.slot.path,  # templates are repository files, read from the worktree
        dependencies=handoff.describe(job.slot.objects, job.dependencies),
        conflict_hunks=job.attempt.conflict_hunks,
    )


def command_for(ctx: WorkerContext, job: Job, prompt: str | None) -> tuple[str, ...]:
    """The agent's argv for this attempt, its templates rendered (never through a shell).

    `{{ prompt }}` is the prompt itself, `{{ prompt_file }}` a file holding it (for
    prompts longer than one argument may be; `stdin: prompt` is the other way)."""
    t = job.ticket
    prompt_file = ""
    if prompt is not None:
        path = ctx.run_dir / "prompts" / f"{t.id}.{job.attempt.attempt}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(prompt, encoding="utf-8")
        prompt_file = str(path)
    context = {
        "ticket": agents.ticket_context(t),
        "prompt": prompt or "",
        "prompt_file": prompt_file,
        "run": t.run or "",
        "worktree": str(job.slot.path),
        "base": job.base,
        "run_id": ctx.run_id,
        "conflicts": list(job.attempt.conflicts),
        "session_id": job.session_id or "",
    }
    agent = job.agent
    if job.session_id and agent.resume_command:  # continue where the last attempt was
        agent = replace(agent, command=agent.resume_command)
    return agents.render_command(agent, context)


def redacted(report: dialects.Report, redactor: secrets.Redactor) -> dialects.Report:
    """The report with secrets taken out of the agent's own words (they are journaled)."""

    def clean(text: str | None) -> str | None:
        return None if text is None else redactor(text)

    return replace(
        report,
        reason=clean(report.reason),
        summary=clean(report.summary),
        denials=tuple(redactor(d) for d in report.denials),
    )
