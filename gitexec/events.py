"""The journal's vocabulary: one frozen dataclass per event kind, in one registry.

Writers (the engine's driver, scheduler, workers and merge queue) build these values and
readers (`RunState`, the dashboard, reports, resume) receive the same types, so the two
sides cannot drift apart. Reading checks every line against its event's schema: a line
that does not fit (wrong types, a number out of range, an unknown kind) is skipped with a
problem naming the line, so a damaged journal never crashes `status` or `report`.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from gitexec.dialects import Status, Usage
from gitexec.tickets import ConflictStep, TicketState

_MAX_INT = 2**63


class RunStatus(enum.Enum):
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"
    COMPLETED = "completed"
    FAILED = "failed"
    CRASHED = "crashed"


@dataclass(frozen=True)
class Event:
    """Every event has a kind (its registry name); `seq` and `t` are set when journaled."""

    kind: ClassVar[str] = ""
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


@_kind("run-resumed")
@dataclass(frozen=True)
class RunResumed(Event):
    head: str
    jobs: int
    pid: int | None = None
    reset: tuple[str, ...] = ()  # tickets whose interrupted attempt starts over
    reuse: tuple[str, ...] = ()  # finished results merged without running their agent again
    killed: tuple[int, ...] = ()  # process groups of the dead engine's agents


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
    commit: str
    head: str


@_kind("ticket-merged")
@dataclass(frozen=True)
class TicketMerged(TicketEvent):
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


@_kind("ticket-finished")
@dataclass(frozen=True)
class TicketFinished(TicketEvent):
    """A ticket ended without merging (failed, conflict, blocked, cancelled)."""

    state: TicketState
    reason: str | None = None


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


# --- records: what a journal line holds ------------------------------------------------------


class InvalidEvent(Exception):
    """A record that does not fit the schema of its event kind."""


def to_record(event: Event) -> dict[str, Any]:
    """The JSON object a journal line holds: seq, t, event, then the fields."""
    record: dict[str, Any] = {"seq": event.seq, "t": event.t, "event": event.kind}
    for name, key, _, _ in _schema(type(event)):
        record[key] = _plain(getattr(event, name))
    return record


def from_record(record: Any) -> Event:
    """The typed event of a journal record; InvalidEvent says what does not fit."""
    if not isinstance(record, dict):
        raise InvalidEvent("not a JSON object")
    kind = record.get("event")
    cls = EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise InvalidEvent(f"unknown event {kind!r}")
    values = _read_fields(cls, record, f"{kind}: ")
    try:
        values["seq"] = _converter(int)(record.get("seq", 0))
        values["t"] = _converter(float)(record.get("t", 0.0))
    except InvalidEvent as exc:
        raise InvalidEvent(f"{kind}: {exc}") from None
    return cls(**values)


@dataclass(frozen=True)
class Loaded:
    """The events of a journal, and what was skipped (with line numbers)."""

    events: list[Event]
    problems: list[str]


def parse_lines(lines: Iterable[tuple[int, Any]]) -> Loaded:
    """Typed events from (line number, decoded JSON) pairs; misfits become problems."""
    events: list[Event] = []
    problems: list[str] = []
    for number, record in lines:
        try:
            events.append(from_record(record))
        except InvalidEvent as exc:
            problems.append(f"line {number}: {exc}; skipped")
    return Loaded(events, problems)


# --- schema machinery ------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


_Field = tuple[str, str, Callable[[Any], Any], bool]  # name, key, converter, required


_SCHEMAS: dict[type, tuple[_Field, ...]] = {}


def _schema(cls: type) -> tuple[_Field, ...]:
    known = _SCHEMAS.get(cls)
    if known is not None:
        return known
    hints = typing.get_type_hints(cls)
    out: list[_Field] = []
    for f in dataclasses.fields(cls):
        if f.name in ("seq", "t"):
            continue
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        out.append((f.name, f.metadata.get("key", f.name), _converter(hints[f.name]), required))
    _SCHEMAS[cls] = tuple(out)
    return _SCHEMAS[cls]


def _read_fields(cls: type, record: Mapping[str, Any], where: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, key, convert, required in _schema(cls):
        if key not in record:
            if required:
                raise InvalidEvent(f"{where}missing {key!r}")
            continue
        try:
            values[name] = convert(record[key])
        except InvalidEvent as exc:
            raise InvalidEvent(f"{where}{key}: {exc}") from None
    return values


def _fail(expected: str, value: Any) -> typing.NoReturn:
    shown = repr(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    raise InvalidEvent(f"expected {expected}, got {shown}")


@functools.cache
def _converter(tp: Any) -> Callable[[Any], Any]:
    """A function checking and converting a decoded JSON value to the annotated type."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [_converter(a) for a in args if a is not type(None)]
        optional = type(None) in args

        def union(v: Any) -> Any:
            if v is None and optional:
                return None
            for convert in inner:
                try:
                    return convert(v)
                except InvalidEvent:
                    continue
            _fail(" or ".join(getattr(a, "__name__", str(a)) for a in args), v)

        return union
    if tp is bool:
        return lambda v: v if isinstance(v, bool) else _fail("true or false", v)
    if tp is int:
        return _int
    if tp is float:
        return _float
    if tp is str:
        return lambda v: v if isinstance(v, str) else _fail("a string", v)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        values = {m.value: m for m in tp}
        return lambda v: values[v] if isinstance(v, str) and v in values else _fail(tp.__name__, v)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            item = _converter(args[0])
            return lambda v: tuple(item(x) for x in _list(v))
        items = [_converter(a) for a in args]

        def fixed(v: Any) -> tuple[Any, ...]:
            seq = _list(v)
            if len(seq) != len(items):
                _fail(f"a list of {len(items)}", v)
            return tuple(convert(x) for convert, x in zip(items, seq, strict=True))

        return fixed
    if origin in (dict, Mapping, typing.Mapping) or tp is dict:
        value_of = _converter(args[1]) if args else (lambda v: v)

        def mapping(v: Any) -> dict[str, Any]:
            if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
                _fail("an object", v)
            return {k: value_of(x) for k, x in v.items()}

        return mapping
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        cls = tp

        def nested(v: Any) -> Any:
            if not isinstance(v, dict):
                _fail("an object", v)
            return cls(**_read_fields(cls, v, ""))

        return nested
    raise TypeError(f"no journal converter for {tp!r}")  # a programming error, at import


def _list(v: Any) -> list[Any]:
    if not isinstance(v, list):
        _fail("a list", v)
    return v


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not -_MAX_INT < v < _MAX_INT:
        _fail("an integer", v)
    return v


def _float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        _fail("a number", v)
    try:
        out = float(v)
    except OverflowError:
        _fail("a number in range", v)
    if not math.isfinite(out):
        _fail("a finite number", v)
    return out


# Checked at import: every registered event has a schema the reader understands.
for _cls in EVENT_TYPES.values():
    _schema(_cls)
