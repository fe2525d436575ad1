"""A scripted model server for driving the real agent CLIs in tests, on 127.0.0.1 only.

It speaks just enough of each provider's HTTP API for its CLI: Anthropic Messages (SSE,
for Claude Code), OpenAI Responses (SSE, for Codex CLI), Gemini generateContent and
streamGenerateContent (SSE, for Gemini CLI) and OpenAI chat completions (for aider). A
test gives it a script, one step per model turn: make the CLI's own edit tool write a
file, answer with a final message, or fail with an HTTP error. Every request is recorded
so a test can assert what the CLI sent. Standard library only.
"""

from __future__ import annotations

import http.server
import itertools
import json
import random
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# --- the script ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """Token counts the server reports for one model call."""

    input_tokens: int = 1000
    output_tokens: int = 50
    cached_input_tokens: int = 200


@dataclass(frozen=True)
class WriteFile:
    """One turn: the CLI's own edit tool writes `content` to `path`.

    A relative `path` is resolved against the working directory the CLI names in its
    request (claude, codex and gemini want absolute paths in their tools).
    """

    path: str
    content: str
    usage: Usage = Usage()
    note: str = "Writing the file."


@dataclass(frozen=True)
class Reply:
    """One turn: a final assistant message, no tool call."""

    text: str
    usage: Usage = Usage()


@dataclass(frozen=True)
class HttpError:
    """`times` requests (None: every one from now on) answered with an HTTP error."""

    status: int
    message: str
    retry_after_s: float | None = None
    times: int | None = 1


Step = WriteFile | Reply | HttpError


