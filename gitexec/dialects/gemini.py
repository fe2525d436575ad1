"""The `gemini-json` dialect: Gemini CLI with `--output-format json` (one result, maybe among
other lines) or `stream-json` (one event per line)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from gitexec.dialects.common import _dict, _Facts, _int, _json_object, _retry_after, _str, _truncate
from gitexec.dialects.values import SUMMARY_CHARS, Report, Status, Usage

_GEMINI_EDIT_TOOLS = frozenset({"write_file", "replace", "edit"})
_GEMINI_TOOL_ERROR = re.compile(r"Error executing tool (\w+): (.+)$")


class _Gemini:
    def __init__(self) -> None:
        self.text: list[str] = []
        self.tool_errors: list[str] = []
        self.stream = False
        self.stream_result: dict[str, Any] | None = None
        self.stream_error: dict[str, Any] | None = None
        self.session_id: str | None = None
        self.model_name: str | None = None
        self.stream_text: list[str] = []
        self.stream_edits = 0

    def line(self, text: str, *, stderr: bool = False) -> None:
        match = _GEMINI_TOOL_ERROR.search(text)
        if match:
            self.tool_errors.append(f"{match.group(1)}: {match.group(2).strip()}")
        event = _json_object(text)
        if event is not None and isinstance(event.get("type"), str) and "timestamp" in event:
            self._stream_event(event)
            return
        self.text.append(text)

    def _stream_event(self, event: dict[str, Any]) -> None:
        """`--output-format stream-json`: one event per line."""
        self.stream = True
        kind = event["type"]
        if kind == "init":
            self.session_id = _str(event.get("session_id"))
            self.model_name = _str(event.get("model"))
        elif kind == "message" and event.get("role") == "assistant":
            self.stream_text.append(str(event.get("content") or ""))
        elif kind == "tool_result" and event.get("status") == "success":
            if str(event.get("tool_id", "")).split("__", 1)[0] in _GEMINI_EDIT_TOOLS:
                self.stream_edits += 1
        elif kind == "result":
            self.stream_result = event
        elif kind == "error":
            self.stream_error = event

    def _final(self) -> dict[str, Any] | None:
        """The last top-level JSON object of `--output-format json` (pretty-printed, maybe
        between other lines): the result, or the error report on stderr."""
        text = "\n".join(self.text)
        decoder = json.JSONDecoder()
        final = None
        for match in re.finditer(r"(?m)^\{", text):
            try:
                value, _ = decoder.raw_decode(text, match.start())
            except ValueError:
                continue
            if isinstance(value, dict) and (
                {"session_id", "response", "stats", "error"} & set(value)
            ):
                final = value
        return final

    def usage(self) -> Usage | None:
        if self.stream:
            stats = _dict((self.stream_result or {}).get("stats"))
            if not stats:
                return None
            return Usage(
                _int(stats.get("input_tokens")),
                _int(stats.get("output_tokens")),
                _int(stats.get("cached")),
            )
        final = self._final()
        return None if final is None else _gemini_usage(final.get("stats"))

    def cost(self) -> float | None:
        return None

    def model(self) -> str | None:
        if self.stream:
            return self.model_name
        final = self._final()
        models = _gemini_models(final.get("stats")) if final else {}
        if not models:
            return None
        return max(models, key=lambda name: _gemini_model_tokens(models[name]))

    def finish(self, exit_code: int) -> Report:
        if self.stream:
            return self._finish_stream(exit_code)
        final = self._final()
        if final is None:
            if exit_code == 0:
                return Report(Status.FAILURE, reason="no JSON result in the output")
            return _Facts().exit_failure(exit_code, self.text)
        facts = _Facts(
            self.usage(),
            model=self.model(),
            session_id=_str(final.get("session_id")),
            summary=_truncate(_str(final.get("response")), SUMMARY_CHARS),
        )
        if isinstance(final.get("error"), dict):
            return _gemini_error(final["error"], facts)
        edits_ok, edits_failed = _gemini_edit_counts(_dict(final.get("stats")))
        denied = tuple(self.tool_errors)
        if edits_failed and not edits_ok:
            detail = "; ".join(denied) or "the edit tool failed"
            return facts.report(Status.FAILURE, f"permission denied: {detail}", denials=denied)
        if exit_code != 0:
            return facts.exit_failure(exit_code, self.text)
        return facts.report(Status.SUCCESS, denials=denied)

    def _finish_stream(self, exit_code: int) -> Report:
        facts = _Facts(
            self.usage(),
            model=self.model_name,
            session_id=self.session_id,
            summary=_truncate("".join(self.stream_text), SUMMARY_CHARS),
        )
        result = self.stream_result
        if result is None or result.get("status") not in (None, "success"):
            error = _dict((result or {}).get("error")) or _dict(
                (self.stream_error or {}).get("error")
            )
            if error or result is not None:
                return _gemini_error(error, facts)
            return facts.exit_failure(exit_code or 1, self.text)
        denied = tuple(self.tool_errors)
        edit_denied = any(d.split(":", 1)[0] in _GEMINI_EDIT_TOOLS for d in denied)
        if edit_denied and not self.stream_edits:
            return facts.report(
                Status.FAILURE, "permission denied: " + "; ".join(denied), denials=denied
            )
        if exit_code != 0:
            return facts.exit_failure(exit_code, self.text)
        return facts.report(Status.SUCCESS, denials=denied)


def _gemini_models(stats: Any) -> dict[str, dict[str, Any]]:
    models = _dict(_dict(stats).get("models"))
    return {str(k): v for k, v in models.items() if isinstance(v, dict)}


def _gemini_model_usage(entry: Mapping[str, Any]) -> Usage:
    tokens = _dict(entry.get("tokens"))
    return Usage(
        _int(tokens.get("prompt")),
        _int(tokens.get("candidates")) + _int(tokens.get("thoughts")),
        _int(tokens.get("cached")),
    )


def _gemini_model_tokens(entry: Mapping[str, Any]) -> int:
    usage = _gemini_model_usage(entry)
    return usage.input_tokens + usage.output_tokens


def _gemini_usage(stats: Any) -> Usage | None:
    models = _gemini_models(stats)
    if not models:
        return None
    total = Usage()
    for entry in models.values():
        total = total + _gemini_model_usage(entry)
    return total


def _gemini_edit_counts(stats: Mapping[str, Any]) -> tuple[int, int]:
    by_name = _dict(_dict(stats.get("tools")).get("byName"))
    ok = failed = 0
    for name, entry in by_name.items():
        if name in _GEMINI_EDIT_TOOLS:
            ok += _int(_dict(entry).get("success"))
            failed += _int(_dict(entry).get("fail"))
    return ok, failed


def _gemini_error(error: Mapping[str, Any], facts: _Facts) -> Report:
    """Gemini's error report: the API's JSON error (sometimes as the message's text)."""
    message = str(error.get("message") or "error reported")
    code = _int(error.get("code"))
    inner = _dict(_dict(_json_object(message)).get("error"))
    status = str(inner.get("status") or "")
    text = str(inner.get("message") or message)
    code = code or _int(inner.get("code"))
    reason = text + (f" (HTTP {code})" if code else "")
    if code in (429, 503, 529) or status in ("RESOURCE_EXHAUSTED", "UNAVAILABLE"):
        return facts.report(Status.THROTTLED, reason, retry_after_s=_retry_after(message))
    return facts.report(Status.FAILURE, reason)
