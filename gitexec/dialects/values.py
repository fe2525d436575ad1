"""What a dialect reader makes of an attempt: a `Report` with its `Status` and `Usage`, and
the `Price` that turns usage into a cost."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

SUMMARY_CHARS = 600
REASON_CHARS = 600


class Dialect(enum.Enum):
    """How an agent's output reads (`agents.<name>.dialect`)."""

    CLAUDE_JSON = "claude-json"
    CODEX_JSONL = "codex-jsonl"
    GEMINI_JSON = "gemini-json"
    AIDER_TEXT = "aider-text"
    PLAIN = "plain"


class Status(enum.Enum):
    """How an attempt ended. A throttled attempt is not a failed one: wait and run again."""

    SUCCESS = "success"
    FAILURE = "failure"
    THROTTLED = "throttled"


@dataclass(frozen=True)
class Usage:
    """Tokens of one attempt. `input_tokens` counts every input token, cached ones too;
    `cached_input_tokens` is the part read from the provider's prompt cache."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cached_input_tokens + other.cached_input_tokens,
        )

    def to_json(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_input_tokens": self.cached_input_tokens,
        }


@dataclass(frozen=True)
class Price:
    """USD per million tokens (config `pricing:`); cached input at the input price if unset."""

    input: float
    output: float
    cached_input: float | None = None

    def cost(self, usage: Usage) -> float:
        cached = min(usage.cached_input_tokens, usage.input_tokens)
        cached_price = self.input if self.cached_input is None else self.cached_input
        return (
            (usage.input_tokens - cached) * self.input
            + cached * cached_price
            + usage.output_tokens * self.output
        ) / 1_000_000


@dataclass(frozen=True)
class Report:
    """What an attempt of an agent came to, read from its output.

    `reason` carries the agent's own words for a failure or a throttle; `denials` what a
    permission check or sandbox refused (also when the attempt still succeeded).
    `usage` and `cost_usd` are None when unknown, never a made-up 0.
    """

    status: Status
    reason: str | None = None
    retry_after_s: float | None = None
    usage: Usage | None = None
    cost_usd: float | None = None
    model: str | None = None
    session_id: str | None = None
    summary: str | None = None
    denials: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status is Status.SUCCESS

    def to_json(self) -> dict[str, Any]:
        """The journal / status / ticket `result` form."""
        return {
            "status": self.status.value,
            "reason": self.reason,
            "retry_after_s": self.retry_after_s,
            "usage": None if self.usage is None else self.usage.to_json(),
            "cost_usd": self.cost_usd,
            "model": self.model,
            "session_id": self.session_id,
            "summary": self.summary,
            "denials": list(self.denials),
        }
