"""The scripted model server on its own: each API it speaks, errors, and its record."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.agents.server import HttpError, Reply, ScriptedModel, Step, Usage, WriteFile


def post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, str], str]:
    assert url.startswith("http://127.0.0.1:")
    request = urllib.request.Request(  # noqa: S310 - the local scripted server
        url, json.dumps(body).encode(), {"content-type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - 127.0.0.1
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def sse(text: str) -> list[dict[str, Any]]:
    return [
        json.loads(line[6:])
        for line in text.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]


CLAUDE_BODY = {
    "model": "claude-x",
    "stream": True,
    "tools": [{"name": "Write"}],
    "messages": [{"role": "system", "content": "Primary working directory: /work/tree\n"}],
}


def test_anthropic_tool_call_writes_at_the_clis_working_directory() -> None:
    script: list[Step] = [WriteFile("a.txt", "A\n", usage=Usage(10, 2, 3)), Reply("done")]
    with ScriptedModel(script) as server:
        status, headers, text = post(f"{server.url}/v1/messages?beta=true", CLAUDE_BODY)
        assert status == 200
        assert headers["content-type"] == "text/event-stream"
        events = sse(text)
        assert events[0]["message"]["usage"]["input_tokens"] == 10
        assert events[0]["message"]["usage"]["cache_read_input_tokens"] == 3
        tool = next(e for e in events if e["type"] == "content_block_delta" and e["index"] == 1)
        assert json.loads(tool["delta"]["partial_json"]) == {
            "file_path": "/work/tree/a.txt",
            "content": "A\n",
        }
        assert events[-2]["delta"]["stop_reason"] == "tool_use"
        assert events[-2]["usage"]["output_tokens"] == 2
        _, _, text = post(f"{server.url}/v1/messages", CLAUDE_BODY)
        assert sse(text)[2]["delta"]["text"] == "done"
        assert [r.step for r in server.requests] == script
        assert server.exhausted == 0


def test_side_calls_do_not_use_the_script() -> None:
    with ScriptedModel([Reply("main")]) as server:
        status, _, _ = post(f"{server.url}/v1/messages", {"model": "haiku", "messages": []})
        assert status == 200
        post(f"{server.url}/v1/messages", CLAUDE_BODY)
        assert [r.main for r in server.requests] == [False, True]
        assert server.main_requests()[0].step == Reply("main")


def test_responses_api_calls_apply_patch_through_exec_command() -> None:
    body = {"model": "gpt-x", "input": [{"content": "<cwd>/w</cwd>"}], "stream": True}
    with ScriptedModel([WriteFile("b.txt", "one\ntwo\n")]) as server:
        _, _, text = post(f"{server.url}/v1/responses", body)
    events = sse(text)
    call = next(e["item"] for e in events if e["type"] == "response.output_item.done")
    assert call["name"] == "exec_command"
    args = json.loads(call["arguments"])
    assert args["workdir"] == "/w"
    assert "*** Add File: /w/b.txt\n+one\n+two\n" in args["cmd"]
    assert events[-1]["response"]["usage"]["input_tokens_details"]["cached_tokens"] == 200


def test_gemini_streams_a_write_file_call_and_answers_side_calls_with_json() -> None:
    body = {"contents": [{"parts": [{"text": "- **Workspace Directories:**\n  - /g\n"}]}]}
    with ScriptedModel([WriteFile("c.txt", "C")]) as server:
        url = f"{server.url}/v1beta/models/gem-1:streamGenerateContent?alt=sse"
        _, _, text = post(url, body)
        side = {"contents": [], "generationConfig": {"responseMimeType": "application/json"}}
        _, _, routed = post(f"{server.url}/v1beta/models/gem-1:generateContent", side)
    chunk = sse(text)[0]
    call = chunk["candidates"][0]["content"]["parts"][1]["functionCall"]
    assert call == {"name": "write_file", "args": {"file_path": "/g/c.txt", "content": "C"}}
    assert chunk["usageMetadata"]["promptTokenCount"] == 1000
    answer = json.loads(json.loads(routed)["candidates"][0]["content"]["parts"][0]["text"])
    assert "model_choice" in answer


def test_chat_completions_answer_in_aiders_whole_file_format() -> None:
    with ScriptedModel([WriteFile("d.txt", "D\n")]) as server:
        _, _, text = post(f"{server.url}/v1/chat/completions", {"model": "m", "messages": []})
    message = json.loads(text)["choices"][0]["message"]["content"]
    assert message.endswith("d.txt\n```\nD\n```\n")


@pytest.mark.parametrize(
    ("path", "body", "kind"),
    [
        ("/v1/messages", CLAUDE_BODY, "rate_limit_error"),
        ("/v1/responses", {"input": []}, "rate_limit_exceeded"),
        ("/v1/chat/completions", {"messages": []}, "rate_limit_exceeded"),
    ],
)
def test_errors_carry_status_retry_after_and_the_providers_error_shape(
    path: str, body: dict[str, Any], kind: str
) -> None:
    with ScriptedModel([HttpError(429, "slow down", retry_after_s=7, times=2), Reply("ok")]) as s:
        for _ in range(2):
            status, headers, text = post(s.url + path, body)
            assert status == 429
            assert headers["retry-after"] == "7"
            assert json.loads(text)["error"]["message"] == "slow down"
            assert kind in text
        assert post(s.url + path, body)[0] == 200


def test_gemini_errors_name_a_retry_delay() -> None:
    with ScriptedModel([HttpError(429, "quota", retry_after_s=30)]) as server:
        status, _, text = post(f"{server.url}/v1beta/models/g:streamGenerateContent", {})
    error = json.loads(text)["error"]
    assert status == 429
    assert error["status"] == "RESOURCE_EXHAUSTED"
    assert error["details"][0]["retryDelay"] == "30s"


def test_an_exhausted_script_is_counted_and_unknown_paths_are_404() -> None:
    with ScriptedModel() as server:
        assert post(f"{server.url}/v1/chat/completions", {"messages": []})[0] == 200
        assert post(f"{server.url}/elsewhere", {})[0] == 404
        assert server.exhausted == 1
        assert [r.protocol for r in server.requests] == ["chat", "unknown"]
