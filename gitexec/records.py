"""Events as journal lines, and back: every line is checked against its event's schema.

A line that does not fit (wrong types, a number out of range, an unknown kind) is skipped
with a problem naming the line, so a damaged journal never crashes `status` or `report`.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gitexec.events import EVENT_TYPES, Event

_MAX_INT = 2**63


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
