"""The journal's vocabulary: one frozen dataclass per event kind, in one registry.

Writers (the engine's driver, scheduler, workers and merge queue) build these values and
readers (`RunState`, the dashboard, reports, resume) receive the same types, so the two
sides cannot drift apart. How they become journal lines, and back, is records.py.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from gitexec.dialects import Status, Usage
from gitexec.tickets import ConflictStep, TicketState


class RunStatus(enum.Enum):
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"
    COMPLETED = "completed"
    FAILED = "failed"
    CRASHED = "crashed"


@dataclass(frozen=True)
class Event:
    """Every event has a kind (its registry name); `seq` and `t` are set when journaled.

    A durable event is on disk before the engine acts on it. Others are written at once (a
    killed engine loses none) and reach the disk with the next durable one: those whose
    loss in a power cut only replays a step, such as an intent whose outcome is recorded.
    """

    kind: ClassVar[str] = ""
    durable: ClassVar[bool] = True
    seq: int = field(default=0, kw_only=True)
    t: float = field(default=0.0, kw_only=True)


@dataclass(frozen=True)
class TicketEvent(Event):
    """An event about one ticket."""

    ticket: str


EVENT_TYPES: dict[str, type[Event]] = {}
_E = TypeVar("_E", bound=Event)


def _kind(name: str) -> Callable[[type[_E]], type[_E]]:
    def register(cls: type[_E]) -> type[_E]:
        cls.kind = name
        EVENT_TYPES[name] = cls
        return cls

    return register


def _key(name: str) -> Any:
    """A field stored under another key in the journal (`with` is a Python keyword)."""
    return {"key": name}


# --- the run ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TicketInfo:
    """A ticket as the run saw it when it started (run-started carries one per ticket)."""

    title: str
    file: str = ""
    agent: str = ""
    depends_on: tuple[str, ...] = ()
    group: int = 0
    estimate_s: float = 0.0
    priority: int = 0
    paths: tuple[str, ...] = ()
    budget_usd: float | None = None


@_kind("run-started")
@dataclass(frozen=True)
class RunStarted(Event):
    run: str
    base: str
    integration: str
    head: str
    jobs: int
    tickets: Mapping[str, TicketInfo]
    version: int = 1
    pid: int | None = None
    base_rev: str = ""
    strategy: str = ""
    merge_order: str = "completion"
    barrier: bool = False
    allow_overlap: bool = False
    skipped: tuple[str, ...] = ()
    groups: tuple[tuple[str, ...], ...] = ()
    critical_path: tuple[str, ...] = ()
    budget_usd: float | None = None  # the run's budget (None: no limit)
    ticket_budget_usd: float | None = None  # each ticket's, unless the ticket sets one
    budget_hard: bool = False


@_kind("run-resumed")
@dataclass(frozen=True)
class RunResumed(Event):
    head: str
    jobs: int
    pid: int | None = None
    reset: tuple[str, ...] = ()  # tickets whose interrupted attempt starts over
    reuse: tuple[str, ...] = ()  # finished results merged without running their agent again
    killed: tuple[int, ...] = ()  # process groups of the dead engine's agents


@_kind("ticket-enqueued")
@dataclass(frozen=True)
class TicketEnqueued(TicketEvent):
    """A ticket added to a live or resumable run (`git exec enqueue`); its file's text
    rides along, since the run's base commit does not have it."""

    info: TicketInfo
    file: str
    text: str


@_kind("run-finished")
@dataclass(frozen=True)
class RunFinished(Event):
    state: RunStatus
    head: str
    waiting_for: tuple[str, ...] = ()  # collect: tickets later waves still have to bring
    reason: str | None = None


@_kind("control")
@dataclass(frozen=True)
class Control(Event):
    """A live request the engine acted on (pause, resume, stop, adjust, ...)."""

    action: str
    jobs: int | None = None
    previous: int | None = None
    ticket: str | None = None
    priority: int | None = None
    force: bool = False
    preserve_state: bool = False
    group: int | None = None
    tickets: tuple[str, ...] = ()
    usd: float | None = None  # a new run budget (resume --budget-usd)
    pool: str | None = None
    max_parallel: int | None = None
    resource: str | None = None
    capacity: float | None = None
    agent: str | None = None


