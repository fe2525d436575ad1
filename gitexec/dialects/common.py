"""Helpers the dialect readers share: tolerant reading of JSON fields, throttle and retry-delay
detection, and `_Facts`, which turns what a reader learned into a `Report`."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gitexec.dialects.values import REASON_CHARS, Report, Status, Usage


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace").rstrip("\r")


def _truncate(text: str | None, limit: int) -> str | None:
    if text is None:
        return None
    text = text.strip()
    if not text:
        return None
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _json_object(line: str) -> dict[str, Any] | None:
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return 0
    return int(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


_RETRY_IN = re.compile(
    r"(?:try again in|retry after|retryDelay\"?:\s*\"?)\s*"
    r"(\d+(?:\.\d+)?)\s*(ms|milliseconds?|s|sec|seconds?|m|minutes?)?\b",
    re.IGNORECASE,
)


def _retry_after(text: str) -> float | None:
    """A retry delay the agent quoted from the provider ("try again in 7s", retryDelay)."""
    found = None
    for match in _RETRY_IN.finditer(text):
        value, unit = float(match.group(1)), (match.group(2) or "s").lower()
        if unit.startswith("ms") or unit.startswith("milli"):
            value /= 1000
        elif unit.startswith("m"):
            value *= 60
        found = value
    return found


_THROTTLE = re.compile(
    r"\b(429|529|503)\b|rate.?limit|too many requests|overloaded|high demand|"
    r"resource.?exhausted|\bunavailable\b|quota|at capacity|usage limit",
    re.IGNORECASE,
)


def _is_throttle(text: str) -> bool:
    return bool(_THROTTLE.search(text))


def _tail(lines: Sequence[str], n: int = 5) -> str | None:
    kept = [line for line in lines if line.strip()]
    return _truncate("\n".join(kept[-n:]), REASON_CHARS) if kept else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class _State(Protocol):
    def line(self, text: str, *, stderr: bool = False) -> None: ...
    def usage(self) -> Usage | None: ...
    def cost(self) -> float | None: ...
    def model(self) -> str | None: ...
    def finish(self, exit_code: int) -> Report: ...


@dataclass(frozen=True)
class _Facts:
    """What a reader learned besides the outcome; `report` adds the outcome."""

    usage: Usage | None = None
    cost_usd: float | None = None
    model: str | None = None
    session_id: str | None = None
    summary: str | None = None

    def report(
        self,
        status: Status,
        reason: str | None = None,
        *,
        retry_after_s: float | None = None,
        denials: tuple[str, ...] = (),
    ) -> Report:
        return Report(
            status,
            reason=_truncate(reason, REASON_CHARS),
            retry_after_s=retry_after_s,
            usage=self.usage,
            cost_usd=self.cost_usd,
            model=self.model,
            session_id=self.session_id,
            summary=self.summary,
            denials=denials,
        )

    def exit_failure(self, exit_code: int, lines: Sequence[str]) -> Report:
        tail = _tail(lines)
        return self.report(Status.FAILURE, f"exit code {exit_code}" + (f": {tail}" if tail else ""))
