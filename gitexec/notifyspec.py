"""`notify:` in the config: commands (argv, never a shell) run when a run finishes, a
ticket fails, a conflict ends a ticket, a provider throttles or a budget is reached."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gitexec import fields
from gitexec.findings import Reporter

NOTIFY_EVENTS = ("run-finished", "ticket-failed", "conflict", "throttled", "budget-reached")
DEFAULT_TIMEOUT_S = 10.0
MAX_TIMEOUT_S = 300.0
_KEYS = ("on", "command", "timeout")


@dataclass(frozen=True)
class NotifySpec:
    """One notify command and the events it runs on."""

    command: tuple[str, ...]  # argv; each element a jinja2 template
    on: tuple[str, ...] = NOTIFY_EVENTS
    timeout_s: float = DEFAULT_TIMEOUT_S


def _events(value: Any) -> tuple[str, ...]:
    items = fields.text_list(value)
    if not items:
        raise fields.Invalid("must name at least one event")
    for i, item in enumerate(items):
        if item not in NOTIFY_EVENTS:
            hint = fields.did_you_mean(item, NOTIFY_EVENTS)
            raise fields.Invalid(
                f"unknown event {item!r}{hint} (events: {', '.join(NOTIFY_EVENTS)})",
                None if isinstance(value, str) else i,
            )
    return tuple(dict.fromkeys(items))


def parse_notify(
    raw: Any, report: Reporter, command: Callable[[Any], tuple[str, ...]]
) -> tuple[NotifySpec, ...]:
    """`notify: [{on: [events], command: [argv], timeout: 10s}, ...]`, every problem
    reported with its position; `command` reads an argv (the config's agent reader)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        report.error_at_value(
            ("notify",),
            "notify: expected a list of {on: [events], command: [argv]}, "
            f"got {fields.type_name(raw)}",
        )
        return ()
    out: list[NotifySpec] = []
    for i, item in enumerate(raw):
        where: tuple[str | int, ...] = ("notify", i)
        name = f"notify: item {i + 1}"
        if not isinstance(item, dict):
            report.error_at_value(
                where, f"{name}: expected a mapping with a 'command', got {fields.type_name(item)}"
            )
            continue
        values: dict[str, Any] = {}
        readers: dict[str, tuple[str, Callable[[Any], Any]]] = {
            "on": ("on", _events),
            "command": ("command", command),
            "timeout": ("timeout_s", lambda v: fields.duration(v, maximum=MAX_TIMEOUT_S)),
        }
        for key, value in item.items():
            if key not in readers:
                near = fields.near_miss(str(key), _KEYS)
                message = f"{name}: unknown key {key!r}"
                if near is not None:
                    report.error_at_key((*where, key), f"{message} (did you mean {near!r}?)")
                else:
                    report.warn_at_key((*where, key), f"{message} (keys: {', '.join(_KEYS)})")
                continue
            attr, read = readers[key]
            try:
                values[attr] = read(value)
            except fields.Invalid as exc:
                at = (*where, key) if exc.at is None else (*where, key, exc.at)
                report.error_at_value(at, f"{name}: {key}: {exc.message}")
        if "command" not in item:
            report.error_at_value(where, f"{name}: missing 'command' (an argv list)")
        elif "command" in values:
            out.append(NotifySpec(**values))
    return tuple(out)
