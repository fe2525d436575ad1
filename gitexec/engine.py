"""The driver of a run: the lock, the journal, signals, and the loop that connects the
scheduler (what may start), the workers (one attempt each, on threads) and the merge
queue (the integration head).

The main thread owns the scheduler, the merge queue and the pygit2 repository, so merges
happen one at a time, in memory, with no locks. Workers report through a queue. Every
state change is journaled before it is acted on; `RunState` applies the same events, so
status, reports and `resume` see what the engine saw.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pygit2

from gitexec import agents, budget, process
from gitexec import events as ev
from gitexec.budget import BudgetWatch
from gitexec.control import process_requests
from gitexec.crew import Crew
from gitexec.dashboard import Reporter, remaining_s
from gitexec.enqueue import add_to_run
from gitexec.errors import UserError
from gitexec.gates import GateOutcome, GateRunner
from gitexec.gitutil import RepoPaths, committer_identity
from gitexec.handoff import dependencies_of
from gitexec.integration import Integration
from gitexec.journal import JOURNAL, EngineLock, Journal
from gitexec.merge_queue import (
    BranchMoved,
    Conflicted,
    GateBatch,
    Gated,
    Merged,
    MergeQueue,
    Rejected,
    Verdict,
)
from gitexec.notify import Notifier
from gitexec.overlaps import OverlapWatch
from gitexec.pool import Pool, pool_dir
from gitexec.refs import integration_ref, left_ref
from gitexec.resources import LOAD_EVERY_S, OvercommitWatch
from gitexec.runmetrics import metrics
from gitexec.runspec import RunSpec, policy_for, start_event
from gitexec.runstate import RUNS_DIR, RunState, RunStatus
from gitexec.scheduler import Scheduler
from gitexec.steering import LiveControls, Steering
from gitexec.tickets import Ticket, TicketState
from gitexec.worker import AgentPlaces, Job, Outcome, WorkerContext

CONTROL_POLL_S = 0.05
OVERLAP_EVERY_S = 2.0
TICK_EVERY_S = 0.25
PUBLISH_EVERY_S = 0.2  # the branch follows the merges at most this often while agents run
ENGINE_DIR_NAMES = ("logs", "progress")


@dataclass(frozen=True)
class _AttemptDone:
    job: Job
    outcome: Outcome


@dataclass(frozen=True)
class _GateDone:
    batch: GateBatch
    outcome: GateOutcome


class Engine:
    """Runs one run (or collects one from elsewhere); implements control.Controlled."""

    def __init__(
        self,
        repo_paths: RepoPaths,
        spec: RunSpec,
        reporter: Reporter,
        resume: RunState | None = None,
        *,
        offline: bool = False,
        onto: str | None = None,
        budget_usd: float | None = None,
    ) -> None:
        self.paths = repo_paths
        self.spec = spec
        self.config = spec.config
        self.reporter = reporter
        self.run_dir = repo_paths.state_dir / RUNS_DIR / spec.run_id
        self.repo = pygit2.Repository(str(repo_paths.common_dir))
        self.identity = committer_identity(repo_paths.root)
        self.integration = Integration(
            self.repo, integration_ref(spec.run_id), self.identity, spec.run_id
        )
        self.state = resume or RunState(spec.run_id)
        self.notifier = Notifier(
            self.config.notify,
            run_id=spec.run_id,
            cwd=repo_paths.root,
            state=self.state,
            log=self.run_dir / "logs" / "notify.log",
            warn=lambda message: self._emit_from_worker(ev.RunWarning(message=message)),
        )
        self.resuming = resume is not None
        self.offline = offline  # collecting results produced elsewhere (`git exec collect`)
        self.onto = onto  # resume: how to treat a branch someone else moved
        self.tickets: dict[str, Ticket] = {t.id: t for t in spec.tickets}

        self.groups = spec.plan.group_of()
        self.scheduler = Scheduler(
            spec.tickets,
            policy_for(spec, offline=offline),
            jobs=spec.jobs,
            emit=self.emit,
            default_agent=self.config.default_agent,
            ranks=spec.ranks(),
            groups=self.groups,
        )
        self.merges = MergeQueue(
            self.integration,
            config=self.config,
            tickets=self.tickets,
            plan_order=spec.plan.order(),
            state=self.state,
            emit=self.emit,
            head=spec.base,
        )
        self.pool = Pool(
            repo_paths, self.spec.jobs + 1, root=pool_dir(repo_paths, self.config.worktree_dir)
        )
        self.places = AgentPlaces(self.spec.jobs)
        self.overlaps = OverlapWatch(self.scheduler.policy.settled)
        self.overcommit = OvercommitWatch()
        self._queue: queue.Queue[ev.Event | _AttemptDone | _GateDone] = queue.Queue()
        self._journal: Journal | None = None
        self.crew = Crew(
            lambda job, outcome: self._queue.put(_AttemptDone(job, outcome)), self.places
        )
        self._gate_cancel = threading.Event()
        self._branch_lost = False
        self.steering = Steering()
        self.controls = LiveControls(
            run_id=spec.run_id,
            run_dir=self.run_dir,
            steering=self.steering,
            scheduler=self.scheduler,
            pool=self.pool,
            places=self.places,
            emit=self.emit,
            agents=list(self.config.agents),
            groups=self.groups,
            enqueue=lambda items: add_to_run(
                items,
                state=self.state,
                tickets=self.tickets,
                groups=self.groups,
                skipped=self.spec.skipped,
                config=self.config,
                scheduler=self.scheduler,
                merges=self.merges,
                emit=self.emit,
            ),
            stop_attempts=self.crew.cancel,
            left_of=lambda tid: self.state.tickets[tid].left,
        )
        self.budget = BudgetWatch(self.state)
        self.budget_override = budget_usd  # resume --budget-usd

    # --- the journal ---------------------------------------------------------------------------

    def emit(self, event: ev.Event) -> ev.Event:
        """Journal an event (main thread), then apply it to the run state and show it."""
        assert self._journal is not None
        journaled = self._journal.append(event)
        self._show(journaled)
        return journaled

    def _show(self, event: ev.Event) -> None:
        self.state.apply(event)
        self.reporter.event(event, self)
        self.notifier.observe(event)

    def _emit_from_worker(self, event: ev.Event) -> None:
        """What a worker reports is written at once and made durable by the engine's next
        record: the engine acts on it only after journaling something of its own."""
        assert self._journal is not None
        self._queue.put(self._journal.append(event, durable=False))

    # --- lifecycle -----------------------------------------------------------------------------

    def run(self) -> RunState:
        with self.session(), self.steering.signals(self.scheduler):
            try:
                self._loop()
                self._finish()
            except BranchMoved as exc:
                self._stop_without_branch(str(exc))
                raise
        return self.state

    def _stop_without_branch(self, reason: str) -> None:
        """The branch is not where the engine left it: merge nothing more, stop the agents
        (their results are kept), and end the run resumable."""
        self._branch_lost = True
        self._request_stop(force=True)
        self._gate_cancel.set()
        self.crew.stop_all()
        while self.crew or self.merges.gating is not None:
            self._drain(timeout=CONTROL_POLL_S)
        self.emit(ev.RunFinished(state=RunStatus.STOPPED, head=self.merges.head, reason=reason))

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Hold the lock and the journal; begin (or take over) the run; always let go."""
        lock = EngineLock(self.paths.state_dir)
        with lock.held(self.spec.run_id):
            if self.integration.exists() and not self.resuming:
                raise UserError(
                    f"run {self.spec.run_id} already exists ({self.integration.ref}); "
                    "resume it or choose another --run-id"
                )
            for name in ENGINE_DIR_NAMES:
                (self.run_dir / name).mkdir(parents=True, exist_ok=True)
            path = self.run_dir / JOURNAL
            try:
                if self.resuming:
                    self._journal = self.merges.journal = Journal(path)
                    self._restore()
                else:
                    # The first record exists before anything else the run leaves behind.
                    self._journal, first = Journal.create(path, start_event(self.spec, os.getpid()))
                    self.merges.journal = self._journal
                    self._show(first)
                    self.integration.create(self.spec.base)
                self.reporter.start(self)
                yield
            except BaseException:
                # The engine is failing: stop agents (the run stays resumable), then let go.
                self._gate_cancel.set()
                self.crew.abandon()
                raise
            finally:
                # Whatever the run's commands left behind (a daemon, a setup's server) ends
                # with the run.
                leftovers = process.kill_run(self.spec.run_id, within=self.pool.root)
                if leftovers:
                    self.reporter.notice(f"killed {len(leftovers)} process(es) left running")
                self.notifier.close()
                if self._journal is not None:
                    self._journal.close()
                self.pool.close()
                self.reporter.finish(self)

    def _restore(self) -> None:
        """Continue a crashed or stopped run where the journal and the refs say it was."""
        from gitexec.recovery import take_over

        take_over(
            self.state,
            self.integration,
            self.scheduler,
            self.merges,
            self.emit,
            common_dir=self.paths.common_dir,
            worktrees=self.pool.root,
            jobs=self.scheduler.jobs,
            onto=self.onto,
        )
        if self.budget_override is not None:
            self.emit(ev.Control(action="budget", usd=self.budget_override))

    def _request_stop(self, *, force: bool) -> None:
        self.steering.request_stop(self.scheduler, force=force)

    @property
    def stop_requested(self) -> bool:
        return self.steering.stop_requested

    @property
    def force_stop(self) -> bool:
        return self.steering.force_stop

    # --- the loop ------------------------------------------------------------------------------

    def _loop(self) -> None:
        # The branch follows the merges once a pass has dispatched what they made ready.
        self.merges.deferring = True
        try:
            self._passes()
        finally:
            self.merges.deferring = False
        self.merges.publish()

    def _passes(self) -> None:
        last_tick = last_overlap = last_load = time.monotonic()
        self._check_budget()  # a resumed run may have spent its budget already
        poll = 0.0  # the first pass dispatches at once; later ones wait for news a moment
        while True:
            self._drain(timeout=poll)
            poll = CONTROL_POLL_S
            process_requests(self.controls)
            self._announce_stop()
            if self.force_stop:
                self.crew.stop_all()
                self._gate_cancel.set()
            if not self.stop_requested and not self.steering.paused:
                self._merge_kept()
                self._dispatch()
            self.places.hand_back()  # to the most urgent claim, now that merges dispatched
            self.merge_in_plan_order()
            self._maybe_gate()
            self.merges.publish(every_s=PUBLISH_EVERY_S)
            now = time.monotonic()
            if now - last_overlap >= OVERLAP_EVERY_S:
                last_overlap = now
                self._detect_overlaps()
            if now - last_load >= LOAD_EVERY_S:
                last_load = now
                warning = self.overcommit.feed(process.machine_load(), self.scheduler.jobs)
                if warning is not None:
                    self.emit(ev.RunWarning(message=warning))
            if now - last_tick >= TICK_EVERY_S:
                self.reporter.tick(self)
                last_tick = now
            if self.crew or self.merges.gating is not None:
                continue
            if self.merges.awaiting_gate and not self.force_stop:
                continue  # merged work counts once its gate passed
            # Results waiting for their turn in plan order do not hold up a stop.
            if self.stop_requested or (
                not self.merges.buffered and not self.scheduler.has_pending()
            ):
                break
            if not self.steering.paused and self.scheduler.stalled():
                pending = sorted(r.id for r in self.scheduler.pending)
                raise RuntimeError(f"scheduler stalled with pending {pending}")

    def _drain(self, timeout: float) -> None:
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            if isinstance(item, _AttemptDone):
                self._attempt_done(item)
            elif isinstance(item, _GateDone) and self._branch_lost:
                self.merges.gating = None  # its verdict cannot be acted on any more
            elif isinstance(item, _GateDone):
                self.apply(self.merges.gate_done(item.batch, item.outcome))
            else:
                self._show(item)
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
        if self.budget.run_usd is not None or self.state.ticket_budget_usd is not None:
            self._check_budget()

    def _merge_kept(self) -> None:
        """Results kept from before (a crash, a stop) merge as they are when they may."""
        for tid, base, commit in self.scheduler.take_kept():
            self.apply(self.merges.submit(tid, base, commit))

    def _dispatch(self) -> None:
        for tid in self.scheduler.select(time.monotonic(), self.pool.free):
            ts = self.state.tickets[tid]
            slot = self.pool.acquire(prefer=ts.last_slot)  # where its agent's session lives
            if slot is None:
                return
            attempt = self.scheduler.start(tid, slot.index, self.merges.head)
            resumable = (
                self.config.resume_sessions
                and ts.session_agent == attempt.agent
                and ts.last_slot == slot.index
            )
            job = Job(
                attempt,
                self.tickets[tid],
                self.config.agents[attempt.agent],
                slot,
                budget_left=self.budget.ticket_left(tid),
                dependencies=dependencies_of(self.tickets[tid], self.state),
                session_id=ts.session_id if resumable else None,
                claim=self.scheduler.urgency(tid),
            )
            self.crew.start(self._worker_context, job)

    def _may_start(self, job: Job) -> str | None:
        """(worker threads) Whether a prepared attempt may start its agent now."""
        if self.scheduler.hold == budget.REASON:
            return "stopped: the run's budget is spent"
        pool = self.scheduler.pool_of(self.scheduler[job.ticket.id])
        if self.scheduler.quotas.paused(pool):
            return f"waiting: quota {pool} was throttled"
        return None

    def _check_budget(self) -> None:
        """Once the run's spend reaches its budget, nothing new starts; the run ends
        stopped (resumable with a larger budget). With `hard`, running agents stop too."""
        for warning in self.budget.unknown_costs():
            self.emit(ev.RunWarning(message=warning))
        if self.scheduler.hold is not None:
            return
        reached = self.budget.reached()
        if reached is not None:
            self.scheduler.hold = self.steering.reason = budget.REASON
            self.emit(reached)
            self.reporter.notice(budget.notice(reached))
            self._request_stop(force=reached.hard)

    @property
    def _worker_context(self) -> WorkerContext:
        return WorkerContext(
            paths=self.paths,
            run_id=self.spec.run_id,
            run_dir=self.run_dir,
            config=self.config,
            identity=self.identity,
            places=self.places,
            emit=self._emit_from_worker,
            may_start=self._may_start,
            budgeted=self.budget.run_usd is not None,
        )

    def _attempt_done(self, done: _AttemptDone) -> None:
        job, outcome = done.job, done.outcome
        tid = job.ticket.id
        self.pool.release(job.slot)
        if self.crew.finished(tid):
            self.scheduler.finish(tid, TicketState.CANCELLED, "cancelled while running")
            return
        if outcome.cancelled or (self.force_stop and not outcome.ok):
            self.scheduler.stopped(tid, outcome.reason or "stopped")
            return
        if not outcome.throttled:
            self.scheduler.answered(tid)
        if outcome.throttled:
            self.scheduler.throttled(
                tid,
                outcome.reason or "throttled",
                time.monotonic(),
                retry_after_s=outcome.retry_after_s,
            )
            return
        if not outcome.ok:
            reason = outcome.reason or "failed"
            self.scheduler.failed(
                tid, reason, time.monotonic(), retryable=outcome.retryable, left=outcome.left
            )
            if outcome.left is not None:  # kept for `retry --keep-worktree`
                self.repo.references.create(
                    left_ref(self.spec.run_id, tid), pygit2.Oid(hex=outcome.left[1]), force=True
                )
            return
        assert outcome.commit is not None
        self.merges.keep(tid, outcome.commit, job.attempt.attempt)
        if self._branch_lost:
            reason = "finished after the branch moved"
            self.scheduler.stopped_kept(tid, job.base, outcome.commit, reason)
            return
        self.scheduler.result_ready(tid)
        self.apply(self.merges.submit(tid, job.base, outcome.commit))

    def apply(self, verdicts: Sequence[Verdict]) -> None:
        """Hand the merge queue's verdicts to the scheduler."""
        for v in verdicts:
            match v:
                case Merged():
                    self.scheduler.merged(v.ticket, awaiting_gate=v.awaiting_gate)
                case Gated():
                    for tid in v.tickets:
                        self.scheduler.completed(tid)
                case Conflicted():
                    self.scheduler.conflicted(
                        v.ticket, v.paths, collided_with=v.collided_with, text=v.text
                    )
                case Rejected():
                    self.scheduler.failed(
                        v.ticket, v.reason, time.monotonic(), retryable=v.retryable
                    )

    def settle(self) -> None:
        """Take in what workers reported, merge what may merge, and run gates until none
        is pending (collect drives the run this way: nothing else runs meanwhile)."""
        self._drain(timeout=0)
        self.merge_in_plan_order()
        while self.merges.gating is not None or self.merges.awaiting_gate:
            self._maybe_gate()
            self._drain(timeout=CONTROL_POLL_S)

    def merge_in_plan_order(self) -> None:
        while (verdicts := self.merges.next_in_plan_order()) is not None:
            self.apply(verdicts)

    def _maybe_gate(self) -> None:
        if self.force_stop:
            return
        batch = self.merges.next_gate(others_running=bool(self.crew))
        if batch is None:
            return
        self._gate_runner().batch_in_background(
            batch.heads,
            on_run=lambda head, ok: self._emit_from_worker(ev.GateRun(head=head, ok=ok)),
            done=lambda outcome: self._queue.put(_GateDone(batch, outcome)),
        )

    def _gate_runner(self) -> GateRunner:
        return GateRunner(
            self.paths,
            self.pool.gate_slot(),
            self.config.gates.integration,
            log=self.run_dir / "logs" / "gate.log",
            env={"GITEXEC_RUN": self.spec.run_id, **self.identity.env()},
            timeout_s=self.config.gates.timeout_s,
            cancel=self._gate_cancel,
            log_cap=self.config.log_max_bytes,
        )

    def _detect_overlaps(self) -> None:
        started = [job for job in self.crew if self.state.tickets[job.ticket.id].pid]
        for overlap in self.overlaps.check_slots(started, self.merges.merged_since):
            self.emit(overlap)

    def _announce_stop(self) -> None:
        """Say what an interrupt did (from the loop: signal handlers must not print)."""
        said = self.steering.announcement()
        if said is not None:
            self.emit(said[0])
            self.reporter.notice(said[1])

    # --- the end -------------------------------------------------------------------------------

    def _finish(self) -> None:
        # Wait for workers still running (a stop lets them finish; a force stop kills them),
        # and for merged work to pass its gate.
        while self.crew or self.merges.gating is not None or self.merges.awaiting_gate:
            self._announce_stop()
            if self.force_stop:
                self._gate_cancel.set()
                self.crew.stop_all()
                for tid in self.merges.stop_unverified():
                    self.scheduler.stopped(tid, "stopped before its gate passed", keep_result=True)
            self._drain(timeout=CONTROL_POLL_S)
            self.merge_in_plan_order()
            if not self.force_stop:
                self._maybe_gate()
        # Results still waiting for an earlier ticket in plan order stay in their refs.
        for tid in self.merges.take_buffered():
            self.scheduler.stopped(tid, "stopped before its turn to merge", keep_result=True)
        pending = [r.id for r in self.scheduler.pending]
        stopped = self.stop_requested and bool(pending)
        if stopped and not self.steering.preserve_state:
            for tid in sorted(pending):
                self.scheduler.finish(tid, TicketState.CANCELLED, "run stopped")
        self.merges.record_unmerged()
        counts = metrics(self.state)
        valid = True
        if self.spec.validate and not stopped:
            valid = self._final_validation()
        if stopped:
            final = RunStatus.STOPPED
        elif counts["completed"] == counts["total"] and valid:
            final = RunStatus.COMPLETED
        else:
            final = RunStatus.FAILED
        reason = self.steering.reason if final is RunStatus.STOPPED else None
        self.emit(ev.RunFinished(state=final, head=self.merges.head, reason=reason))

    def _final_validation(self) -> bool:
        """`run --validate`: the ticket files and the integration gates agree with the journal."""
        check = self._gate_runner().check if self.config.gates.integration else None
        validation = self.emit(self.merges.validation(check))
        assert isinstance(validation, ev.Validation)
        if validation.problems:
            self.reporter.notice("validation failed:\n  " + "\n  ".join(validation.problems))
        return validation.ok

    # --- a read-only view for reporters (dashboard.RunView) -------------------------------------

    @property
    def jobs(self) -> int:
        return self.scheduler.jobs

    def eta_s(self) -> float | None:
        return remaining_s(self.state, self.scheduler.jobs, self.progress)

    def progress(self, tid: str) -> float | None:
        return agents.read_progress(self.run_dir / "progress" / tid)

    @property
    def interrupted(self) -> bool:
        """Stopped by SIGINT/SIGTERM (exit 130) rather than by a control request."""
        return self.steering.interrupts > 0
