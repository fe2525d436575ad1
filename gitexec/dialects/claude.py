"""The `claude-json` dialect: Claude Code with `--output-format json` (or `stream-json
--verbose`), which exits 0 when a permission was denied and nothing was written."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from gitexec.dialects.common import (
    _dict,
    _Facts,
    _int,
    _json_object,
    _number,
    _retry_after,
    _str,
    _truncate,
)
from gitexec.dialects.values import SUMMARY_CHARS, Report, Status, Usage

_CLAUDE_EDIT_TOOLS = frozenset({"Write", "Edit", "MultiEdit", "NotebookEdit"})
_CLAUDE_THROTTLE_TYPES = frozenset({"rate_limit_error", "overloaded_error"})


class _Claude:
    def __init__(self) -> None:
        self.result: dict[str, Any] | None = None
        self.session_id: str | None = None
        self.model_name: str | None = None
        self.per_message: dict[str, Usage] = {}
        self.last_text: str | None = None
        self.edit_calls: set[str] = set()
        self.edits_done = 0
        self.retry_after_s: float | None = None
        self.other: list[str] = []

    def line(self, text: str, *, stderr: bool = False) -> None:
        event = _json_object(text)
        if event is None:
            if text.strip():
                self.other.append(text)
                del self.other[:-20]
            return
        kind = event.get("type")
        self.session_id = _str(event.get("session_id")) or self.session_id
        if kind == "result":
            self.result = event
        elif kind == "system" and event.get("subtype") == "init":
            self.model_name = _str(event.get("model")) or self.model_name
        elif kind == "system" and event.get("subtype") == "api_retry":
            delay = _number(event.get("retry_delay_ms"))
            if delay is not None:
                self.retry_after_s = delay / 1000
        elif kind == "assistant":
            self._assistant(_dict(event.get("message")))
        elif kind == "user":
            self._tool_results(_dict(event.get("message")))

    def _assistant(self, message: dict[str, Any]) -> None:
        model = _str(message.get("model"))
        if model and not model.startswith("<"):  # "<synthetic>" on errors
            self.model_name = model
        usage = message.get("usage")
        if isinstance(usage, dict) and isinstance(message.get("id"), str):
            self.per_message[message["id"]] = _claude_usage(usage)
        for block in message.get("content") or ():
            block = _dict(block)
            if block.get("type") == "text" and _str(block.get("text")):
                self.last_text = block["text"]
            elif block.get("type") == "tool_use" and block.get("name") in _CLAUDE_EDIT_TOOLS:
                self.edit_calls.add(str(block.get("id")))

    def _tool_results(self, message: dict[str, Any]) -> None:
        content = message.get("content")
        for block in content if isinstance(content, list) else ():
            block = _dict(block)
            if (
                block.get("type") == "tool_result"
                and str(block.get("tool_use_id")) in self.edit_calls
                and not block.get("is_error")
            ):
                self.edits_done += 1

    def usage(self) -> Usage | None:
        if self.result is not None and isinstance(self.result.get("usage"), dict):
            return _claude_usage(self.result["usage"])
        if not self.per_message:
            return None
        total = Usage()
        for usage in self.per_message.values():
            total = total + usage
        return total

    def cost(self) -> float | None:
        return None if self.result is None else _number(self.result.get("total_cost_usd"))

    def model(self) -> str | None:
        by_model = _dict(self.result.get("modelUsage")) if self.result is not None else {}
        if by_model:
            return max(by_model, key=lambda name: _claude_model_tokens(by_model[name]))
        return self.model_name

    def finish(self, exit_code: int) -> Report:
        result = self.result
        facts = _Facts(self.usage(), self.cost(), self.model(), self.session_id)
        if result is None:
            if exit_code == 0:
                return facts.report(
                    Status.FAILURE, "no result in the output (expected --output-format json)"
                )
            return facts.exit_failure(exit_code, self.other)
        text = _str(result.get("result"))
        facts = replace(facts, summary=_truncate(text or self.last_text, SUMMARY_CHARS))
        denials = tuple(_claude_denial(d) for d in result.get("permission_denials") or ())
        if result.get("is_error") or str(result.get("subtype", "success")) != "success":
            reason = text or _str(result.get("subtype")) or "error reported"
            throttled = _int(result.get("api_error_status")) in (429, 503, 529) or (
                result.get("api_error_type") in _CLAUDE_THROTTLE_TYPES
            )
            if throttled:
                retry = self.retry_after_s
                return facts.report(
                    Status.THROTTLED,
                    reason,
                    retry_after_s=_retry_after(reason) if retry is None else retry,
                    denials=denials,
                )
            return facts.report(Status.FAILURE, reason, denials=denials)
        if denials and self.edits_done == 0:
            return facts.report(
                Status.FAILURE, "permission denied: " + "; ".join(denials), denials=denials
            )
        return facts.report(Status.SUCCESS, denials=denials)


def _claude_usage(usage: Mapping[str, Any]) -> Usage:
    cached = _int(usage.get("cache_read_input_tokens"))
    written = _int(usage.get("cache_creation_input_tokens"))
    return Usage(
        input_tokens=_int(usage.get("input_tokens")) + cached + written,
        output_tokens=_int(usage.get("output_tokens")),
        cached_input_tokens=cached,
    )


def _claude_model_tokens(entry: Any) -> int:
    entry = _dict(entry)
    return _int(entry.get("inputTokens")) + _int(entry.get("outputTokens"))


def _claude_denial(denial: Any) -> str:
    if not isinstance(denial, dict):
        return str(denial)
    tool = str(denial.get("tool_name") or "tool")
    args = _dict(denial.get("tool_input"))
    target = args.get("file_path") or args.get("command") or args.get("path") or args.get("url")
    return f"{tool} {target}" if target else tool
