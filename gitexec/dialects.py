"""Reading what an agent CLI printed into an outcome: success, failure or throttled.

The real CLIs do not say how an attempt went through their exit codes alone: Claude Code
exits 0 when a permission was denied and nothing was written, Codex exits 0 when its
sandbox rejected the edit, aider exits 0 after giving up on a rate limit. Each agent
therefore names an output *dialect*; its reader turns the captured output (stdout, with
stderr merged in or apart) and the exit code into a `Report`: the outcome, the agent's
own error text, token usage, cost, model, session id and a summary. A JSON file written
to GITEXEC_RESULT_FILE by any agent takes precedence over what the dialect read.

Pure: no processes, no files; the caller hands in bytes. `Reader` reads incrementally
(`feed` chunks while the agent runs, `usage()` so far, `result()` at the end).
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

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


# --- entry points ----------------------------------------------------------------------------


def parse(
    dialect: Dialect | str,
    *,
    stdout: bytes,
    stderr: bytes = b"",
    exit_code: int,
    result_file: bytes | None = None,
    pricing: Mapping[str, Price] | None = None,
    argv: Sequence[str] = (),
) -> Report:
    """Read a finished attempt: its output, exit code and GITEXEC_RESULT_FILE (if written).

    `stdout` may hold stderr merged in (a combined log); pass `stderr` when captured apart.
    `argv` names the model for CLIs that do not print it (`-m`/`--model`). A cost comes
    from `pricing` (by the model name as the CLI reports it) when the CLI reports none.
    """
    reader = Reader(dialect, argv=argv)
    reader.feed(stdout)
    return reader.result(
        exit_code=exit_code, stderr=stderr, result_file=result_file, pricing=pricing
    )


class Reader:
    """Incremental reading of an agent's output while it runs: `feed`, `usage`, `result`."""

    def __init__(self, dialect: Dialect | str, *, argv: Sequence[str] = ()) -> None:
        self.dialect = Dialect(dialect)
        self._state = _READERS[self.dialect]()
        self._model_hint = _model_from_argv(argv)
        self._pending = b""

    def feed(self, chunk: bytes) -> None:
        """Take the next bytes of output; complete lines are read at once."""
        data = self._pending + chunk
        *lines, self._pending = data.split(b"\n")
        for line in lines:
            self._state.line(_text(line))

    def usage(self) -> Usage | None:
        """Tokens reported so far (None while the CLI has reported none)."""
        return self._state.usage()

    def cost_usd(self, pricing: Mapping[str, Price] | None = None) -> float | None:
        """Cost so far: the CLI's own figure, else from `pricing`; None when unknown."""
        cost = self._state.cost()
        if cost is not None:
            return cost
        return price_of(self._state.model() or self._model_hint, self.usage(), pricing)

    def result(
        self,
        *,
        exit_code: int,
        stderr: bytes = b"",
        result_file: bytes | None = None,
        pricing: Mapping[str, Price] | None = None,
    ) -> Report:
        if self._pending:
            self._state.line(_text(self._pending))
            self._pending = b""
        for line in stderr.split(b"\n"):
            self._state.line(_text(line), stderr=True)
        report = self._state.finish(exit_code)
        if report.model is None and self._model_hint is not None:
            report = replace(report, model=self._model_hint)
        if result_file is not None and result_file.strip():
            report = _apply_result_file(report, result_file)
        if report.cost_usd is None:
            report = replace(report, cost_usd=price_of(report.model, report.usage, pricing))
        return report


def price_of(
    model: str | None, usage: Usage | None, pricing: Mapping[str, Price] | None
) -> float | None:
    """The cost of `usage` by `pricing[model]` (or the name after a `provider/` prefix)."""
    if model is None or usage is None or not pricing:
        return None
    price = pricing.get(model) or pricing.get(model.rsplit("/", 1)[-1])
    return None if price is None else round(price.cost(usage), 10)


# --- shared helpers ---------------------------------------------------------------------------


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


def _model_from_argv(argv: Sequence[str]) -> str | None:
    args = list(argv)
    for i, arg in enumerate(args):
        if arg in ("-m", "--model") and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--model="):
            return arg.split("=", 1)[1]
        if arg in ("-c", "--config") and i + 1 < len(args):
            key, _, value = args[i + 1].partition("=")
            if key.strip() == "model" and value:
                return value.strip().strip("\"'")
    return None


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


# --- plain -------------------------------------------------------------------------------------


class _Plain:
    """Any command: the exit code decides; the last lines of output are the summary."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def line(self, text: str, *, stderr: bool = False) -> None:
        self.lines.append(text)
        del self.lines[:-50]

    def usage(self) -> Usage | None:
        return None

    def cost(self) -> float | None:
        return None

    def model(self) -> str | None:
        return None

    def finish(self, exit_code: int) -> Report:
        facts = _Facts(summary=_truncate(_tail(self.lines, 10), SUMMARY_CHARS))
        if exit_code != 0:
            return facts.exit_failure(exit_code, self.lines)
        return facts.report(Status.SUCCESS)


# --- claude-json (Claude Code: --output-format json, or stream-json --verbose) -----------------

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


# --- codex-jsonl (Codex CLI: codex exec --json) -------------------------------------------------

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


# --- gemini-json (Gemini CLI: --output-format json, or stream-json) -----------------------------

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


# --- aider-text (aider --message, plain text) ---------------------------------------------------

_AIDER_MODEL = re.compile(r"^Model: (\S+) with ")
_AIDER_APPLIED = re.compile(r"^Applied edit to (.+)$")
_AIDER_NUMBER = r"(\d+(?:\.\d+)?k?)"
_AIDER_TOKENS = re.compile(
    rf"Tokens: {_AIDER_NUMBER} sent,(?: {_AIDER_NUMBER} cache write,)?"
    rf"(?: {_AIDER_NUMBER} cache hit,)? {_AIDER_NUMBER} received\."
)
_AIDER_COST = re.compile(r"Cost: \$(\d+(?:\.\d+)?) message, \$(\d+(?:\.\d+)?) session\.")
_AIDER_ERROR = re.compile(r"^litellm\.(\w+): (.*)$")
_AIDER_EDIT_REFUSED = re.compile(r"'?(\S+?)'? is not in the subpath of ")
_AIDER_NOT_ERROR = ("Retrying in", "The API provider", "Tokens:", "litellm.")
_AIDER_THROTTLE_ERRORS = frozenset(
    {"RateLimitError", "ServiceUnavailableError", "InternalServerError", "APIError"}
)


def _aider_count(text: str | None) -> int:
    """aider's rounded counts: 950, 2.6k, 12k."""
    if not text:
        return 0
    if text.endswith("k"):
        return round(float(text[:-1]) * 1000)
    return int(float(text))


