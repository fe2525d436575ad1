"""Typed readers for YAML values: each returns a clean value or raises Invalid with a message.

Ticket, config and plan loading share these, so a wrong type reads the same everywhere.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from gitexec.globs import validate_glob

T = TypeVar("T")


class Invalid(Exception):
    """A value has the wrong shape; `at` optionally points into it (a list index or key)."""

    def __init__(self, message: str, at: str | int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.at = at


def type_name(value: object) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)


def text(value: Any, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise Invalid(f"expected a string, got {type_name(value)}")
    if not allow_empty and not value.strip():
        raise Invalid("must not be empty")
    return value


def text_list(value: Any) -> tuple[str, ...]:
    """A list of non-empty strings; a single string is accepted as a one-element list."""
    if isinstance(value, str):
        value = [value]
    if value is None:
        return ()
    if not isinstance(value, list):
        raise Invalid(f"expected a list of strings, got {type_name(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise Invalid(f"item {i + 1} must be a non-empty string, got {type_name(item)}", i)
    return tuple(value)


def globs(value: Any) -> tuple[str, ...]:
    items = text_list(value)
    for i, item in enumerate(items):
        problem = validate_glob(item)
        if problem:
            raise Invalid(problem, i if not isinstance(value, str) else None)
    return items


def integer(value: Any, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"expected an integer, got {type_name(value)}")
    if minimum is not None and value < minimum:
        raise Invalid(f"must be at least {minimum}, got {value}")
    return value


def number(value: Any, *, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise Invalid(f"expected a number, got {type_name(value)}")
    if value < minimum:
        raise Invalid(f"must be at least {minimum:g}, got {value:g}")
    return float(value)


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)", re.IGNORECASE)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: str) -> float | None:
    """Seconds in `30m`, `1h30m`, `45s`, `1.5h` or a bare number of seconds; None if invalid."""
    s = value.strip()
    if not s:
        return None
    try:
        seconds = float(s)
    except ValueError:
        pass
    else:
        return seconds if seconds >= 0 and math.isfinite(seconds) else None
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(s):
        if s[pos : m.start()].strip():
            return None
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2).lower()]
        pos = m.end()
    if pos == 0 or s[pos:].strip():
        return None
    return total


def duration(value: Any) -> float:
    if isinstance(value, bool):
        raise Invalid(f"expected a duration such as 30s, 20m or 1h30m, got {type_name(value)}")
    if isinstance(value, (int, float)):
        if value < 0 or not math.isfinite(value):
            raise Invalid(f"a duration must be a non-negative number of seconds, got {value}")
        return float(value)
    if isinstance(value, str):
        seconds = parse_duration(value)
        if seconds is not None:
            return seconds
        raise Invalid(f"invalid duration {value!r}: use s, m, h or d, e.g. 30s, 20m, 1h30m")
    raise Invalid(f"expected a duration such as 30s, 20m or 1h30m, got {type_name(value)}")


def format_duration(seconds: float) -> str:
    """Short human form: 45s, 12m, 1h05m, 2d03h."""
    s = round(seconds)
    if s < 60:
        return f"{seconds:.1f}s" if seconds < 10 and seconds != s else f"{s}s"
    if s < 3600:
        m, r = divmod(s, 60)
        return f"{m}m{r:02d}s" if r else f"{m}m"
    if s < 86400:
        h, r = divmod(s, 3600)
        return f"{h}h{r // 60:02d}m"
    d, r = divmod(s, 86400)
    return f"{d}d{r // 3600:02d}h"


def choice(value: Any, options: Iterable[str]) -> str:
    opts = list(options)
    if not isinstance(value, str) or value not in opts:
        shown = repr(value) if isinstance(value, str) else type_name(value)
        raise Invalid(f"{shown} is not one of {', '.join(opts)}")
    return value


def mapping(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Invalid(f"expected a mapping, got {type_name(value)}")
    return value


def each(value: Any, read: Callable[[Any], T]) -> tuple[T, ...]:
    """Apply `read` to each item of a list, pointing errors at the failing item."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise Invalid(f"expected a list, got {type_name(value)}")
    out: list[T] = []
    for i, item in enumerate(value):
        try:
            out.append(read(item))
        except Invalid as exc:
            raise Invalid(f"item {i + 1}: {exc.message}", i) from None
    return tuple(out)


def did_you_mean(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
