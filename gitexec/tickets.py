"""Tickets: the value type, its states, and parsing one ticket file with every problem found."""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gitexec import fields
from gitexec.findings import Finding, Locator, Reporter, Severity

TICKETS_DIR = ".gitexec/tickets"
TICKET_SUFFIXES = (".yaml", ".md")

_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class TicketState(enum.Enum):
    """Where a ticket is in its life. Stored lowercase in ticket files and JSON."""

    PENDING = "pending"
    READY = "ready"
    RUNNING = "running"
    THROTTLED = "throttled"  # the provider said wait: it runs again, not a failed attempt
    VALIDATING = "validating"
    MERGING = "merging"
    COMPLETED = "completed"
    FAILED = "failed"
    CONFLICT = "conflict"
    BLOCKED = "blocked"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL

    @property
    def succeeded(self) -> bool:
        return self is TicketState.COMPLETED


_TERMINAL = frozenset(
    {
        TicketState.COMPLETED,
        TicketState.FAILED,
        TicketState.CONFLICT,
        TicketState.BLOCKED,
        TicketState.CANCELLED,
    }
)


class ConflictStep(enum.Enum):
    """A rung of the conflict ladder (`merge.on_conflict`), tried in the order listed."""

    RULES = "rules"  # merge rules (union / ours / theirs per glob) settle the paths
    RERUN = "rerun"  # the agent runs again on the merged head
    SEQUENTIAL = "sequential"  # run alone once everything else is idle
    FAIL = "fail"  # give up: the ticket ends in `conflict`


DEFAULT_LADDER = (
    ConflictStep.RULES,
    ConflictStep.RERUN,
    ConflictStep.SEQUENTIAL,
    ConflictStep.FAIL,
)


def ladder(value: Any) -> tuple[ConflictStep, ...]:
    """Read a conflict ladder from config or a ticket (at least one known step)."""
    steps = fields.each(value, lambda v: fields.choice(v, [s.value for s in ConflictStep]))
    if not steps:
        raise fields.Invalid("must list at least one step")
    return tuple(ConflictStep(s) for s in steps)


def id_problem(ticket_id: str, what: str = "id") -> str | None:
    """Why `ticket_id` is not a valid id (it becomes a ref component), or None; `what`
    names it in the message (a run id is held to the same rules)."""
    if not _ID_RE.fullmatch(ticket_id):
        return (
            f"invalid {what} {ticket_id!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if ".." in ticket_id or ticket_id.endswith((".lock", ".")):
        return f"invalid {what} {ticket_id!r}: must not contain '..' or end with '.' or '.lock'"
    return None


@dataclass(frozen=True)
class Ticket:
    """One unit of work, as written in `.gitexec/tickets/<id>.yaml|.md`."""

    id: str
    title: str
    file: str  # repository-relative path of the ticket file
    agent: str | None = None  # None: the configured default agent
    depends_on: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    priority: int = 0
    estimate_s: float | None = None
    run: str | None = None
    prompt: str | None = None
    validate: tuple[str, ...] = ()
    timeout_s: float | None = None
    retries: int | None = None
    budget_usd: float | None = None  # what its attempts together may cost
    resources: tuple[tuple[str, float], ...] = ()
    on_conflict: tuple[ConflictStep, ...] | None = None
    status: TicketState = TicketState.PENDING
    result: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def resource(self, name: str, default: float = 0.0) -> float:
        return dict(self.resources).get(name, default)


@dataclass(frozen=True)
class ParsedTicket:
    """The outcome of parsing one file: the ticket (None when unusable) and what was wrong."""

    ticket: Ticket | None
    findings: tuple[Finding, ...]


def _resources(value: Any) -> tuple[tuple[str, float], ...]:
    out = []
    for k, v in fields.mapping(value).items():
        if not isinstance(k, str):
            raise fields.Invalid(f"resource names must be strings, got {fields.type_name(k)}")
        try:
            out.append((k, fields.number(v, maximum=fields.MAX_JOBS)))
        except fields.Invalid as exc:
            raise fields.Invalid(f"resource {k!r}: {exc.message}", k) from None
    return tuple(sorted(out))


def _state(value: Any) -> TicketState:
    return TicketState(fields.choice(value, [s.value for s in TicketState]))


# key -> (dataclass field, reader). `id` and `title` are handled first (they are required).
_READERS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "agent": ("agent", fields.text),
    "depends_on": ("depends_on", fields.text_list),
    "paths": ("paths", fields.globs),
    "priority": (
        "priority",
        lambda v: fields.integer(v, minimum=-fields.MAX_PRIORITY, maximum=fields.MAX_PRIORITY),
    ),
    "estimate": ("estimate_s", fields.duration),
    "run": ("run", fields.text),
    "prompt": ("prompt", lambda v: fields.text(v, allow_empty=True)),
    "validate": ("validate", fields.text_list),
    "timeout": ("timeout_s", fields.duration),
    "retries": ("retries", lambda v: fields.integer(v, minimum=0, maximum=fields.MAX_RETRIES)),
    "budget_usd": ("budget_usd", lambda v: fields.number(v, maximum=1_000_000.0)),
    "resources": ("resources", _resources),
    "on_conflict": ("on_conflict", ladder),
    "status": ("status", _state),
    "result": ("result", fields.mapping),
}
KNOWN_KEYS = ("id", "title", *_READERS, "description", "labels", "notes")
# Informational keys users commonly add; accepted and ignored.
_FREE_KEYS = frozenset({"description", "labels", "notes"})
_MEANINGFUL_KEYS = ("id", "title", *_READERS)


