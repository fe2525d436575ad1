"""The `codex-jsonl` dialect: `codex exec --json`, which exits 0 when its sandbox rejected the
edit (said on stderr only)."""

from __future__ import annotations

import re

from gitexec.dialects.common import (
    _dict,
    _Facts,
    _int,
    _is_throttle,
    _json_object,
    _retry_after,
    _str,
    _truncate,
)
from gitexec.dialects.values import SUMMARY_CHARS, Report, Status, Usage

# Codex logs tool errors (a patch its policy rejected) to stderr only, not to --json.
_CODEX_TOOL_ERROR = re.compile(r"\bERROR\b.*?\berror=(.+)$")
_CODEX_BLOCKED = re.compile(
    r"rejected|sandbox|outside of the project|not permitted|read-only file system|denied",
    re.IGNORECASE,
)


class _Codex:
    def __init__(self) -> None:
        self.thread_id: str | None = None
        self.total = Usage()
        self.turns = 0
        self.failed: str | None = None
        self.errors: list[str] = []
        self.tool_errors: list[str] = []
        self.edits = 0
        self.message: str | None = None
        self.other: list[str] = []

    def line(self, text: str, *, stderr: bool = False) -> None:
        event = _json_object(text)
        if event is None:
            match = _CODEX_TOOL_ERROR.search(text)
            if match:
                self.tool_errors.append(match.group(1).strip())
            elif text.strip():
                self.other.append(text)
                del self.other[:-20]
            return
        kind = event.get("type")
        if kind == "thread.started":
            self.thread_id = _str(event.get("thread_id")) or self.thread_id
        elif kind == "turn.completed":
            self.turns += 1
            usage = _dict(event.get("usage"))
            self.total = self.total + Usage(
                _int(usage.get("input_tokens")),
                _int(usage.get("output_tokens")),
                _int(usage.get("cached_input_tokens")),
            )
        elif kind == "turn.failed":
            self.failed = str(_dict(event.get("error")).get("message") or "turn failed")
        elif kind == "error":
            self.errors.append(str(event.get("message") or "error"))
        elif kind == "item.completed":
            item = _dict(event.get("item"))
            if item.get("type") == "agent_message" and _str(item.get("text")):
                self.message = item["text"]
            elif item.get("type") == "file_change" and item.get("status") == "completed":
                self.edits += 1

    def usage(self) -> Usage | None:
        return self.total if self.turns else None

    def cost(self) -> float | None:
        return None

    def model(self) -> str | None:
        return None

    def finish(self, exit_code: int) -> Report:
        facts = _Facts(
            self.usage(), session_id=self.thread_id, summary=_truncate(self.message, SUMMARY_CHARS)
        )
        if self.failed is not None:
            if _is_throttle(self.failed):
                retry = _retry_after(" ".join([self.failed, *self.errors]))
                return facts.report(Status.THROTTLED, self.failed, retry_after_s=retry)
            return facts.report(Status.FAILURE, f"turn failed: {self.failed}")
        blocked = tuple(e for e in self.tool_errors if _CODEX_BLOCKED.search(e))
        if blocked and self.edits == 0:
            return facts.report(
                Status.FAILURE, "sandbox blocked: " + "; ".join(blocked), denials=blocked
            )
        if exit_code != 0:
            return facts.exit_failure(exit_code, [*self.errors, *self.other])
        if not self.turns:
            return facts.report(Status.FAILURE, "; ".join(self.errors) or "no turn completed")
        return facts.report(Status.SUCCESS, denials=blocked)
