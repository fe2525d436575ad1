"""The run loop: dispatch ready tickets to pooled worktrees, collect, merge, journal.

Threads: one worker per ticket attempt does the slow, isolated part (reset the slot, run
the agent, commit, validate) and reports back through a queue. The main thread owns the
scheduling state, the pygit2 repository and the integration branch, so merges happen one
at a time, in memory, with no locks. Every state change is journaled before it is acted
on; `RunState` replays the same events for status, reports and resume.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import queue
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Protocol

import pygit2

from gitexec import agents
from gitexec.config import AgentSpec, Config, MergeOrder, Scope
from gitexec.errors import CommandError, UserError
from gitexec.gates import GateOutcome, GateRunner
from gitexec.gitutil import RepoPaths, committer_identity
from gitexec.globs import PathSet, pathsets_may_overlap
from gitexec.integration import Integration, RefMoved, ticket_message
from gitexec.journal import JOURNAL, EngineLock, Event, Journal, JournalClosed
from gitexec.merge import MergeRule, RuleStrategy
from gitexec.plan import Graph, Plan, effective_estimates
from gitexec.pool import Pool, SetupError, Slot
from gitexec.registry import write_status
from gitexec.runstate import RUNS_DIR, RunState, RunStatus, TicketRun, iso
from gitexec.tickets import Ticket, TicketState

CONTROL_POLL_S = 0.05
OVERLAP_EVERY_S = 2.0
ENGINE_DIR_NAMES = ("logs", "progress")


# --- values --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSpec:
    """Everything a run needs, resolved and validated before anything is executed."""

    run_id: str
    base: str  # commit id
    base_rev: str
    tickets: tuple[Ticket, ...]  # the tickets to run
    skipped: tuple[str, ...]  # already completed at base
    plan: Plan
    config: Config
    jobs: int
    barrier: bool = False
    allow_overlap: bool = False
    validate: bool = False  # check the final result: registry in sync, gates pass


@dataclass
class Job:
    """One attempt of one ticket on one slot."""

    ticket: Ticket
    agent: AgentSpec
    attempt: int
    slot: Slot
    base: str
    conflicts: tuple[str, ...] = ()
    sequential: bool = False
    cancel: threading.Event = field(default_factory=threading.Event)
    waited_s: float = 0.0  # time spent waiting for an agent place (the spare slot's wait)


@dataclass(frozen=True)
class Outcome:
    ok: bool
    commit: str | None = None
    reason: str | None = None
    retryable: bool = True
    cancelled: bool = False


@dataclass(frozen=True)
class WorkDone:
    job: Job
    outcome: Outcome


@dataclass(frozen=True)
class Landed:
    """A ticket merged into the integration branch, waiting for the integration gate."""

    job: Job
    commit: str  # the ticket's result
    head: str  # the merge commit
    previous: str  # the head it was merged onto


@dataclass(frozen=True)
class RemoteResult:
    """What `git exec run-ticket` reported for one ticket (scale-out over CI runners)."""

    ticket: str
    status: TicketState
    base: str
    commit: str | None
    attempts: int = 1
    agent: str | None = None
    duration_s: float = 0.0
    reason: str | None = None


@dataclass(frozen=True)
class GateDone:
    batch: tuple[Landed, ...]
    outcome: GateOutcome


class Reporter(Protocol):
    """Shows a run as it happens (rich dashboard, plain lines, or nothing)."""

    def start(self, engine: Engine) -> None: ...

    def event(self, event: Event, engine: Engine) -> None: ...

    def tick(self, engine: Engine) -> None: ...

    def notice(self, text: str) -> None: ...

    def finish(self, engine: Engine) -> None: ...


class AgentGate:
    """Counts running agents against an adjustable limit (`jobs`)."""

    def __init__(self, limit: int) -> None:
        self._cond = threading.Condition()
        self._limit = limit
        self._active = 0

    def set_limit(self, limit: int) -> None:
        with self._cond:
            self._limit = limit
            self._cond.notify_all()

    def acquire(self, cancel: threading.Event) -> bool:
        with self._cond:
            while self._active >= self._limit:
                if cancel.is_set():
                    return False
                self._cond.wait(0.1)
            self._active += 1
            return True

    def release(self) -> None:
        with self._cond:
            self._active -= 1
            self._cond.notify_all()

    @contextlib.contextmanager
    def held(self, cancel: threading.Event) -> Iterator[bool]:
        ok = self.acquire(cancel)
        try:
            yield ok
        finally:
            if ok:
                self.release()


def new_run_id() -> str:
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y%m%d-%H%M%S-") + os.urandom(2).hex()


def integration_ref(run_id: str) -> str:
    return f"refs/heads/gitexec/{run_id}"


def ticket_ref(run_id: str, ticket_id: str) -> str:
    return f"refs/gitexec/{run_id}/{ticket_id}"


def merge_rules(config: Config) -> tuple[MergeRule, ...]:
    return tuple(MergeRule(r.paths, RuleStrategy(r.strategy)) for r in config.merge.rules)


# --- the engine ----------------------------------------------------------------------------


class Engine:
    def __init__(
        self,
        repo_paths: RepoPaths,
        spec: RunSpec,
        reporter: Reporter,
        resume: RunState | None = None,
    ) -> None:
        self.paths = repo_paths
        self.spec = spec
        self.config = spec.config
        self.reporter = reporter
        self.run_id = spec.run_id
        self.run_dir = repo_paths.state_dir / RUNS_DIR / spec.run_id
        self.repo = pygit2.Repository(str(repo_paths.common_dir))
        self.identity = committer_identity(repo_paths.root)
        self.integration = Integration(
            self.repo, integration_ref(spec.run_id), self.identity, spec.run_id
        )
        self.state = resume or RunState(spec.run_id)
        self.resuming = resume is not None
        self.offline = False  # collecting results produced elsewhere (`git exec collect`)
        self.jobs = spec.jobs
        self.pool = Pool(repo_paths, self.jobs + 1)
        self.gate = AgentGate(self.jobs)
        self.rules = merge_rules(self.config)
        # Paths merge rules settle never make two tickets wait for each other.
        self.settled = PathSet(tuple(p for r in self.config.merge.rules for p in r.paths))
        self._queue: queue.Queue[Event | WorkDone | GateDone] = queue.Queue()
        self._journal: Journal | None = None
        self._threads: dict[str, threading.Thread] = {}

        self.tickets: dict[str, Ticket] = {t.id: t for t in spec.tickets}
        graph = Graph(spec.tickets)
        self.graph = graph
        order = graph.topological_order() or list(range(len(graph)))
        estimates = effective_estimates(graph, self.config.default_estimate_s)
        rank = graph.bottom_levels(order, estimates)
        self.rank = {t.id: rank[i] for i, t in enumerate(graph.tickets)}
        self.group = spec.plan.group_of()
        self.plan_order = [t for t in spec.plan.order() if t in self.tickets]
        self.priority = {t.id: t.priority for t in spec.tickets}

        # Scheduling state (main thread only).
        self.deps_left = {
            t.id: sum(1 for d in t.depends_on if d in self.tickets) for t in spec.tickets
        }
        self.pending: set[str] = set(self.tickets)
        self.running: dict[str, Job] = {}
        self.not_before: dict[str, float] = {}
        self.agent_of: dict[str, str] = {
            t.id: t.agent or self.config.default_agent for t in spec.tickets
        }
        self.agents_tried: dict[str, list[str]] = {tid: [a] for tid, a in self.agent_of.items()}
        self.attempts_on_agent: dict[str, int] = dict.fromkeys(self.tickets, 0)
        self.conflict_files: dict[str, tuple[str, ...]] = {}
        self.reruns: dict[str, int] = dict.fromkeys(self.tickets, 0)
        self.sequential: set[str] = set()
        self.buffered: dict[str, WorkDone] = {}
        self.merge_log: list[tuple[str, str, frozenset[str]]] = []  # (head, ticket, paths)
        self.awaiting_gate: list[Landed] = []
        self._last_overlap_check = time.monotonic()
        self._reported_overlaps: dict[tuple[str, str], frozenset[str]] = {}
        self.gating: tuple[Landed, ...] | None = None
        self._gate_cancel = threading.Event()
        self.paused = False
        self.stop_requested = False
        self.force_stop = False
        self.preserve_state = True
        self._signals = 0
        self._announce = False

    # --- journal ---------------------------------------------------------------------------

    def emit(self, kind: str, **fields: Any) -> Event:
        """Journal an event (main thread) and apply it to the run state."""
        assert self._journal is not None
        event = self._journal.append(kind, **fields)
        self.state.apply(event)
        self.reporter.event(event, self)
        return event

    def _emit_from_worker(self, kind: str, **fields: Any) -> None:
        assert self._journal is not None
        self._queue.put(self._journal.append(kind, **fields))

    # --- lifecycle -------------------------------------------------------------------------

    def run(self) -> RunState:
        lock = EngineLock(self.paths.state_dir)
        with lock.held(self.run_id):
            if self.integration.exists() and not self.resuming:
                raise UserError(
                    f"run {self.run_id} already exists ({self.integration.ref}); "
                    "resume it or choose another --run-id"
                )
            for name in ENGINE_DIR_NAMES:
                (self.run_dir / name).mkdir(parents=True, exist_ok=True)
            self._journal = Journal(self.run_dir / JOURNAL)
            try:
                if self.resuming:
                    self._restore()
                else:
                    # Journal first: a crash right after leaves a run resume can continue.
                    self.emit("run-started", **self._start_fields())
                    self.integration.create(self.spec.base)
                self.reporter.start(self)
                with self._signal_handlers():
                    self._loop()
                    self._finish()
            except BaseException:
                self._abandon_workers()
                raise
            finally:
                self._journal.close()
                self.pool.close()
                self.reporter.finish(self)
        return self.state

    def _start_fields(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "run": self.run_id,
            "version": 1,
            "pid": os.getpid(),
            "base": self.spec.base,
            "base_rev": self.spec.base_rev,
            "integration": self.integration.ref,
            "head": self.spec.base,
            "jobs": self.jobs,
            "strategy": self.spec.plan.strategy.value,
            "merge_order": cfg.merge.order.value,
            "barrier": self.spec.barrier,
            "allow_overlap": self.spec.allow_overlap,
            "skipped": list(self.spec.skipped),
            "groups": [[t for t in g.tickets if t in self.tickets] for g in self.spec.plan.groups],
            "critical_path": list(self.spec.plan.critical_path),
            "tickets": {
                t.id: {
                    "title": t.title,
                    "file": t.file,
                    "agent": self.agent_of[t.id],
                    "depends_on": list(t.depends_on),
                    "group": self.group.get(t.id, 0),
                    "estimate_s": t.estimate_s or cfg.default_estimate_s,
                    "priority": t.priority,
                    "paths": list(t.paths),
                }
                for t in self.spec.tickets
            },
        }

    def _restore(self) -> None:
        """Continue a crashed or stopped run: the journal and the refs say where it was.

        Merged tickets stay merged exactly once (the integration branch's first-parent
        history is checked for merges the journal missed); orphaned agents of the dead
        engine are killed; finished-but-unmerged results are merged without re-running;
        interrupted tickets start over.
        """
        from gitexec.recovery import kill_orphans, merged_on_branch, remove_stale_ref_locks

        remove_stale_ref_locks(self.paths.common_dir, self.run_id)
        state = self.state
        if not self.integration.exists():  # the engine died before creating it
            self.integration.create(state.base)
        on_branch = merged_on_branch(self.integration)
        for tid, commit in on_branch.items():
            ts = state.tickets.get(tid)
            if ts is not None and ts.status is not TicketState.COMPLETED:
                # The ref moved but the engine died before journaling it.
                self.emit(
                    "ticket-merged",
                    ticket=tid,
                    head=commit,
                    recovered=True,
                    previous=None,
                    commit=ts.commit,
                    resolved=[],
                    merge_s=0.0,
                )
        killed = kill_orphans(state, self.run_id)
        reset: list[str] = []
        reuse: list[str] = []
        for tid, ts in sorted(state.tickets.items()):
            if ts.status.terminal:
                continue
            if ts.result_ready and ts.commit and ts.base:
                reuse.append(tid)
            reset.append(tid)
        self.emit(
            "run-resumed",
            pid=os.getpid(),
            jobs=self.jobs,
            head=self.integration.head,
            reset=reset,
            reuse=reuse,
            killed=killed,
        )
        # Rebuild the scheduler's view from the state.
        self.pending = {tid for tid, ts in state.tickets.items() if not ts.status.terminal}
        for tid, ts in state.tickets.items():
            self.agent_of[tid] = ts.agent or self.agent_of[tid]
            self.reruns[tid] = ts.reruns
            if ts.sequential:
                self.sequential.add(tid)
            if ts.status is TicketState.COMPLETED:
                for j in self.graph.dependents[self.graph.index[tid]]:
                    self.deps_left[self.graph.tickets[j].id] -= 1
        # Results that were ready to merge are merged as they are: agent time is not redone.
        for tid in reuse:
            ts = state.tickets[tid]
            if self.deps_left[tid] != 0:
                continue
            job = Job(
                ticket=self.tickets[tid],
                agent=self.config.agents[self.agent_of[tid]],
                attempt=ts.attempts,
                slot=self.pool.slots[0],
                base=str(ts.base),
            )
            self.pending.discard(tid)
            done = WorkDone(job, Outcome(True, commit=ts.commit))
            if self.config.merge.order is MergeOrder.PLAN:
                self.buffered[tid] = done
            else:
                self._merge(job, str(ts.commit))

    @contextlib.contextmanager
    def _signal_handlers(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handle(signum: int, frame: FrameType | None) -> None:
            self._signals += 1
            self.stop_requested = True
            if self._signals > 1:
                self.force_stop = True
            self._announce = True

        saved = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in saved.items():
                signal.signal(s, h)

    # --- the loop --------------------------------------------------------------------------

    def _loop(self) -> None:
        last_tick = 0.0
        while True:
            self._drain(timeout=CONTROL_POLL_S)
            self._poll_control()
            self._announce_stop()
            if self.force_stop:
                for job in self.running.values():
                    job.cancel.set()
            if not self.stop_requested and not self.paused:
                self._dispatch()
            if self.config.merge.order is MergeOrder.PLAN:
                self._merge_in_plan_order()
            self._maybe_gate()
            now = time.monotonic()
            if now - self._last_overlap_check >= OVERLAP_EVERY_S:
                self._last_overlap_check = now
                self._detect_overlaps()
            if now - last_tick >= 0.25:
                self.reporter.tick(self)
                last_tick = now
            if not self.running and not self.buffered and not self._gate_busy:
                if self.stop_requested or not self.pending:
                    break
                if not self.paused and all(self.deps_left[t] for t in self.pending):
                    raise RuntimeError(f"scheduler stalled with pending {sorted(self.pending)}")

    def _abandon_workers(self) -> None:
        """The engine is failing: stop agents (the run stays resumable) before letting go."""
        self._gate_cancel.set()
        for job in self.running.values():
            job.cancel.set()
        deadline = time.monotonic() + agents.KILL_GRACE_S + 5
        for thread in list(self._threads.values()):
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def _announce_stop(self) -> None:
        """Say what an interrupt did (from the loop: signal handlers must not print)."""
        if not self._announce:
            return
        self._announce = False
        if self.force_stop:
            self.reporter.notice("stopping now: killing running agents")
        else:
            self.reporter.notice(
                "stopping: running tickets finish, nothing new starts, the run stays "
                "resumable (`git exec resume`); interrupt again to kill the agents"
            )

    def _drain(self, timeout: float) -> None:
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            if isinstance(item, WorkDone):
                self._work_done(item)
            elif isinstance(item, GateDone):
                self._gate_done(item)
            else:
                self.state.apply(item)
                self.reporter.event(item, self)
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return

    def _poll_control(self) -> None:
        """Live control requests (see control.py); a no-op when none are waiting."""
        from gitexec.control import process_requests

        process_requests(self)

    # --- dispatch --------------------------------------------------------------------------

    def _ready(self) -> list[str]:
        now = time.monotonic()
        ready = [
            tid
            for tid in self.pending
            if self.deps_left[tid] == 0 and self.not_before.get(tid, 0.0) <= now
        ]
        if self.spec.barrier and ready:
            current = min(
                (self.group.get(t, 0) for t in self.pending | set(self.running)), default=0
            )
            ready = [t for t in ready if self.group.get(t, 0) <= current]
        ready.sort(key=lambda t: (-self.priority[t], -self.rank[t], t))
        return ready

    def _dispatch(self) -> None:
        if any(job.sequential for job in self.running.values()):
            return  # a sequential ticket runs alone
        ready = self._ready()
        alone = [t for t in ready if t in self.sequential]
        if alone:
            # Let running work drain, then run the deferred ticket by itself.
            if not self.running:
                slot = self.pool.acquire()
                if slot is not None:
                    self._start(alone[0], slot)
            return
        in_flight_limit = self.jobs + 1  # one spare: its reset overlaps the others' agents
        for tid in ready:
            if len(self.running) >= in_flight_limit:
                return
            if not self._fits(tid):
                continue
            slot = self.pool.acquire()
            if slot is None:
                return
            self._start(tid, slot)

    def _fits(self, tid: str) -> bool:
        ticket = self.tickets[tid]
        agent = self.config.agents[self.agent_of[tid]]
        if agent.max_parallel is not None:
            same = sum(1 for r in self.running if self.agent_of[r] == agent.name)
            if same >= agent.max_parallel:
                return False
        if ticket.paths and not self.spec.allow_overlap:
            for other in self.running:
                paths = self.tickets[other].paths
                if paths and pathsets_may_overlap(ticket.paths, paths, self.settled):
                    return False
        for name, weight in ticket.resources:
            capacity = float(self.jobs)
            used = sum(self.tickets[r].resource(name) for r in self.running)
            if used > 0 and used + min(weight, capacity) > capacity:
                return False
        return True

    def _start(self, tid: str, slot: Slot) -> None:
        ticket = self.tickets[tid]
        agent = self.config.agents[self.agent_of[tid]]
        self.attempts_on_agent[tid] += 1
        attempt = self.state.tickets[tid].attempts + 1
        job = Job(
            ticket=ticket,
            agent=agent,
            attempt=attempt,
            slot=slot,
            base=self.integration.head,
            conflicts=self.conflict_files.pop(tid, ()),
            sequential=tid in self.sequential,
        )
        self.emit(
            "ticket-dispatched",
            ticket=tid,
            attempt=attempt,
            agent=agent.name,
            slot=slot.index,
            base=job.base,
            sequential=job.sequential,
            conflicts=list(job.conflicts),
        )
        self.pending.discard(tid)
        self.running[tid] = job
        thread = threading.Thread(
            target=self._work, args=(job,), name=f"gitexec-{tid}", daemon=True
        )
        self._threads[tid] = thread
        thread.start()

    # --- the worker ------------------------------------------------------------------------

    def _timeout(self, ticket: Ticket, agent: AgentSpec) -> float | None:
        for value in (ticket.timeout_s, agent.timeout_s, self.config.timeout_s):
            if value:
                return value
        return None

    def _work(self, job: Job) -> None:
        # JournalClosed: the engine died of an error and stopped listening.
        with contextlib.suppress(JournalClosed):
            self._work_reporting(job)

    def _work_reporting(self, job: Job) -> None:
        started = time.monotonic()
        try:
            outcome = self._attempt(job)
        except (SetupError, agents.TemplateError) as exc:
            outcome = Outcome(False, reason=str(exc), retryable=False)
        except CommandError as exc:
            outcome = Outcome(False, reason=f"git failed in {job.slot.name}:\n{exc}")
        except Exception as exc:  # a worker must always report back
            outcome = Outcome(False, reason=f"internal error: {type(exc).__name__}: {exc}")
        self._emit_from_worker(
            "work-done",
            ticket=job.ticket.id,
            ok=outcome.ok,
            slot_s=round(time.monotonic() - started, 6),
            wait_s=round(job.waited_s, 6),
        )
        self._queue.put(WorkDone(job, outcome))

    def _attempt(self, job: Job) -> Outcome:
        t, slot = job.ticket, job.slot
        progress = self.run_dir / "progress" / t.id
        with contextlib.suppress(FileNotFoundError):
            progress.unlink()
        env = agents.agent_environment(
            job.agent,
            run_id=self.run_id,
            ticket=t,
            worktree=slot.path,
            base=job.base,
            progress_file=progress,
            conflicts=job.conflicts,
        )
        slot.prepare(self.paths, job.base, self.config.setup, env)
        argv = self._argv(job)
        log = self.run_dir / "logs" / f"{t.id}.log"
        timeout = self._timeout(t, job.agent)

        with self._admitted(job) as admitted:
            if not admitted:
                return Outcome(False, reason="stopped before the agent started", cancelled=True)
            result = agents.run_process(
                argv,
                cwd=slot.path,
                env=env,
                log=log,
                timeout_s=timeout,
                cancel=job.cancel,
                on_start=lambda pid, pgid: self._emit_from_worker(
                    "agent-started", ticket=t.id, pid=pid, pgid=pgid
                ),
                header=f"=== {t.id} attempt {job.attempt} ({job.agent.name}) in {slot.name} ===\n",
            )
        self._emit_from_worker(
            "agent-exited",
            ticket=t.id,
            exit_code=result.exit_code,
            timed_out=result.timed_out,
            cancelled=result.cancelled,
            duration_s=round(result.duration_s, 6),
        )
        if result.cancelled:
            return Outcome(False, reason="stopped", cancelled=True)
        if result.timed_out:
            return Outcome(False, reason=f"agent timed out after {timeout:g}s")
        if result.exit_code != 0:
            return Outcome(False, reason=f"agent exited with status {result.exit_code}")

        collected = slot.collect(
            job.base, ticket_message(t.id, t.title, self.run_id), self.identity
        )
        self._emit_from_worker(
            "ticket-committed",
            ticket=t.id,
            commit=collected.commit,
            own_commits=collected.own_commits,
            empty=collected.empty(job.base),
        )
        if t.validate:
            self._emit_from_worker("ticket-validating", ticket=t.id)
            with self._admitted(job) as admitted:
                if not admitted:
                    return Outcome(False, reason="stopped before validation", cancelled=True)
                for command in t.validate:
                    check = agents.run_process(
                        ["sh", "-c", command],
                        cwd=slot.path,
                        env=env,
                        log=log,
                        timeout_s=timeout,
                        cancel=job.cancel,
                        header=f"=== validate: {command}\n",
                    )
                    self._emit_from_worker(
                        "ticket-validated",
                        ticket=t.id,
                        command=command,
                        exit_code=check.exit_code,
                        ok=check.ok,
                        duration_s=round(check.duration_s, 6),
                    )
                    if check.cancelled:
                        return Outcome(False, reason="stopped", cancelled=True)
                    if not check.ok:
                        why = "timed out" if check.timed_out else f"exited {check.exit_code}"
                        return Outcome(False, reason=f"validation {command!r} {why}")
        return Outcome(True, commit=collected.commit)

    @contextlib.contextmanager
    def _admitted(self, job: Job) -> Iterator[bool]:
        """Hold one of the `jobs` agent places, counting the wait (not engine overhead)."""
        waiting = time.monotonic()
        with self.gate.held(job.cancel) as admitted:
            job.waited_s += time.monotonic() - waiting
            yield admitted

    def _argv(self, job: Job) -> tuple[str, ...]:
        t = job.ticket
        needs_prompt = any("prompt" in arg for arg in job.agent.command)
        prompt = ""
        if needs_prompt:
            template = None
            if job.agent.prompt_template:
                template = job.slot.path / job.agent.prompt_template
            prompt = agents.render_prompt(
                t,
                base=job.base,
                run_id=self.run_id,
                conflicts=job.conflicts,
                template_file=template,
            )
        context = {
            "ticket": agents.ticket_context(t),
            "prompt": prompt,
            "run": t.run or "",
            "worktree": str(job.slot.path),
            "base": job.base,
            "run_id": self.run_id,
            "conflicts": list(job.conflicts),
        }
        return agents.render_command(job.agent, context)

    # --- results ---------------------------------------------------------------------------

    def _work_done(self, done: WorkDone) -> None:
        job, outcome = done.job, done.outcome
        tid = job.ticket.id
        self.pool.release(job.slot)
        self._threads.pop(tid, None)
        del self.running[tid]
        if outcome.cancelled or (self.force_stop and not outcome.ok):
            self.pending.add(tid)
            self.emit("ticket-requeued", ticket=tid, reason="stopped")
            return
        if not outcome.ok:
            self._failed(tid, outcome.reason or "failed", retryable=outcome.retryable)
            return
        assert outcome.commit is not None
        # The result is kept under a ref at once: nothing finished is lost, merged or not.
        self.repo.create_reference_direct(
            ticket_ref(self.run_id, tid),
            pygit2.Oid(hex=outcome.commit),
            True,
            message=f"gitexec: result of {tid} attempt {job.attempt}",
        )
        if self.config.merge.order is MergeOrder.PLAN:
            self.buffered[tid] = done
            return
        self._merge(job, outcome.commit)

    def _merge_in_plan_order(self) -> None:
        """Merge buffered results strictly in plan order: the same inputs, the same tree."""
        for tid in self.plan_order:
            if self.state.tickets[tid].status.terminal:
                continue
            done = self.buffered.pop(tid, None)
            if done is None:
                return  # the next ticket in plan order has not finished yet
            assert done.outcome.commit is not None
            self._merge(done.job, done.outcome.commit)
            if not self.state.tickets[tid].status.terminal:
                return  # requeued (conflict ladder, retry): it keeps its place

    def _failed(self, tid: str, reason: str, *, retryable: bool = True) -> None:
        """Retry with backoff, then the fallback agent, then `failed` (dependents blocked)."""
        ticket = self.tickets[tid]
        agent = self.config.agents[self.agent_of[tid]]
        retries = next(
            (r for r in (ticket.retries, agent.retries) if r is not None), self.config.retries
        )
        retryable = retryable and not self.offline  # collecting: nothing can run again
        if retryable and self.attempts_on_agent[tid] <= retries and not self.stop_requested:
            delay = self.config.retry_backoff_s * 2 ** (self.attempts_on_agent[tid] - 1)
            self.not_before[tid] = time.monotonic() + delay
            self.pending.add(tid)
            self.emit("ticket-retry", ticket=tid, reason=reason, delay_s=delay, agent=agent.name)
            return
        fallback = agent.fallback
        if (
            retryable
            and fallback is not None
            and fallback not in self.agents_tried[tid]
            and not self.stop_requested
        ):
            self.agents_tried[tid].append(fallback)
            self.agent_of[tid] = fallback
            self.attempts_on_agent[tid] = 0
            self.pending.add(tid)
            self.emit(
                "ticket-requeued",
                ticket=tid,
                agent=fallback,
                reason=f"{reason}; falling back to agent {fallback!r}",
            )
            return
        self._finish_ticket(tid, TicketState.FAILED, reason)

    def _finish_ticket(self, tid: str, state: TicketState, reason: str) -> None:
        self.pending.discard(tid)
        self.emit("ticket-finished", ticket=tid, state=state.value, reason=reason)
        self._block_dependents(tid, state)

    def _block_dependents(self, tid: str, state: TicketState) -> None:
        stack = [tid]
        while stack:
            current = stack.pop()
            index = self.graph.index[current]
            for j in self.graph.dependents[index]:
                dep = self.graph.tickets[j].id
                if dep in self.pending:
                    self.pending.discard(dep)
                    self.emit(
                        "ticket-finished",
                        ticket=dep,
                        state=TicketState.BLOCKED.value,
                        reason=f"dependency {current} {self.state.tickets[current].status.value}",
                    )
                    stack.append(dep)

    # --- merging ---------------------------------------------------------------------------

    def _merge(self, job: Job, commit: str) -> None:
        t = job.ticket
        started = time.monotonic()
        head = self.integration.head
        self.emit("ticket-merging", ticket=t.id, commit=commit, head=head)
        changed = self.integration.changed(job.base, commit)
        engine_files = [p for p in changed if p == ".gitexec" or p.startswith(".gitexec/")]
        if engine_files:
            self._failed(
                t.id,
                "the agent committed changes under .gitexec/ (ticket files are the engine's): "
                + ", ".join(engine_files[:5]),
                retryable=True,
            )
            return
        if t.paths and self.config.scope is not Scope.OFF:
            outside = PathSet(t.paths).outside(changed)
            if outside:
                action = self.config.scope.value
                self.emit("scope-violation", ticket=t.id, paths=outside, action=action)
                if self.config.scope is Scope.ENFORCE:
                    self._failed(
                        t.id,
                        f"changed paths outside its declared scope: {', '.join(outside[:10])}",
                    )
                    return

        ladder = t.on_conflict or self.config.merge.on_conflict
        rules = self.rules if "rules" in ladder else ()
        if head == job.base:
            tree = self.integration.tree_of(commit)
            resolved: list[tuple[str, str]] = []
        else:
            # Conflict markers name the tickets on each side (diff3 labels).
            suspects = self._collided_with(job.base, changed)
            ours = "integration" + (f" ({', '.join(suspects[:3])})" if suspects else "")
            result = self.integration.merge(
                job.base, head, commit, rules=rules, labels=(ours, "base", t.id)
            )
            if not result.clean:
                self._conflict(job, result, ladder)
                return
            assert result.tree is not None
            tree = result.tree
            resolved = [(p, s.value) for p, s in result.resolved]

        ts = self.state.tickets[t.id]
        status_text = self._status_text(
            tree, t, TicketState.COMPLETED, ts, commit=commit, note=ts.note
        )
        if status_text is not None:
            tree = self.integration.with_files(tree, {t.file: status_text})
        try:
            new_head = self.integration.land(
                head=head, result=commit, tree=tree, ticket_id=t.id, title=t.title
            )
        except RefMoved as exc:
            raise UserError(
                f"the integration branch was moved by someone else during the run: {exc}"
            ) from exc
        self.merge_log.append((new_head, t.id, frozenset(changed)))
        gated = bool(self.config.gates.integration)
        self.emit(
            "ticket-merged",
            ticket=t.id,
            head=new_head,
            previous=head,
            commit=commit,
            resolved=resolved,
            merge_s=round(time.monotonic() - started, 6),
            awaiting_gate=gated,
        )
        if gated:
            self.awaiting_gate.append(Landed(job, commit, new_head, head))
        else:
            self._unlock_dependents(t.id)

    def _unlock_dependents(self, tid: str) -> None:
        for j in self.graph.dependents[self.graph.index[tid]]:
            self.deps_left[self.graph.tickets[j].id] -= 1

    # --- live overlap detection ------------------------------------------------------------

    def _detect_overlaps(self) -> None:
        """Compare what running agents have changed so far, with each other and with what
        merged since they started: collisions show before they become merge conflicts."""
        touched: dict[str, set[str]] = {}
        for tid, job in self.running.items():
            if self.state.tickets[tid].agent_started_at is None:
                continue
            try:
                paths = job.slot.touched_now()
            except (CommandError, OSError):
                continue
            touched[tid] = {p for p in paths if not p.startswith(".gitexec")}
        found: dict[tuple[str, str], set[str]] = {}
        ids = sorted(touched)
        for n, a in enumerate(ids):
            for b in ids[n + 1 :]:
                common = _overlap(touched[a], touched[b])
                if common:
                    found[(a, b)] = common
            job = self.running[a]
            heads = [h for h, _, _ in self.merge_log]
            start = heads.index(job.base) + 1 if job.base in heads else 0
            for _, landed, changed in self.merge_log[start:]:
                common = _overlap(touched[a], set(changed))
                if common:
                    found.setdefault((a, landed), set()).update(common)
        for pair, paths in sorted(found.items()):
            frozen = frozenset(paths)
            if self._reported_overlaps.get(pair) == frozen:
                continue
            self._reported_overlaps[pair] = frozen
            self.emit(
                "overlap",
                tickets=list(pair),
                paths=sorted(paths)[:50],
                against="running" if pair[1] in self.running else "merged",
            )

    # --- integration gates -----------------------------------------------------------------

    @property
    def _gate_busy(self) -> bool:
        return self.gating is not None or bool(self.awaiting_gate)

    def _gate_runner(self) -> GateRunner:
        return GateRunner(
            self.paths,
            self.pool.gate_slot(),
            self.config.gates.integration,
            log=self.run_dir / "logs" / "gate.log",
            env={"GITEXEC_RUN": self.run_id, **self.identity.env()},
            timeout_s=self.config.gates.timeout_s,
            cancel=self._gate_cancel,
        )

    def _maybe_gate(self) -> None:
        """Gate once `gates.every` merges wait, or as soon as nothing else is running."""
        if self.gating is not None or not self.awaiting_gate:
            return
        if len(self.awaiting_gate) < self.config.gates.every and self.running:
            return
        batch = tuple(self.awaiting_gate)
        self.gating = batch
        self.emit(
            "gate-started",
            head=batch[-1].head,
            tickets=[entry.job.ticket.id for entry in batch],
        )
        runner = self._gate_runner()

        def work() -> None:
            try:
                outcome = runner.batch(
                    [entry.head for entry in batch],
                    lambda head, ok: self._emit_from_worker("gate-run", head=head, ok=ok),
                )
            except Exception as exc:  # reported as a failed gate, never lost
                outcome = GateOutcome(False, 1, len(batch) - 1, f"gate error: {exc}")
            self._queue.put(GateDone(batch, outcome))

        threading.Thread(target=work, name="gitexec-gate", daemon=True).start()

    def _gate_done(self, done: GateDone) -> None:
        self.gating = None
        batch, outcome = done.batch, done.outcome
        if outcome.ok:
            self._gate_passed(batch)
            return
        if outcome.cancelled or outcome.culprit is None:
            return  # stopping: the batch stays unverified (see _finish)
        culprit = batch[outcome.culprit]
        self._gate_passed(batch[: outcome.culprit])
        # Everything merged after the culprit sits on top of it: move the branch back to
        # before the culprit and merge those results again.
        later = self.awaiting_gate[self.awaiting_gate.index(culprit) + 1 :]
        self.awaiting_gate = self.awaiting_gate[: self.awaiting_gate.index(culprit)]
        current = self.integration.head
        self.integration.move(
            current, culprit.previous, f"gate failed: roll back {culprit.job.ticket.id}"
        )
        self._forget_merges_after(culprit.previous)
        self.emit(
            "gate-failed",
            ticket=culprit.job.ticket.id,
            head=culprit.head,
            runs=outcome.runs,
            output=outcome.output,
        )
        self.emit("head-moved", head=culprit.previous, previous=current, reason="gate rollback")
        self._failed(culprit.job.ticket.id, "integration gate failed: " + outcome.output.strip())
        for entry in later:
            self.emit(
                "ticket-requeued",
                ticket=entry.job.ticket.id,
                reason=f"merged again without {culprit.job.ticket.id}",
                keep_result=True,
            )
            self._merge(entry.job, entry.commit)

    def _gate_passed(self, entries: Sequence[Landed]) -> None:
        if not entries:
            return
        self.emit(
            "gate-passed",
            head=entries[-1].head,
            tickets=[e.job.ticket.id for e in entries],
        )
        for entry in entries:
            self.awaiting_gate.remove(entry)
            self._unlock_dependents(entry.job.ticket.id)

    def _forget_merges_after(self, head: str) -> None:
        heads = [h for h, _, _ in self.merge_log]
        if head in heads:
            del self.merge_log[heads.index(head) + 1 :]

    def _collided_with(self, base: str, paths: Sequence[str]) -> list[str]:
        """Tickets merged since `base` that touched any of `paths`."""
        wanted = set(paths)
        heads = [h for h, _, _ in self.merge_log]
        start = heads.index(base) + 1 if base in heads else 0
        return [tid for _, tid, changed in self.merge_log[start:] if changed & wanted]

    def _conflict(self, job: Job, result: Any, ladder: Sequence[str]) -> None:
        t = job.ticket
        paths = [c.path for c in result.conflicts]
        others = self._collided_with(job.base, paths)
        # Collecting results from elsewhere, nothing can run again: rules, then fail.
        steps = [s for s in ladder if s == "fail" or (s != "rules" and not self.offline)]
        for step in steps:
            if step == "rerun" and self.reruns[t.id] < self.config.merge.max_reruns:
                self.reruns[t.id] += 1
                self.attempts_on_agent[t.id] -= 1  # a re-run is not a failed attempt
                self.conflict_files[t.id] = tuple(paths)
                self.pending.add(t.id)
                self.emit("conflict", ticket=t.id, paths=paths, step="rerun", **{"with": others})
                self.emit("ticket-requeued", ticket=t.id, reason="re-run on the merged head")
                return
            if step == "sequential" and t.id not in self.sequential:
                self.sequential.add(t.id)
                self.attempts_on_agent[t.id] -= 1
                self.conflict_files[t.id] = tuple(paths)
                self.pending.add(t.id)
                self.emit(
                    "conflict", ticket=t.id, paths=paths, step="sequential", **{"with": others}
                )
                self.emit("ticket-requeued", ticket=t.id, reason="deferred to run alone")
                return
            if step == "fail":
                break
        text = {c.path: c.text or c.message for c in result.conflicts}
        self.emit("conflict", ticket=t.id, paths=paths, step="fail", text=text, **{"with": others})
        with_text = f" (collided with {', '.join(others)})" if others else ""
        self._finish_ticket(
            t.id, TicketState.CONFLICT, f"merge conflict in {', '.join(paths[:10])}{with_text}"
        )

    # --- status write-back -----------------------------------------------------------------

    def _result_fields(
        self, ts: TicketRun, *, commit: str | None, note: str | None, reason: str | None = None
    ) -> dict[str, Any]:
        out: dict[str, Any] = {"run": self.run_id}
        if commit:
            out["commit"] = commit
        out["attempts"] = ts.attempts
        out["duration"] = round(ts.agent_s, 1)
        out["finished_at"] = iso(time.time())
        if note:
            out["note"] = note
        if reason:
            out["reason"] = reason
        return out

    def _status_text(
        self,
        tree: pygit2.Oid,
        ticket: Ticket,
        state: TicketState,
        ts: TicketRun,
        *,
        commit: str | None = None,
        note: str | None = None,
        reason: str | None = None,
    ) -> bytes | None:
        data = self.integration.read(tree, ticket.file)
        if data is None:
            return None
        fields = self._result_fields(ts, commit=commit, note=note, reason=reason)
        try:
            text = write_status(ticket.file, data.decode("utf-8-sig"), state, fields)
        except (ValueError, UnicodeDecodeError):
            return None
        return text.encode("utf-8")

    # --- the end ---------------------------------------------------------------------------

    def _finish(self) -> None:
        # Wait for workers still running (a stop lets them finish; a force stop kills them),
        # and for merged work to pass its gate.
        while self.running or self._gate_busy:
            self._announce_stop()
            if self.force_stop:
                self._gate_cancel.set()
                if self.gating is None and self.awaiting_gate:
                    self._unverified_back_to_pending()
            if self.force_stop:
                for job in self.running.values():
                    job.cancel.set()
            self._drain(timeout=CONTROL_POLL_S)
            if self.config.merge.order is MergeOrder.PLAN:
                self._merge_in_plan_order()
            if not self.force_stop:
                self._maybe_gate()
        # Results still waiting for an earlier ticket in plan order stay in their refs.
        for tid in sorted(self.buffered):
            self.pending.add(tid)
            self.emit(
                "ticket-requeued",
                ticket=tid,
                reason="stopped before its turn to merge",
                keep_result=True,
            )
        self.buffered.clear()
        stopped = self.stop_requested and bool(self.pending)
        if stopped and not self.preserve_state:
            for tid in sorted(self.pending):
                self._finish_ticket(tid, TicketState.CANCELLED, "run stopped")
        self._record_unmerged()
        counts = self.state.metrics()
        valid = True
        if self.spec.validate and not stopped:
            valid = self._final_validation()
        if stopped:
            final = RunStatus.STOPPED
        elif counts["completed"] == counts["total"] and valid:
            final = RunStatus.COMPLETED
        else:
            final = RunStatus.FAILED
        self.emit("run-finished", state=final.value, head=self.integration.head)

    def _final_validation(self) -> bool:
        """`run --validate`: every ticket file on the integration head records what the
        journal says happened to it, and the integration gates pass on the final head."""
        from ruamel.yaml import YAML

        problems: list[str] = []
        head = self.integration.head
        tree = self.integration.tree_of(head)
        loader = YAML(typ="safe")
        for tid, ts in sorted(self.state.tickets.items()):
            data = self.integration.read(tree, self.tickets[tid].file)
            text = (data or b"").decode("utf-8", "replace")
            if self.tickets[tid].file.endswith(".md"):
                from gitexec.tickets import split_front_matter

                split = split_front_matter(text)
                text = split[0] if split else ""
            try:
                recorded = loader.load(text) or {}
            except Exception:
                recorded = {}
            result = recorded.get("result") if isinstance(recorded, dict) else None
            if not isinstance(recorded, dict) or recorded.get("status") != ts.status.value:
                problems.append(f"{tid}: the ticket file does not say {ts.status.value}")
            elif ts.status.terminal and (
                not isinstance(result, dict) or result.get("run") != self.run_id
            ):
                problems.append(f"{tid}: the ticket file's result is not from run {self.run_id}")
        if self.config.gates.integration and not problems:
            runner = self._gate_runner()
            ok, output = runner.check(head)
            if not ok:
                problems.append(f"the final result fails its gate: {output.strip()}")
        self.emit("validation", head=head, ok=not problems, problems=problems)
        if problems:
            self.reporter.notice("validation failed:\n  " + "\n  ".join(problems))
        return not problems

    def _unverified_back_to_pending(self) -> None:
        """A forced stop abandons merges no gate has passed: undo them, keep them resumable."""
        first = self.awaiting_gate[0]
        current = self.integration.head
        self.integration.move(current, first.previous, "stop: roll back ungated merges")
        self._forget_merges_after(first.previous)
        self.emit("head-moved", head=first.previous, previous=current, reason="stop")
        for entry in self.awaiting_gate:
            self.pending.add(entry.job.ticket.id)
            self.emit(
                "ticket-requeued",
                ticket=entry.job.ticket.id,
                reason="stopped before its gate passed",
                keep_result=True,
            )
        self.awaiting_gate = []

    def _record_unmerged(self) -> None:
        """One commit recording the status of tickets that ended without merging."""
        head = self.integration.head
        tree = self.integration.tree_of(head)
        files: dict[str, bytes] = {}
        done: list[str] = []
        for tid, ts in sorted(self.state.tickets.items()):
            if not ts.status.terminal or ts.status is TicketState.COMPLETED:
                continue
            if self.state.recorded.get(tid) == ts.status.value:
                continue  # recorded by an earlier pass (collect, resume)
            text = self._status_text(
                tree, self.tickets[tid], ts.status, ts, commit=ts.commit, reason=ts.reason
            )
            if text is not None:
                files[self.tickets[tid].file] = text
                done.append(tid)
        if not files:
            return
        summary = f"gitexec: record status of {len(files)} unmerged ticket(s)"
        new = self.integration.record(head, files, summary)
        self.emit("head-moved", head=new, previous=head, reason=summary, tickets=done)

    # --- collecting results made elsewhere (scale-out) -------------------------------------

    def collect(self, results: Sequence[RemoteResult]) -> RunState:
        """Merge results that `run-ticket` produced on other machines, in plan order.

        The same journal, merges, rules, gates and status write-back as a local run; the
        run stays resumable (`stopped`) until every ticket has ended, so the next wave's
        collect continues the same integration branch.
        """
        self.offline = True
        lock = EngineLock(self.paths.state_dir)
        with lock.held(self.run_id):
            (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
            self._journal = Journal(self.run_dir / JOURNAL)
            try:
                if self.resuming:
                    self._restore_offline()
                else:
                    self.emit("run-started", **self._start_fields())
                    self.integration.create(self.spec.base)
                self.reporter.start(self)
                order = {tid: n for n, tid in enumerate(self.plan_order)}
                for result in sorted(results, key=lambda r: order.get(r.ticket, len(order))):
                    self._collect_one(result)
                    self._drain(timeout=0)
                    while self._gate_busy:
                        self._maybe_gate()
                        self._drain(timeout=CONTROL_POLL_S)
                self._record_unmerged()
                counts = self.state.metrics()
                left = [t for t, ts in self.state.tickets.items() if not ts.status.terminal]
                if left:
                    final = RunStatus.STOPPED
                elif counts["completed"] == counts["total"]:
                    final = RunStatus.COMPLETED
                else:
                    final = RunStatus.FAILED
                self.emit(
                    "run-finished",
                    state=final.value,
                    head=self.integration.head,
                    waiting_for=sorted(left),
                )
            finally:
                self._journal.close()
                self.pool.close()
                self.reporter.finish(self)
        return self.state

    def _restore_offline(self) -> None:
        self.emit("run-resumed", pid=os.getpid(), jobs=self.jobs, head=self.integration.head)
        self.pending = {t for t, ts in self.state.tickets.items() if not ts.status.terminal}
        for tid, ts in self.state.tickets.items():
            if ts.status is TicketState.COMPLETED:
                self._unlock_dependents(tid)

    def _collect_one(self, r: RemoteResult) -> None:
        ts = self.state.tickets.get(r.ticket)
        if ts is None or ts.status.terminal:
            return  # not in this run, or collected already
        ticket = self.tickets[r.ticket]
        self.agent_of[r.ticket] = r.agent or self.agent_of[r.ticket]
        job = Job(
            ticket=ticket,
            agent=self.config.agents.get(self.agent_of[r.ticket], self.config.agent(None)),
            attempt=max(1, r.attempts),
            slot=self.pool.slots[0],
            base=r.base,
        )
        self.emit(
            "ticket-dispatched",
            ticket=r.ticket,
            attempt=job.attempt,
            agent=job.agent.name,
            slot=0,
            base=r.base,
            remote=True,
        )
        self.emit("agent-exited", ticket=r.ticket, exit_code=0, duration_s=r.duration_s)
        if r.status is not TicketState.COMPLETED or r.commit is None:
            state = r.status if r.status.terminal else TicketState.FAILED
            self._finish_ticket(r.ticket, state, r.reason or f"{state.value} on its runner")
            return
        missing = [
            d
            for d in ticket.depends_on
            if d in self.state.tickets and self.state.tickets[d].status is not TicketState.COMPLETED
        ]
        if missing:
            self._finish_ticket(
                r.ticket,
                TicketState.BLOCKED,
                f"ran before its dependencies were merged: {', '.join(missing)}",
            )
            return
        self.emit("ticket-committed", ticket=r.ticket, commit=r.commit, empty=r.commit == r.base)
        self.emit("work-done", ticket=r.ticket, ok=True, slot_s=r.duration_s)
        self.pending.discard(r.ticket)
        self._merge(job, r.commit)

    # --- views for reporters and control --------------------------------------------------

    def eta_s(self) -> float:
        from gitexec.dashboard import remaining_s

        return remaining_s(self.state, self.jobs, self.progress)

    @property
    def interrupted(self) -> bool:
        """Stopped by SIGINT/SIGTERM (exit 130) rather than by a control request."""
        return self._signals > 0

    def progress(self, tid: str) -> float | None:
        return agents.read_progress(self.run_dir / "progress" / tid)

    def retry(self, tid: str, *, agent: str | None) -> list[str]:
        """Put a failed ticket (and the dependents it blocked) back in the queue."""
        if tid not in self.tickets:
            raise UserError(f"no ticket {tid!r} in run {self.run_id}")
        status = self.state.tickets[tid].status
        retriable = (TicketState.FAILED, TicketState.CONFLICT, TicketState.CANCELLED)
        if agent is not None and tid in self.pending:
            self.agent_of[tid] = agent
            self.emit("ticket-requeued", ticket=tid, agent=agent, reason="reassigned")
            return [tid]
        if status not in retriable:
            raise UserError(
                f"{tid} is {status.value}; only failed, conflict or cancelled tickets can be "
                "retried" + (" (or pending ones reassigned)" if agent else "")
            )
        requeued = [tid]
        stack = [tid]
        while stack:
            current = stack.pop()
            for j in self.graph.dependents[self.graph.index[current]]:
                dep = self.graph.tickets[j].id
                if self.state.tickets[dep].status is TicketState.BLOCKED:
                    requeued.append(dep)
                    stack.append(dep)
        for t in requeued:
            if t == tid and agent is not None:
                self.agent_of[t] = agent
            self.attempts_on_agent[t] = 0
            self.reruns[t] = 0
            self.not_before.pop(t, None)
            self.pending.add(t)
            self.emit(
                "ticket-requeued",
                ticket=t,
                agent=self.agent_of[t],
                reset_attempts=True,
                reason="retry requested" if t == tid else f"unblocked by retry of {tid}",
            )
        return requeued

    def set_jobs(self, jobs: int) -> None:
        self.jobs = jobs
        self.gate.set_limit(jobs)
        self.pool.resize(jobs + 1)


def _overlap(a: set[str], b: set[str]) -> set[str]:
    """Paths in both sets, a directory counting for everything below it."""
    common = a & b
    for x, others in ((a, b), (b, a)):
        for path in x:
            prefix = path + "/"
            common.update(p for p in others if p.startswith(prefix))
    return common