def unknown_key(
    report: Reporter,
    where: tuple[str | int, ...],
    name: str,
    meaningful: Iterable[str],
    known: Iterable[str],
) -> None:
    """An unknown key: an error when it is a near miss of a key that means something (the
    setting would silently not apply), else a warning, with a suggestion when there is one."""
    shown = ".".join(str(k) for k in where)
    near = fields.near_miss(name, meaningful)
    if near is not None:
        report.error_at_key(where, f"unknown key {shown!r} (did you mean {near!r}?)")
    else:
        report.warn_at_key(where, f"unknown key {shown!r}{fields.did_you_mean(name, known)}")


def split_front_matter(text: str) -> tuple[str, str, int] | None:
    """Split a Markdown ticket into (yaml, body, line where the yaml starts minus one)."""
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].rstrip("\r\n") != "---":
        return None
    for n in range(1, len(lines)):
        if lines[n].rstrip("\r\n") in ("---", "..."):
            return "".join(lines[1:n]), "".join(lines[n + 1 :]), 1
    return None


def parse_ticket(path: str, text: str) -> ParsedTicket:
    """Parse one ticket file's text. `path` is repository-relative (it names the file)."""
    offset = 0
    body: str | None = None
    source = text
    if path.endswith(".md"):
        split = split_front_matter(text)
        if split is None:
            finding = Finding(
                path,
                1,
                1,
                Severity.ERROR,
                "a Markdown ticket must start with YAML front matter between '---' lines",
            )
            return ParsedTicket(None, (finding,))
        source, body, offset = split
    locator = Locator(source, offset)
    report = Reporter(path, locator)
    loaded, data = report.load_yaml(source)
    if not loaded:
        return ParsedTicket(None, tuple(report.findings))

    if data is None:
        report.at(
            locator.start(), "empty ticket: expected a mapping with at least 'id' and 'title'"
        )
        return ParsedTicket(None, tuple(report.findings))
    if not isinstance(data, dict):
        report.at(
            locator.start(),
            f"a ticket must be a YAML mapping, not {fields.type_name(data)}",
        )
        return ParsedTicket(None, tuple(report.findings))

    stem = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    usable = True
    ticket_id = _required_text(data, "id", report)
    if ticket_id is not None:
        problem = id_problem(ticket_id)
        if problem:
            report.error_at_value(("id",), problem)
            usable = False
        elif ticket_id != stem:
            report.error_at_value(
                ("id",), f"id {ticket_id!r} does not match the file name (expected {stem!r})"
            )
    title = _required_text(data, "title", report)
    if title is not None and fields.BIDI_CONTROLS.search(title):
        found = sorted({f"U+{ord(c):04X}" for c in fields.BIDI_CONTROLS.findall(title)})
        report.warn_at_value(
            ("title",),
            f"title: bidirectional control character(s) {', '.join(found)} removed (they make "
            "text display differently from what it is)",
        )
        title = fields.strip_bidi(title).strip() or None
        if title is None:
            report.error_at_value(("title",), "title: must not be empty")
    if ticket_id is None or title is None:
        usable = False

    values: dict[str, Any] = {}
    for key, raw in data.items():
        if not isinstance(key, str):
            report.error_at_key((key,), f"keys must be strings, got {fields.type_name(key)}")
            continue
        if key in ("id", "title") or key in _FREE_KEYS:
            continue
        spec = _READERS.get(key)
        if spec is None:
            unknown_key(report, (key,), key, _MEANINGFUL_KEYS, KNOWN_KEYS)
            continue
        attr, read = spec
        if raw is None and key not in ("result",):
            continue  # `key:` with no value means "not set"
        try:
            values[attr] = read(raw)
        except fields.Invalid as exc:
            where: tuple[str | int, ...] = (key,) if exc.at is None else (key, exc.at)
            report.error_at_value(where, f"{key}: {exc.message}")

    if body is not None and body.strip():
        if values.get("prompt", "").strip():
            report.error_at_key(
                ("prompt",), "prompt: given both in front matter and as the Markdown body"
            )
        values["prompt"] = body.strip("\n") + "\n"

    if not usable or ticket_id is None or title is None:
        return ParsedTicket(None, tuple(report.findings))
    deps = values.get("depends_on", ())
    seen: set[str] = set()
    for i, dep in enumerate(deps):
        if dep in seen:
            report.warn_at_key(("depends_on", i), f"depends_on: {dep!r} is listed twice")
        seen.add(dep)
    if len(seen) != len(deps):
        values["depends_on"] = tuple(dict.fromkeys(deps))
    ticket = Ticket(id=ticket_id, title=title, file=path, **values)
    return ParsedTicket(ticket, tuple(report.findings))


def _required_text(data: dict[str, Any], key: str, report: Reporter) -> str | None:
    if key not in data or data[key] is None:
        report.at(report.locator.start(), f"missing required key {key!r}")
        return None
    value = data[key]
    if not isinstance(value, str):
        hint = f' (quote it: {key}: "{value}")' if isinstance(value, (int, float)) else ""
        report.error_at_value(
            (key,), f"{key}: expected a string, got {fields.type_name(value)}{hint}"
        )
        return None
    if not value.strip():
        report.error_at_value((key,), f"{key}: must not be empty")
        return None
    return value.strip() if key == "title" else value
