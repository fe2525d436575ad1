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


# Bidirectional controls make text display differently from what it is ("Trojan source"):
# U+061C, U+200E-U+200F, U+202A-U+202E and U+2066-U+2069.
BIDI_CONTROLS = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def strip_bidi(text: str) -> str:
    """`text` without bidirectional control characters."""
    return BIDI_CONTROLS.sub("", text)


def type_name(value: object) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        tuple: "a list",
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


# Sane bounds: far beyond any real project, small enough that nothing downstream (sums of
# estimates, backoff that doubles per retry, a pool of worktrees) overflows or hangs.
MAX_DURATION_S = 30 * 86400.0  # 30d: estimates, timeouts, backoff
MAX_JOBS = 256  # agent slots; also bounds max_parallel and resource weights
MAX_RETRIES = 10  # the backoff doubles per retry
MAX_PRIORITY = 1_000_000


def _shown(value: float) -> str:
    """A number for a message: huge integers abbreviated, floats in short form."""
    if isinstance(value, int):
        digits = str(abs(value)) if value.bit_length() < 10_000 else ""
        if digits and len(digits) <= 24:
            return str(value)
        return f"an integer of {len(digits) or 'over 3000'} digits"
    return f"{value:g}"


def integer(value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"expected an integer, got {type_name(value)}")
    if minimum is not None and value < minimum:
        raise Invalid(f"must be at least {minimum}, got {_shown(value)}")
    if maximum is not None and value > maximum:
        raise Invalid(f"must be at most {maximum}, got {_shown(value)}")
    return value


def number(value: Any, *, minimum: float = 0.0, maximum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid(f"expected a number, got {type_name(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise Invalid(f"expected a finite number, got {value}")
    if value < minimum:
        raise Invalid(f"must be at least {minimum:g}, got {_shown(value)}")
    if maximum is not None and value > maximum:
        raise Invalid(f"must be at most {maximum:g}, got {_shown(value)}")
    return float(value)


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)", re.IGNORECASE)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: str) -> float | None:
    """Seconds in `30m`, `1h30m`, `45s`, `1.5h` or a bare number of seconds; None if invalid.

    Huge values come back as they are (or infinite): callers bound them."""
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
    if pos == 0 or s[pos:].strip() or math.isnan(total):
        return None
    return total


def duration(value: Any, *, maximum: float = MAX_DURATION_S) -> float:
    """Seconds from a duration (`30m`, `1h30m`) or a number of seconds, at most `maximum`."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise Invalid(f"expected a duration such as 30s, 20m or 1h30m, got {type_name(value)}")
    if isinstance(value, str):
        seconds = parse_duration(value)
        if seconds is None:
            raise Invalid(
                f"invalid duration {_clip(value)!r}: use s, m, h or d, e.g. 30s, 20m, 1h30m"
            )
        shown = repr(_clip(value))
    else:
        if value < 0 or (isinstance(value, float) and not math.isfinite(value)):
            raise Invalid(
                f"a duration must be a non-negative number of seconds, got {_shown(value)}"
            )
        seconds, shown = value, _shown(value)
    if seconds > maximum:
        raise Invalid(f"must be at most {format_duration(maximum)}, got {shown}")
    return float(seconds)


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
MAX_SIZE = 1024**4  # 1 TiB


def size(value: Any, *, minimum: int = 1) -> int:
    """A byte count: an integer, or `512K`, `50M`, `4G` (binary units)."""
    if isinstance(value, bool):
        raise Invalid(f"expected a size such as 50M, got {type_name(value)}")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str) and (m := _SIZE.fullmatch(value.strip())):
        n = int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])
    else:
        raise Invalid(f"expected a size such as 50M or 4G, got {_clip(repr(value))}")
    if not minimum <= n <= MAX_SIZE:
        raise Invalid(f"size {value!r} is out of range ({minimum} bytes to 1T)")
    return n


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_duration(seconds: float) -> str:
    """Short human form: 45s, 12m, 1h05m, 2d03h (and `>1000d` for anything longer)."""
    if not seconds < 1000 * 86400:  # also NaN and infinity
        return ">1000d" if seconds > 0 else "?"
    s = round(seconds)
    if s < 60:
        return f"{seconds:.1f}s" if seconds < 10 and seconds != s else f"{s}s"
    if s < 3600:
        m, r = divmod(s, 60)
        return f"{m}m{r:02d}s" if r else f"{m}m"
    if s < 86400:
        h, r = divmod(s, 3600)
        return f"{h}h{r // 60:02d}m" if r // 60 else f"{h}h"
    d, r = divmod(s, 86400)
    return f"{d}d{r // 3600:02d}h" if r // 3600 else f"{d}d"


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
    close = near_miss(word, options) or next(
        iter(difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)), None
    )
    return f" (did you mean {close!r}?)" if close else ""


def near_miss(word: str, options: Iterable[str]) -> str | None:
    """The option `word` is almost surely a typo of: the same but for case, one edit or
    swapped neighbours away, or very close by difflib's measure. None when unsure."""
    lower = word.lower()
    best: tuple[float, str] | None = None
    for option in options:
        other = option.lower()
        if lower == other or (min(len(lower), len(other)) >= 3 and _one_edit(lower, other)):
            return option
        ratio = difflib.SequenceMatcher(None, lower, other).ratio()
        if ratio >= 0.8 and (best is None or ratio > best[0]):
            best = (ratio, option)
    return best[1] if best else None


def _one_edit(a: str, b: str) -> bool:
    """One substitution, insertion, deletion or swap of neighbours turns `a` into `b`."""
    if abs(len(a) - len(b)) > 1 or a == b:
        return False
    i = 0
    while i < min(len(a), len(b)) and a[i] == b[i]:
        i += 1
    if len(a) == len(b):
        swapped = i + 1 < len(a) and a[i] == b[i + 1] and a[i + 1] == b[i]
        return a[i + 1 :] == b[i + 1 :] or (swapped and a[i + 2 :] == b[i + 2 :])
    longer, shorter = (a, b) if len(a) > len(b) else (b, a)
    return longer[i + 1 :] == shorter[i:]


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"expected true or false, got {type_name(value)}")
    return value
