"""The scheduling policy of a run, as plain state: what may start now, and what each
outcome means for a ticket (retry, fall back, block its dependents, climb the ladder).

No git, no processes, no threads, no files, no clock: the driver (engine.py) passes the
time in, asks `select`, starts what it gets, and reports outcomes back. Every decision is
emitted as a typed event through the callable the scheduler was built with (the driver
journals it), so a run's history and its scheduling can never disagree, and `restore`
rebuilds the same state from a replayed journal after a crash.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gitexec import events as ev
from gitexec.globs import PathSet, pathsets_may_overlap
from gitexec.quotas import PoolPolicy, QuotaPools
from gitexec.tickets import ConflictStep, Ticket, TicketState


class Phase(enum.Enum):
    PENDING = "pending"  # waiting for dependencies, a backoff, or a place to run
    RUNNING = "running"  # an attempt holds a slot
    MERGING = "merging"  # its result is with the merge queue (to merge, or to be gated)
    DONE = "done"  # merged and gated, or ended without merging


class Refused(Exception):
    """A live request the scheduler cannot honour (the message says why)."""


@dataclass(frozen=True)
class AgentPolicy:
    max_parallel: int | None = None
    retries: int | None = None
    fallback: str | None = None


@dataclass(frozen=True)
class Policy:
    """The configuration the scheduler decides by (built from Config and the run's flags)."""

    agents: Mapping[str, AgentPolicy]
    retries: int = 0
    retry_backoff_s: float = 2.0
    ladder: tuple[ConflictStep, ...] = (ConflictStep.FAIL,)
    max_reruns: int = 1
    settled: PathSet = field(default_factory=lambda: PathSet(()))  # paths merge rules settle
    barrier: bool = False  # group by group, like the original design's loop
    allow_overlap: bool = False
    offline: bool = False  # results come from elsewhere (`collect`): nothing can run again
    max_backoff_s: float = 300.0  # the longest wait after a throttle without a retry-after
    max_throttle_wait_s: float = 3600.0  # a pool throttled this long in one stretch gives up
    pool_of: Mapping[str, str] = field(
        default_factory=dict
    )  # agent -> quota pool (default: itself)
    pools: Mapping[str, PoolPolicy] = field(default_factory=dict)


@dataclass(frozen=True)
class Attempt:
    """What a started attempt needs to know (the worker's orders)."""

    ticket: str
    agent: str
    attempt: int
    slot: int
    base: str
    sequential: bool
    conflicts: tuple[str, ...]
    conflict_hunks: Mapping[str, str] = field(default_factory=dict)
    start_from: tuple[str, str] | None = None  # (base, commit) to carry on from


@dataclass
class Record:
    """Everything the scheduler knows about one ticket."""

    ticket: Ticket
    agent: str
    priority: int
    rank: float  # longest remaining path, by estimate (ties after priority)
    group: int
    deps_left: int = 0
    phase: Phase = Phase.PENDING
    outcome: TicketState | None = None  # set when DONE
    attempts: int = 0  # started so far (numbers the next one)
    failures: int = 0  # failed attempts on the current agent
    agents_tried: list[str] = field(default_factory=list)
    reruns: int = 0
    throttles: int = 0  # in a row
    sequential: bool = False
    conflicts: tuple[str, ...] = ()  # files the next attempt is told collided
    conflict_hunks: Mapping[str, str] = field(default_factory=dict)  # and how
    start_from: tuple[str, str] | None = None  # (base, commit) a failed attempt left to go on
    not_before: float = 0.0  # retry backoff (the driver's monotonic clock)
    slot: int | None = None
    kept: tuple[str, str] | None = None  # (base, commit): a result to merge, not to redo

    @property
    def id(self) -> str:
        return self.ticket.id

    @property
    def commit(self) -> str | None:
        return self.kept[1] if self.kept else None


Emit = Callable[[ev.Event], object]


class Placed(Protocol):
    """A ticket with the agent that runs it (a Record, or a ticket in a simulated run)."""

    @property
    def agent(self) -> str: ...
    @property
    def ticket(self) -> Ticket: ...


Overlap = Callable[[tuple[str, ...], tuple[str, ...]], object]


def fits(
    candidate: Placed,
    busy: Sequence[Placed],
    policy: Policy,
    jobs: int,
    *,
    limits: Mapping[str, int] | None = None,
    capacities: Mapping[str, float] | None = None,
    room: Callable[[str, int], bool] | None = None,
    overlap: Overlap | None = None,
) -> bool:
    """Whether `candidate` may start beside `busy` (what runs already): its agent's
    `max_parallel` (or the limit set live in `limits`), room in its quota pool (`room`),
    declared paths that overlap (but for paths merge rules settle, and unless overlaps
    are allowed), and resource weights (together at most `capacities`, else `jobs`, of
    each).

    The scheduler's one rule; plan estimates and `run --dry-run` simulate runs with it.
    `overlap(a, b)` may stand in for the path check with the same answers (a memo).
    """
    agent = policy.agents.get(candidate.agent, AgentPolicy())
    limit = (limits or {}).get(candidate.agent, agent.max_parallel)
    if limit is not None and sum(1 for b in busy if b.agent == candidate.agent) >= limit:
        return False
    if room is not None:
        pool = policy.pool_of.get(candidate.agent, candidate.agent)
        in_pool = sum(1 for b in busy if policy.pool_of.get(b.agent, b.agent) == pool)
        if not room(pool, in_pool):
            return False
    paths = candidate.ticket.paths
    if paths and not policy.allow_overlap:
        for b in busy:
            if b.ticket.paths and (
                overlap(paths, b.ticket.paths)
                if overlap is not None
                else pathsets_may_overlap(paths, b.ticket.paths, policy.settled)
            ):
                return False
    for name, weight in candidate.ticket.resources:
        capacity = (capacities or {}).get(name, float(jobs))
        used = sum(b.ticket.resource(name) for b in busy)
        if used > 0 and used + min(weight, capacity) > capacity:
            return False
    return True


class Scheduler:
    def __init__(
        self,
        tickets: Iterable[Ticket],
        policy: Policy,
        *,
        jobs: int,
        emit: Emit,
        default_agent: str,
        ranks: Mapping[str, float] | None = None,
        groups: Mapping[str, int] | None = None,
    ) -> None:
        self.policy = policy
        self.jobs = jobs
        self.default_agent = default_agent
        self.emit = emit
        self.stopping = False  # nothing new starts, failures are not retried
        self.hold: str | None = None  # why nothing new starts for now (e.g. "budget")
        self.capacities: dict[str, float] = {}  # resources given a capacity (else `jobs`)
        self.agent_limits: dict[str, int] = {}  # max_parallel set live, over the policy's
        self.quotas = QuotaPools(
            policy.pools,
            emit,
            backoff_s=policy.retry_backoff_s,
            max_backoff_s=policy.max_backoff_s,
            default=PoolPolicy(max_wait_s=policy.max_throttle_wait_s),
        )
        ranks = ranks or {}
        groups = groups or {}
        self.records: dict[str, Record] = {}
        for t in tickets:
            agent = t.agent or default_agent
            self.records[t.id] = Record(
                ticket=t,
                agent=agent,
                priority=t.priority,
                rank=ranks.get(t.id, 0.0),
                group=groups.get(t.id, 0),
                agents_tried=[agent],
            )
        self.dependents: dict[str, list[str]] = {tid: [] for tid in self.records}
        for r in self.records.values():
            for dep in r.ticket.depends_on:
                if dep in self.records:
                    self.dependents[dep].append(r.id)
                    r.deps_left += 1
        self._order: list[Record] | None = None  # records not done, best first

    def reorder(self) -> None:
        """Priorities changed, or records were added or brought back: sort again."""
        self._order = None

    def _live(self) -> list[Record]:
        """Records not done, best first: highest priority, then longest remaining path,
        then id. Sorted once (and again after `reorder`), and pruned as tickets finish, so
        a dispatch costs a pass over what is left, never a sort of every ticket."""
        order = self._order
        if order is None:
            order = sorted(
                (r for r in self.records.values() if r.phase is not Phase.DONE), key=_best_first
            )
        else:
            order = [r for r in order if r.phase is not Phase.DONE]
        self._order = order
        return order

    # --- queries -----------------------------------------------------------------------------

    def __getitem__(self, tid: str) -> Record:
        return self.records[tid]

    def in_phase(self, phase: Phase) -> list[str]:
        return [tid for tid, r in self.records.items() if r.phase is phase]

    @property
    def running(self) -> list[Record]:
        return [r for r in self._live() if r.phase is Phase.RUNNING]

    @property
    def pending(self) -> list[Record]:
        return [r for r in self._live() if r.phase is Phase.PENDING]

    def has_pending(self) -> bool:
        return any(r.phase is Phase.PENDING for r in self._live())

    def stalled(self) -> bool:
        """Work left, nothing in flight, and nothing that could ever start: a bug."""
        if any(r.phase in (Phase.RUNNING, Phase.MERGING) for r in self.records.values()):
            return False
        pending = self.pending
        return bool(pending) and all(r.deps_left for r in pending)

    # --- what may start ------------------------------------------------------------------------

    def ready(self, now: float) -> list[Record]:
        """Pending tickets whose dependencies merged and backoff passed, best first:
        highest priority, then longest remaining path."""
        ready = [
            r
            for r in self._live()
            if r.phase is Phase.PENDING
            and r.deps_left == 0
            and r.not_before <= now
            and r.kept is None
        ]
        if self.policy.barrier and ready:
            current = min(
                (
                    r.group
                    for r in self.records.values()
                    if r.phase in (Phase.PENDING, Phase.RUNNING)
                ),
                default=0,
            )
            ready = [r for r in ready if r.group <= current]
        return ready

    def urgency(self, tid: str) -> tuple[Urgency, Urgency | None]:
        """Where `tid` stands in the order tickets start in (smaller first), and where the
        most urgent ticket its merge would make ready stands (None: it makes none ready)."""
        nexts = [_best_first(self[d]) for d in self.dependents[tid] if self[d].deps_left == 1]
        return _best_first(self[tid]), min(nexts, default=None)

    def select(self, now: float, free_slots: int) -> list[str]:
        """The tickets to start now, in order, given `free_slots` places to put them.

        One spare beyond `jobs` is allowed in flight: its slot reset overlaps the others'
        agents (it waits for an agent place before its agent starts). A ticket deferred to
        run alone starts only when nothing else runs, and nothing starts beside it.
        """
        if self.hold is not None:
            return []
        self.quotas.tick(now)
        running = self.running
        if any(r.sequential for r in running):
            return []
        ready = self.ready(now)
        alone = [r for r in ready if r.sequential]
        if alone:
            return [alone[0].id] if not running and free_slots > 0 else []
        chosen: list[Record] = []
        room = min(free_slots, self.jobs + 1 - len(running))
        for r in ready:
            if len(chosen) >= room:
                break
            if self._fits(r, [*running, *chosen]):
                chosen.append(r)
        return [r.id for r in chosen]

    def _fits(self, r: Record, busy: Sequence[Record]) -> bool:
        return fits(
            r,
            busy,
            self.policy,
            self.jobs,
            limits=self.agent_limits,
            capacities=self.capacities,
            room=self.quotas.room,
        )

    def start(self, tid: str, slot: int, base: str) -> Attempt:
        """Record that `tid` starts on `slot` from `base` (journaled as dispatched)."""
        r = self.records[tid]
        r.phase = Phase.RUNNING
        r.attempts += 1
        r.slot = slot
        attempt = Attempt(
            tid,
            r.agent,
            r.attempts,
            slot,
            base,
            r.sequential,
            r.conflicts,
            r.conflict_hunks,
            r.start_from,
        )
        r.conflicts, r.conflict_hunks, r.start_from = (), {}, None
        self.emit(
            ev.TicketDispatched(
                ticket=tid,
                attempt=attempt.attempt,
                agent=attempt.agent,
                slot=slot,
                base=base,
                sequential=attempt.sequential,
                conflicts=attempt.conflicts,
            )
        )
        return attempt

    # --- outcomes ------------------------------------------------------------------------------

    def stopped_kept(self, tid: str, base: str, commit: str, reason: str) -> None:
        """A finished result that could not merge now stays to be merged later."""
        self.stopped(tid, reason, keep_result=True)
        self.records[tid].kept = (base, commit)

    def result_ready(self, tid: str) -> None:
        """An attempt left a result: it is the merge queue's now."""
        r = self.records[tid]
        r.phase = Phase.MERGING
        r.slot = None

    def collected(self, tid: str, agent: str, attempts: int) -> None:
        """A result produced elsewhere arrived (offline collect)."""
        r = self.records[tid]
        r.agent = agent
        r.attempts = attempts
        r.phase = Phase.MERGING

    def stopped(self, tid: str, reason: str = "stopped", *, keep_result: bool = False) -> None:
        """An attempt (or a result waiting to merge) was cut off: it goes back to pending."""
        r = self.records[tid]
        r.phase = Phase.PENDING
        r.slot = None
        self.emit(ev.TicketRequeued(ticket=tid, reason=reason, keep_result=keep_result))

    def failed(
        self,
        tid: str,
        reason: str,
        now: float,
        *,
        retryable: bool = True,
        left: tuple[str, str] | None = None,
    ) -> None:
        """Retry with backoff, then the fallback agent, then `failed` (dependents blocked)."""
        r = self.records[tid]
        r.slot = None
        agent = self.policy.agents.get(r.agent, AgentPolicy())
        retries = next(
            (n for n in (r.ticket.retries, agent.retries) if n is not None), self.policy.retries
        )
        retryable = retryable and not self.policy.offline and not self.stopping
        r.failures += 1
        base, kept = left or (None, None)
        self.emit(
            ev.AttemptFailed(ticket=tid, reason=reason, retryable=retryable, base=base, kept=kept)
        )
        if retryable and r.failures <= retries:
            delay = min(
                self.policy.retry_backoff_s * 2 ** (r.failures - 1), self.policy.max_backoff_s
            )
            r.not_before = now + delay
            r.phase = Phase.PENDING
            self.emit(ev.TicketRetry(ticket=tid, reason=reason, delay_s=delay, agent=r.agent))
            return
        fallback = agent.fallback
        if retryable and fallback is not None and fallback not in r.agents_tried:
            r.agents_tried.append(fallback)
            r.agent = fallback
            r.failures = 0
            r.phase = Phase.PENDING
            self.emit(
                ev.TicketRequeued(
                    ticket=tid,
                    agent=fallback,
                    reason=f"{reason}; falling back to agent {fallback!r}",
                )
            )
            return
        self.finish(tid, TicketState.FAILED, reason)

    def pool_of(self, r: Record) -> str:
        """The quota pool the ticket's agent draws on."""
        return self.policy.pool_of.get(r.agent, r.agent)

    def throttled(
        self, tid: str, reason: str, now: float, *, retry_after_s: float | None = None
    ) -> None:
        """The provider asked to wait (rate limit, overload): not a failed attempt. The
        whole quota pool waits (see quotas.py), then the ticket runs again; a pool that
        stays throttled past its `max_wait` fails its waiting tickets."""
        r = self.records[tid]
        r.slot = None
        r.throttles += 1
        pool = self.pool_of(r)
        delay = None
        if not self.stopping:
            delay = self.quotas.throttled(
                pool, now, retry_after_s=retry_after_s, reason=reason, ticket=tid
            )
        if delay is None:
            why = f"throttled: {reason}"
            if not self.stopping:
                why += f" (quota {pool} waited longer than its max_wait)"
            self.failed(tid, why, now, retryable=False)
            if not self.stopping:
                for waiting in self.pending:
                    if self.pool_of(waiting) == pool and waiting.deps_left == 0:
                        self.failed(waiting.id, why, now, retryable=False)
            return
        r.not_before = now + delay
        r.phase = Phase.PENDING
        self.emit(
            ev.TicketThrottled(
                ticket=tid, reason=reason, delay_s=delay, retry_after_s=retry_after_s
            )
        )

    def answered(self, tid: str) -> None:
        """The provider answered an attempt (success or a failure of its own): its pool
        is open again."""
        self.records[tid].throttles = 0
        self.quotas.answered(self.pool_of(self.records[tid]))

    def conflicted(
        self,
        tid: str,
        paths: Sequence[str],
        *,
        collided_with: Sequence[str] = (),
        text: Mapping[str, str] | None = None,
    ) -> ConflictStep:
        """Merge rules did not settle a conflict: take the next step of the ladder."""
        r = self.records[tid]
        ladder = r.ticket.on_conflict or self.policy.ladder
        # Collecting results from elsewhere, nothing can run again: rules, then fail.
        steps = [
            s
            for s in ladder
            if s is ConflictStep.FAIL or (s is not ConflictStep.RULES and not self.policy.offline)
        ]
        collided = tuple(collided_with)
        for step in steps:
            if step is ConflictStep.FAIL:
                break
            if step is ConflictStep.RERUN and r.reruns < self.policy.max_reruns:
                r.reruns += 1
                reason = "re-run on the merged head"
            elif step is ConflictStep.SEQUENTIAL and not r.sequential:
                r.sequential = True
                reason = "deferred to run alone"
            else:
                continue
            r.conflicts = tuple(paths)
            r.conflict_hunks = dict(text or {})
            r.phase = Phase.PENDING
            self.emit(
                ev.Conflict(
                    ticket=tid,
                    step=step,
                    paths=tuple(paths),
                    collided_with=collided,
                    text=r.conflict_hunks,
                )
            )
            self.emit(ev.TicketRequeued(ticket=tid, reason=reason))
            return step
        self.emit(
            ev.Conflict(
                ticket=tid,
                step=ConflictStep.FAIL,
                paths=tuple(paths),
                collided_with=collided,
                text=dict(text or {}),
            )
        )
        with_text = f" (collided with {', '.join(collided)})" if collided else ""
        self.finish(
            tid, TicketState.CONFLICT, f"merge conflict in {', '.join(paths[:10])}{with_text}"
        )
        return ConflictStep.FAIL

    def merged(self, tid: str, *, awaiting_gate: bool) -> None:
        """Merged into the integration head; it counts once no gate is pending for it."""
        if not awaiting_gate:
            self.completed(tid)

    def completed(self, tid: str) -> None:
        """Merged and gated: its dependents may start."""
        r = self.records[tid]
        r.phase = Phase.DONE
        r.outcome = TicketState.COMPLETED
        for dep in self.dependents[tid]:
            self.records[dep].deps_left -= 1

    def finish(self, tid: str, state: TicketState, reason: str) -> None:
        """End a ticket without merging; dependents that waited for it are blocked."""
        self._end(tid, state, reason)
        stack = [tid]
        while stack:
            current = stack.pop()
            for dep in self.dependents[current]:
                if self.records[dep].phase is Phase.PENDING:
                    state_of = self.records[current].outcome
                    assert state_of is not None
                    self._end(dep, TicketState.BLOCKED, f"dependency {current} {state_of.value}")
                    stack.append(dep)

    def set_jobs(self, jobs: int) -> None:
        self.jobs = jobs

    def known(self, tid: str) -> Record:
        r = self.records.get(tid)
        if r is None:
            raise Refused(f"no ticket {tid!r} in this run")
        return r

    def _end(self, tid: str, state: TicketState, reason: str) -> None:
        r = self.records[tid]
        r.phase = Phase.DONE
        r.outcome = state
        r.slot = None
        self.emit(ev.TicketFinished(ticket=tid, state=state, reason=reason))

    def take_kept(self) -> list[tuple[str, str, str]]:
        """Kept results whose dependencies have merged: (ticket, base, commit) to merge
        now; they are the merge queue's from here."""
        ready = [r for r in self.pending if r.kept is not None and r.deps_left == 0]
        out = []
        for r in ready:
            assert r.kept is not None
            out.append((r.id, *r.kept))
            r.kept = None
            r.phase = Phase.MERGING
        return out


Urgency = tuple[int, float, str]  # the order tickets start in: smaller goes first


def _best_first(r: Record) -> Urgency:
    return (-r.priority, -r.rank, r.id)