@_kind("warning")
@dataclass(frozen=True)
class RunWarning(Event):
    message: str


@_kind("head-moved")
@dataclass(frozen=True)
class HeadMoved(Event):
    """The integration branch moved other than by a ticket merge (rollback, status record)."""

    head: str
    previous: str | None = None
    reason: str = ""
    tickets: tuple[str, ...] = ()  # tickets whose status this move recorded


@_kind("validation")
@dataclass(frozen=True)
class Validation(Event):
    head: str
    ok: bool
    problems: tuple[str, ...] = ()


@_kind("overlap")
@dataclass(frozen=True)
class Overlap(Event):
    """A running ticket touched paths another running or merged ticket touched."""

    tickets: tuple[str, str]
    paths: tuple[str, ...] = ()
    against: str = "running"


# --- one ticket's attempt --------------------------------------------------------------------


@_kind("ticket-dispatched")
@dataclass(frozen=True)
class TicketDispatched(TicketEvent):
    # Lost in a power cut, the ticket is dispatched again: no agent survives one.
    durable: ClassVar[bool] = False
    attempt: int
    agent: str
    slot: int | None
    base: str
    sequential: bool = False
    conflicts: tuple[str, ...] = ()


@_kind("attempt-waiting")
@dataclass(frozen=True)
class AttemptWaiting(TicketEvent):
    """Its slot is ready; it waits for one of the `jobs` agent places (the spare slot)."""


@_kind("agent-started")
@dataclass(frozen=True)
class AgentStarted(TicketEvent):
    pid: int
    pgid: int
    slot: int | None = None
    agent: str = ""
    attempt: int = 0
    sequential: bool = False


@_kind("agent-exited")
@dataclass(frozen=True)
class AgentExited(TicketEvent):
    exit_code: int
    duration_s: float = 0.0
    timed_out: bool = False
    cancelled: bool = False


@_kind("agent-reported")
@dataclass(frozen=True)
class AgentReported(TicketEvent):
    """What the agent's output said about its attempt (its dialect, or its result file):
    the outcome in its own words, and what it cost."""

    status: Status
    reason: str | None = None
    retry_after_s: float | None = None
    usage: Usage | None = None
    cost_usd: float | None = None
    model: str | None = None
    session_id: str | None = None
    summary: str | None = None
    denials: tuple[str, ...] = ()
    cpu_s: float | None = None
    peak_rss_mb: float | None = None


@_kind("agent-usage")
@dataclass(frozen=True)
class AgentUsage(TicketEvent):
    """Tokens (and cost) a running agent has reported so far (streaming dialects)."""

    usage: Usage
    cost_usd: float | None = None


@_kind("agent-sample")
@dataclass(frozen=True)
class AgentSample(TicketEvent):
    """A running agent's resource use (its whole process tree), journaled every few seconds."""

    cpu_s: float  # user + system so far
    cpu_percent: float  # since the previous sample; 100 = one core
    rss_mb: float
    peak_rss_mb: float = 0.0
    processes: int = 0


@_kind("ticket-committed")
@dataclass(frozen=True)
class TicketCommitted(TicketEvent):
    commit: str
    own_commits: int = 0
    empty: bool = False


@_kind("ticket-validating")
@dataclass(frozen=True)
class TicketValidating(TicketEvent):
    pass


@_kind("ticket-validated")
@dataclass(frozen=True)
class TicketValidated(TicketEvent):
    command: str
    exit_code: int
    ok: bool
    duration_s: float = 0.0


@_kind("work-done")
@dataclass(frozen=True)
class WorkDone(TicketEvent):
    """An attempt let go of its slot (`ok`: it left a result to merge)."""

    ok: bool
    slot_s: float = 0.0
    wait_s: float = 0.0  # of slot_s, time waiting for one of the `jobs` agent places


@_kind("ticket-collected")
@dataclass(frozen=True)
class TicketCollected(TicketEvent):
    """A result produced on another machine (`run-ticket`), brought in by `collect`."""

    agent: str
    attempts: int
    base: str
    commit: str | None
    duration_s: float = 0.0


# --- merging ---------------------------------------------------------------------------------