class _Aider:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.model_name: str | None = None
        self.applied: list[str] = []
        self._ledger: tuple[int, Usage | None, float | None] = (0, None, None)

    def line(self, text: str, *, stderr: bool = False) -> None:
        self.lines.append(text)
        model = _AIDER_MODEL.match(text)
        if model:
            self.model_name = model.group(1)
        applied = _AIDER_APPLIED.match(text)
        if applied:
            self.applied.append(applied.group(1).strip())

    def _paragraphs(self) -> list[str]:
        # rich wraps long lines at the terminal width; join each paragraph into one line.
        text = "\n".join(self.lines)
        return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]

    def _read_ledger(self) -> tuple[Usage | None, float | None]:
        """Tokens summed over aider's usage lines; its last session cost."""
        seen, usage, cost = self._ledger
        if seen != len(self.lines):
            usage, cost = None, None
            for paragraph in self._paragraphs():
                for tokens in _AIDER_TOKENS.finditer(paragraph):
                    sent, _written, hit, received = tokens.groups()
                    usage = (usage or Usage()) + Usage(
                        _aider_count(sent), _aider_count(received), _aider_count(hit)
                    )
                for found in _AIDER_COST.finditer(paragraph):
                    cost = float(found.group(2))
            self._ledger = (len(self.lines), usage, cost)
        return usage, cost

    def usage(self) -> Usage | None:
        return self._read_ledger()[0]

    def cost(self) -> float | None:
        return self._read_ledger()[1]

    def model(self) -> str | None:
        return self.model_name

    def _errors(self) -> list[tuple[str, str]]:
        """`litellm.XError: message` reports, their wrapped lines joined back."""
        errors: list[tuple[str, str]] = []
        current: list[str] | None = None
        for line in self.lines:
            match = _AIDER_ERROR.match(line)
            if match:
                name, message = match.groups()
                # "RateLimitError: RateLimitError: OpenAIException - ..." says it twice.
                message = message.strip().removeprefix(f"{name}: ")
                errors.append((name, message))
                current = [message]
            elif current is not None and line.strip() and not line.startswith(_AIDER_NOT_ERROR):
                current.append(line.strip())
                errors[-1] = (errors[-1][0], " ".join(current))
            else:
                current = None
        return errors

    def _summary(self) -> str | None:
        """aider's answer: what it printed between its banner and the first usage line."""
        start = 0
        for i, line in enumerate(self.lines):
            if line.startswith(("Repo-map:", "Git repo:", "Model:")):
                start = i + 1
        body: list[str] = []
        for line in self.lines[start:]:
            if line.startswith(("Tokens:", "Applied edit to")):
                break
            body.append(line)
        return _truncate("\n".join(body), SUMMARY_CHARS)

    def finish(self, exit_code: int) -> Report:
        facts = _Facts(self.usage(), self.cost(), self.model_name, summary=self._summary())
        paragraphs = self._paragraphs()
        errors = self._errors()
        if not self.applied:
            if errors:
                name, message = errors[-1]
                reason = f"{name}: {message}"
                throttled = name in _AIDER_THROTTLE_ERRORS and (
                    name != "APIError" or _is_throttle(message)
                )
                if throttled:
                    return facts.report(
                        Status.THROTTLED, reason, retry_after_s=_retry_after(message)
                    )
                return facts.report(Status.FAILURE, reason)
            refused = [m.group(1) for p in paragraphs for m in _AIDER_EDIT_REFUSED.finditer(p)]
            if refused:
                denials = tuple(f"edit outside the repository: {path}" for path in refused)
                return facts.report(
                    Status.FAILURE, "permission denied: " + "; ".join(denials), denials=denials
                )
            if any("did not conform to the edit format" in p for p in paragraphs):
                return facts.report(Status.FAILURE, "the model's edits did not apply")
        if exit_code != 0:
            return facts.exit_failure(exit_code, self.lines)
        return facts.report(Status.SUCCESS)


_READERS: dict[Dialect, Callable[[], _State]] = {
    Dialect.PLAIN: _Plain,
    Dialect.CLAUDE_JSON: _Claude,
    Dialect.CODEX_JSONL: _Codex,
    Dialect.GEMINI_JSON: _Gemini,
    Dialect.AIDER_TEXT: _Aider,
}


# --- GITEXEC_RESULT_FILE ----------------------------------------------------------------------


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


__all__ = [
    "Dialect",
    "Price",
    "Reader",
    "Report",
    "Status",
    "Usage",
    "parse",
    "price_of",
]