@dataclass(frozen=True)
class Request:
    """One request the server received, as the CLI sent it."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any  # parsed JSON, or None
    protocol: str  # anthropic | responses | gemini | chat | unknown
    main: bool  # a turn of the agent (consumed a script step), not an auxiliary call
    step: Step | None = None

    def text(self) -> str:
        """The request body as text, for asserting what the CLI sent (prompt, history)."""
        return json.dumps(self.body, ensure_ascii=False)


# --- the server ----------------------------------------------------------------------------


class ScriptedModel:
    """A threaded HTTP server on 127.0.0.1 (random port) that plays a script.

    Use as a context manager; `url` is the base URL to give the CLI. When the script
    runs out, the server answers with a final message "(script exhausted)" and counts it
    in `exhausted`, so a test sees a CLI asking more than it was scripted to.
    """

    def __init__(
        self,
        script: Iterable[Step] = (),
        *,
        model: str = "scripted-model",
        flaky: float = 0.0,
        seed: int = 0,
        rate: float | None = None,
    ) -> None:
        self.model = model
        # With `rate`, agent turns beyond `rate` per second (a bucket of one second's
        # worth, and at least one turn) are answered 429 with the retry-after until the
        # next one is allowed: a provider's rate limit, which load over time decides.
        self.rate = rate
        self._burst = max(1.0, rate or 0.0)
        self._tokens = self._burst
        self._refilled = time.monotonic()
        # With `flaky`, that share of agent turns is answered with a 429 and a retry-after
        # of 1 s instead (the script is not consumed): a provider under load.
        self.flaky = flaky
        self._random = random.Random(seed)
        self.throttled = 0
        self._lock = threading.Lock()
        self._script: list[Step] = []
        self._repeats: dict[int, int] = {}
        self.requests: list[Request] = []
        self.exhausted = 0
        self._ids = itertools.count(1)
        self.set_script(script)
        handler = type("Handler", (_Handler,), {"model": self})
        self._httpd = _Server(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def set_script(self, script: Iterable[Step]) -> None:
        with self._lock:
            self._script = list(script)

    def main_requests(self) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.main]

    def __enter__(self) -> ScriptedModel:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def next_id(self) -> int:
        return next(self._ids)

    def take(self) -> Step | None:
        """The next step of the script (an HttpError stays while it has `times` left)."""
        with self._lock:
            if self.flaky and self._random.random() < self.flaky:
                self.throttled += 1
                return HttpError(429, "Rate limit reached. Please try again in 1s.", 1.0)
            if self.rate:
                now = time.monotonic()
                elapsed, self._refilled = now - self._refilled, now
                self._tokens = min(self._burst, self._tokens + elapsed * self.rate)
                if self._tokens < 1:
                    self.throttled += 1
                    wait = round((1 - self._tokens) / self.rate, 2)
                    return HttpError(429, f"Rate limit reached. Try again in {wait}s.", wait)
                self._tokens -= 1
            if not self._script:
                self.exhausted += 1
                return None
            step = self._script[0]
            if isinstance(step, HttpError) and step.times != 1:
                if step.times is not None:
                    self._script[0] = HttpError(
                        step.status, step.message, step.retry_after_s, step.times - 1
                    )
                return step
            return self._script.pop(0)

    def record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a CLI dropping its connection (it gave up, or was killed) is no news


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    model: ScriptedModel

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers = {k.lower(): v for k, v in self.headers.items()}
        protocol, main = _classify(self.command, self.path, body)
        step = self.model.take() if main else None
        self.model.record(Request(self.command, self.path, headers, body, protocol, main, step))
        response = _respond(self.model, protocol, main, step, self.path, body)
        self.send_response(response.status)
        self.send_header("content-type", response.content_type)
        self.send_header("content-length", str(len(response.body)))
        for name, value in response.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(response.body)


def _classify(method: str, path: str, body: Any) -> tuple[str, bool]:
    """Which API a request speaks, and whether it is an agent turn (uses the script)."""
    route = path.split("?", 1)[0]
    if method != "POST" or not isinstance(body, dict):
        return "unknown", False
    if route.endswith("/v1/messages"):
        # Claude Code's own side calls (titles, summaries) come without the agent's tools.
        tools = {t.get("name") for t in body.get("tools") or () if isinstance(t, dict)}
        return "anthropic", "Write" in tools
    if route.endswith("/responses"):
        return "responses", True
    if route.endswith("/chat/completions"):
        return "chat", True
    if ":streamGenerateContent" in route or ":generateContent" in route:
        # Gemini CLI's side calls (model routing, next-speaker checks) ask for JSON.
        config = body.get("generationConfig") or {}
        return "gemini", config.get("responseMimeType") != "application/json"
    return "unknown", False


def _respond(
    model: ScriptedModel, protocol: str, main: bool, step: Step | None, path: str, body: Any
) -> Response:
    if protocol == "unknown":
        return Response(404, b'{"error": {"message": "not scripted"}}')
    if not main:
        return _side_call(model, protocol, path, body)
    if step is None:
        step = Reply("(script exhausted)")
    if isinstance(step, HttpError):
        return _error(protocol, step)
    cwd = _working_directory(protocol, body)
    render = _RENDERERS[protocol]
    return render(model, step, cwd, path, body)


# --- per protocol ----------------------------------------------------------------------------


def _sse(events: Iterable[tuple[str | None, Any]]) -> bytes:
    out = []
    for name, data in events:
        head = f"event: {name}\n" if name else ""
        out.append(f"{head}data: {json.dumps(data)}\n\n")
    return "".join(out).encode()


def _abspath(cwd: str | None, path: str) -> str:
    if path.startswith("/") or cwd is None:
        return path
    return f"{cwd.rstrip('/')}/{path}"


_CWD_PATTERNS = {
    "anthropic": re.compile(r"Primary working directory: ([^\n\\\"]+)"),
    "responses": re.compile(r"<cwd>([^<]+)</cwd>"),
    "gemini": re.compile(r"Workspace Directories:\*\*\\n\s*- (/[^\\\"]+)"),
    "chat": re.compile(r"$^"),
}


def _working_directory(protocol: str, body: Any) -> str | None:
    match = _CWD_PATTERNS[protocol].search(json.dumps(body, ensure_ascii=False))
    return match.group(1).strip().rstrip(".") if match else None


def _anthropic(model: ScriptedModel, step: Step, cwd: str | None, path: str, body: Any) -> Response:
    n = model.next_id()
    assert not isinstance(step, HttpError)
    u = step.usage
    start_usage = {
        "input_tokens": u.input_tokens,
        "output_tokens": 1,
        "cache_read_input_tokens": u.cached_input_tokens,
        "cache_creation_input_tokens": 0,
    }
    events: list[tuple[str | None, Any]] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": f"msg_{n:04d}",
                    "type": "message",
                    "role": "assistant",
                    "model": body.get("model", model.model),
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": start_usage,
                },
            },
        )
    ]
    blocks: list[dict[str, Any]] = []
    if isinstance(step, WriteFile):
        blocks.append({"type": "text", "text": step.note})
        blocks.append(
            {
                "type": "tool_use",
                "id": f"toolu_{n:04d}",
                "name": "Write",
                "input": {"file_path": _abspath(cwd, step.path), "content": step.content},
            }
        )
        stop = "tool_use"
    else:
        blocks.append({"type": "text", "text": step.text})
        stop = "end_turn"
    for i, block in enumerate(blocks):
        start: dict[str, Any]
        if block["type"] == "text":
            start = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": block["text"]}
        else:
            start = {**block, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        events += [
            (
                "content_block_start",
                {"type": "content_block_start", "index": i, "content_block": start},
            ),
            ("content_block_delta", {"type": "content_block_delta", "index": i, "delta": delta}),
            ("content_block_stop", {"type": "content_block_stop", "index": i}),
        ]
    events += [
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": u.output_tokens},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return Response(200, _sse(events), "text/event-stream")


def _apply_patch_command(path: str, content: str) -> str:
    lines = "".join(f"+{line}\n" for line in content.splitlines())
    return (
        f"apply_patch <<'EOF'\n*** Begin Patch\n*** Add File: {path}\n{lines}*** End Patch\nEOF\n"
    )


def _responses(model: ScriptedModel, step: Step, cwd: str | None, path: str, body: Any) -> Response:
    n = model.next_id()
    assert not isinstance(step, HttpError)
    u = step.usage
    response_id = f"resp_{n:04d}"
    items: list[dict[str, Any]] = []
    if isinstance(step, WriteFile):
        items.append(
            {
                "type": "function_call",
                "id": f"fc_{n:04d}",
                "call_id": f"call_{n:04d}",
                "name": "exec_command",
                "arguments": json.dumps(
                    {
                        "cmd": _apply_patch_command(_abspath(cwd, step.path), step.content),
                        "workdir": cwd,
                    }
                ),
                "status": "completed",
            }
        )
    else:
        items.append(
            {
                "type": "message",
                "id": f"msg_{n:04d}",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": step.text, "annotations": []}],
            }
        )
    usage = {
        "input_tokens": u.input_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_input_tokens},
        "output_tokens": u.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.input_tokens + u.output_tokens,
    }
    head = {"id": response_id, "object": "response", "model": body.get("model", model.model)}
    events: list[tuple[str | None, Any]] = [
        (
            "response.created",
            {"type": "response.created", "response": {**head, "status": "in_progress"}},
        )
    ]
    for i, item in enumerate(items):
        events.append(
            (
                "response.output_item.added",
                {"type": "response.output_item.added", "output_index": i, "item": item},
            )
        )
        events.append(
            (
                "response.output_item.done",
                {"type": "response.output_item.done", "output_index": i, "item": item},
            )
        )
    events.append(
        (
            "response.completed",
            {
                "type": "response.completed",
                "response": {**head, "status": "completed", "output": items, "usage": usage},
            },
        )
    )
    return Response(200, _sse(events), "text/event-stream")


def _gemini_usage(u: Usage) -> dict[str, int]:
    return {
        "promptTokenCount": u.input_tokens,
        "candidatesTokenCount": u.output_tokens,
        "cachedContentTokenCount": u.cached_input_tokens,
        "totalTokenCount": u.input_tokens + u.output_tokens,
    }


def _gemini(model: ScriptedModel, step: Step, cwd: str | None, path: str, body: Any) -> Response:
    assert not isinstance(step, HttpError)
    if isinstance(step, WriteFile):
        parts: list[dict[str, Any]] = [
            {"text": step.note},
            {
                "functionCall": {
                    "name": "write_file",
                    "args": {"file_path": _abspath(cwd, step.path), "content": step.content},
                }
            },
        ]
    else:
        parts = [{"text": step.text}]
    name = path.split("/models/", 1)[-1].split(":", 1)[0]
    chunk = {
        "candidates": [
            {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
        ],
        "usageMetadata": _gemini_usage(step.usage),
        "modelVersion": name,
        "responseId": f"resp_{model.next_id():04d}",
    }
    if ":streamGenerateContent" in path:
        return Response(200, _sse([(None, chunk)]), "text/event-stream")
    return Response(200, json.dumps(chunk).encode())


def _chat(model: ScriptedModel, step: Step, cwd: str | None, path: str, body: Any) -> Response:
    assert not isinstance(step, HttpError)
    if isinstance(step, WriteFile):
        # aider's "whole" edit format: the file name, then the whole file in a fence.
        text = f"{step.note}\n\n{step.path}\n```\n{step.content}```\n"
    else:
        text = step.text
    u = step.usage
    n = model.next_id()
    usage = {
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens + u.output_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_input_tokens},
    }
    name = body.get("model", model.model)
    base = {"id": f"chatcmpl-{n:04d}", "created": 1767225600, "model": name}
    if not body.get("stream"):
        message = {"role": "assistant", "content": text}
        full = {
            **base,
            "object": "chat.completion",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": usage,
        }
        return Response(200, json.dumps(full).encode())
    chunk = {**base, "object": "chat.completion.chunk"}
    events: list[tuple[str | None, Any]] = [
        (
            None,
            {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": text}}]},
        ),
        (None, {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        (None, {**chunk, "choices": [], "usage": usage}),
    ]
    return Response(200, _sse(events) + b"data: [DONE]\n\n", "text/event-stream")


_RENDERERS = {"anthropic": _anthropic, "responses": _responses, "gemini": _gemini, "chat": _chat}


def _side_call(model: ScriptedModel, protocol: str, path: str, body: Any) -> Response:
    """Auxiliary calls a CLI makes besides its agent turns: a short, cheap answer."""
    usage = Usage(50, 5, 0)
    if protocol == "gemini":
        # The model router and the next-speaker check ask for a JSON object.
        answer = {"reasoning": "scripted", "model_choice": "flash", "next_speaker": "user"}
        step: Step = Reply(json.dumps(answer), usage)
        return _gemini(model, step, None, path, body)
    return _RENDERERS[protocol](model, Reply("ok", usage), None, path, body)


def _error(protocol: str, step: HttpError) -> Response:
    headers: list[tuple[str, str]] = []
    if step.retry_after_s is not None:
        headers.append(("retry-after", f"{step.retry_after_s:g}"))
    if protocol == "anthropic":
        kind = {
            429: "rate_limit_error",
            529: "overloaded_error",
            500: "api_error",
            400: "invalid_request_error",
        }.get(step.status, "api_error")
        payload: Any = {"type": "error", "error": {"type": kind, "message": step.message}}
    elif protocol == "gemini":
        status = {429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE", 500: "INTERNAL"}.get(
            step.status, "UNKNOWN"
        )
        error: dict[str, Any] = {"code": step.status, "message": step.message, "status": status}
        if step.retry_after_s is not None:
            error["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": f"{step.retry_after_s:g}s",
                }
            ]
        payload = {"error": error}
    else:
        kind = {
            400: "invalid_request_error",
            401: "invalid_api_key",
            429: "rate_limit_exceeded",
            503: "server_overloaded",
        }.get(step.status, "server_error")
        payload = {"error": {"message": step.message, "type": kind, "code": kind, "param": None}}
    return Response(step.status, json.dumps(payload).encode(), headers=tuple(headers))


__all__ = [
    "HttpError",
    "Reply",
    "Request",
    "ScriptedModel",
    "Step",
    "Usage",
    "WriteFile",
]