@_kind("ticket-merging")
@dataclass(frozen=True)
class TicketMerging(TicketEvent):
    # An intent: the merge's outcome is what must be on disk.
    durable: ClassVar[bool] = False
    commit: str
    head: str


@_kind("ticket-merged")
@dataclass(frozen=True)
class TicketMerged(TicketEvent):
    # The journal is synced before the branch moves (MergeQueue.publish).
    durable: ClassVar[bool] = False
    head: str
    previous: str | None = None
    commit: str | None = None
    resolved: tuple[tuple[str, str], ...] = ()  # (path, rule strategy) settled by rules
    merge_s: float = 0.0
    awaiting_gate: bool = False
    recovered: bool = False  # found on the branch after a crash, not journaled before it


@_kind("conflict")
@dataclass(frozen=True)
class Conflict(TicketEvent):
    step: ConflictStep
    paths: tuple[str, ...] = ()
    collided_with: tuple[str, ...] = field(default=(), metadata=_key("with"))
    text: Mapping[str, str] = field(default_factory=dict)


@_kind("scope-violation")
@dataclass(frozen=True)
class ScopeViolation(TicketEvent):
    paths: tuple[str, ...]
    action: str


@_kind("attempt-failed")
@dataclass(frozen=True)
class AttemptFailed(TicketEvent):
    """An attempt failed (the decision follows: retry, fallback or failed)."""

    reason: str
    retryable: bool = True
    base: str | None = None  # where the attempt started
    kept: str | None = None  # a commit of what it left in its worktree (retry --keep-worktree)


@_kind("ticket-throttled")
@dataclass(frozen=True)
class TicketThrottled(TicketEvent):
    """The provider asked to wait: the ticket runs again after `delay_s`; not a failure."""

    reason: str
    delay_s: float
    retry_after_s: float | None = None


@_kind("ticket-retry")
@dataclass(frozen=True)
class TicketRetry(TicketEvent):
    reason: str
    delay_s: float
    agent: str


@_kind("ticket-requeued")
@dataclass(frozen=True)
class TicketRequeued(TicketEvent):
    reason: str | None = None
    agent: str | None = None  # the agent the next attempt uses, when it changed
    keep_result: bool = False  # the result stays ready to merge (no agent run needed)
    reset_attempts: bool = False
    keep_worktree: bool = False  # the next attempt starts from what the failed one left


@_kind("ticket-finished")
@dataclass(frozen=True)
class TicketFinished(TicketEvent):
    """A ticket ended without merging (failed, conflict, blocked, cancelled)."""

    state: TicketState
    reason: str | None = None


@_kind("budget-reached")
@dataclass(frozen=True)
class BudgetReached(Event):
    """The run's spend reached its budget: nothing new starts (with `hard`, running agents
    are stopped); the run ends stopped, resumable with a larger budget."""

    spent_usd: float
    budget_usd: float
    hard: bool = False


# --- quota pools -------------------------------------------------------------------------------


@_kind("quota-paused")
@dataclass(frozen=True)
class QuotaPaused(Event):
    """A provider throttled an agent of this pool: nothing of the pool starts for a while."""

    pool: str
    delay_s: float
    reason: str = ""
    ticket: str | None = None  # the attempt that was throttled


@_kind("quota-probing")
@dataclass(frozen=True)
class QuotaProbing(Event):
    """The pause is over: one ticket of the pool goes first to see whether it passes."""

    pool: str


@_kind("quota-opened")
@dataclass(frozen=True)
class QuotaOpened(Event):
    """The provider answers again: the pool runs as many as it may."""

    pool: str


# --- integration gates -----------------------------------------------------------------------


@_kind("gate-started")
@dataclass(frozen=True)
class GateStarted(Event):
    head: str
    tickets: tuple[str, ...]


@_kind("gate-run")
@dataclass(frozen=True)
class GateRun(Event):
    head: str
    ok: bool


@_kind("gate-passed")
@dataclass(frozen=True)
class GatePassed(Event):
    head: str
    tickets: tuple[str, ...]


@_kind("gate-failed")
@dataclass(frozen=True)
class GateFailed(TicketEvent):
    head: str
    runs: int = 1
    output: str = ""
