"""GITEXEC_RESULT_FILE: what an agent wrote about its own attempt takes precedence over what
its dialect read; a malformed file makes the attempt a failure."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from gitexec.dialects.common import _number, _truncate
from gitexec.dialects.values import SUMMARY_CHARS, Report, Status, Usage


@dataclass(frozen=True)
class _ResultFileError:
    message: str


def _apply_result_file(report: Report, raw: bytes) -> Report:
    """Overlay what the agent wrote to GITEXEC_RESULT_FILE; a malformed file is a failure."""
    parsed = _read_result_file(raw)
    if isinstance(parsed, _ResultFileError):
        return replace(
            report, status=Status.FAILURE, reason=f"GITEXEC_RESULT_FILE: {parsed.message}"
        )
    changes: dict[str, Any] = {k: v for k, v in parsed.items() if v is not None}
    if changes["status"] is Status.SUCCESS:
        changes.setdefault("reason", None)
    elif changes["status"] is not report.status or report.reason is None:
        summary = changes.get("summary") or report.summary
        changes.setdefault("reason", summary or "reported in GITEXEC_RESULT_FILE")
    return replace(report, **changes)


_RESULT_KEYS = (
    "status",
    "summary",
    "reason",
    "usage",
    "cost_usd",
    "session_id",
    "model",
    "retry_after_s",
)


def _read_result_file(raw: bytes) -> dict[str, Any] | _ResultFileError:
    """The fields of a GITEXEC_RESULT_FILE, validated; unknown keys are ignored."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        return _ResultFileError(f"not valid JSON ({exc})")
    if not isinstance(data, dict):
        return _ResultFileError("expected a JSON object")
    out: dict[str, Any] = {}
    status = data.get("status")
    try:
        out["status"] = Status(status)
    except ValueError:
        choices = ", ".join(s.value for s in Status)
        return _ResultFileError(f"status: expected one of {choices}, got {status!r}")
    for key in ("summary", "reason", "session_id", "model"):
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            return _ResultFileError(f"{key}: expected a string")
        out[key] = _truncate(value, SUMMARY_CHARS) if key in ("summary", "reason") else value
    for key in ("cost_usd", "retry_after_s"):
        value = data.get(key)
        if value is not None and (_number(value) is None or value < 0):
            return _ResultFileError(f"{key}: expected a non-negative number")
        out[key] = None if value is None else float(value)
    usage = data.get("usage")
    if usage is not None:
        if not isinstance(usage, dict):
            return _ResultFileError("usage: expected an object")
        counts = {}
        for key in ("input_tokens", "output_tokens", "cached_input_tokens"):
            value = usage.get(key, 0)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                return _ResultFileError(f"usage.{key}: expected a non-negative integer")
            counts[key] = value
        out["usage"] = Usage(**counts)
    assert set(out) <= set(_RESULT_KEYS)
    return out
