"""The dialects on output captured from the real CLIs (tests/agents/fixtures, recorded by
`python -m tests.agents.capture_fixtures`), and on the edge cases around them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from gitexec import dialects
from gitexec.dialects import Dialect, Price, Reader, Report, Status, Usage

FIXTURES = Path(__file__).parent / "fixtures"
DIALECTS = {
    "claude": Dialect.CLAUDE_JSON,
    "codex": Dialect.CODEX_JSONL,
    "gemini": Dialect.GEMINI_JSON,
    "aider": Dialect.AIDER_TEXT,
}


@dataclass(frozen=True)
class Captured:
    cli: str
    stdout: bytes
    stderr: bytes
    exit_code: int
    argv: tuple[str, ...]

    def parse(self, **kwargs: object) -> Report:
        return dialects.parse(
            DIALECTS[self.cli],
            stdout=self.stdout,
            stderr=self.stderr,
            exit_code=self.exit_code,
            argv=self.argv,
            **kwargs,  # type: ignore[arg-type]
        )


def captured(name: str) -> Captured:
    cli, case = name.split("/")
    meta = json.loads((FIXTURES / cli / f"{case}.json").read_text())
    return Captured(
        cli,
        (FIXTURES / cli / f"{case}.stdout").read_bytes(),
        (FIXTURES / cli / f"{case}.stderr").read_bytes(),
        meta["exit_code"],
        tuple(meta["argv"]),
    )


ALL = sorted(f"{p.parent.name}/{p.stem}" for p in FIXTURES.glob("*/*.json"))

# fixture -> (status, exit code, start of the reason, retry_after_s)
EXPECTED: dict[str, tuple[Status, int, str | None, float | None]] = {
    "claude/success": (Status.SUCCESS, 0, None, None),
    "claude/denied": (
        Status.FAILURE,
        0,
        "permission denied: Write /var/tmp/gitexec-outside-the-worktree.txt",
        None,
    ),
    "claude/http429": (Status.THROTTLED, 1, "API Error: Request rejected (429)", 7.0),
    "claude/http529": (Status.THROTTLED, 1, "API Error: 529 Overloaded", None),
    "claude/http500": (Status.FAILURE, 1, "API Error: 500 Internal server error", None),
    "codex/success": (Status.SUCCESS, 0, None, None),
    "codex/blocked": (Status.FAILURE, 0, "sandbox blocked: patch rejected", None),
    "codex/http429": (Status.THROTTLED, 1, "exceeded retry limit, last status: 429", None),
    "codex/http529": (Status.THROTTLED, 1, "unexpected status 529", None),
    "codex/http400": (Status.FAILURE, 1, "turn failed:", None),
    "gemini/success": (Status.SUCCESS, 0, None, None),
    "gemini/denied": (
        Status.FAILURE,
        0,
        "permission denied: write_file: Path not in workspace",
        None,
    ),
    "gemini/http429": (Status.THROTTLED, 173, "Resource exhausted", 7.0),
    "gemini/http529": (Status.THROTTLED, 17, "Overloaded (HTTP 529)", None),
    "gemini/http400": (Status.FAILURE, 144, "Invalid argument (HTTP 400)", None),
    "aider/success": (Status.SUCCESS, 0, None, None),
    "aider/refused": (Status.FAILURE, 0, "permission denied: edit outside the repository", None),
    "aider/http401": (Status.FAILURE, 0, "AuthenticationError: OpenAIException - Incorrect", None),
    "aider/http429": (Status.THROTTLED, 0, "RateLimitError: OpenAIException - Rate limit", 7.0),
    "aider/http529": (Status.THROTTLED, 0, "APIError: OpenAIException - Overloaded", None),
}


def test_every_fixture_has_an_expectation() -> None:
    assert sorted(EXPECTED) == ALL


@pytest.mark.parametrize("name", ALL)
def test_captured_output_reads_as_the_cli_meant(name: str) -> None:
    status, exit_code, reason, retry = EXPECTED[name]
    run = captured(name)
    report = run.parse()
    assert run.exit_code == exit_code
    assert report.status is status, report
    if reason is None:
        assert report.reason is None
    else:
        assert (report.reason or "").startswith(reason), report.reason
    assert report.retry_after_s == retry


@pytest.mark.parametrize("name", ALL)
def test_stderr_merged_into_stdout_reads_the_same(name: str) -> None:
    # The engine logs an agent's stdout and stderr into one file.
    run = captured(name)
    merged = dialects.parse(
        DIALECTS[run.cli], stdout=run.stdout + run.stderr, exit_code=run.exit_code, argv=run.argv
    )
    assert merged == run.parse()


@pytest.mark.parametrize("name", ALL)
def test_reading_in_small_chunks_reads_the_same(name: str) -> None:
    run = captured(name)
    reader = Reader(DIALECTS[run.cli], argv=run.argv)
    for i in range(0, len(run.stdout), 7):
        reader.feed(run.stdout[i : i + 7])
    assert reader.result(exit_code=run.exit_code, stderr=run.stderr) == run.parse()


@pytest.mark.parametrize(
    ("name", "usage", "cost", "model", "session"),
    [
        ("claude/success", Usage(2400, 100, 400), 0.01008, "claude-opus-5-5", True),
        ("codex/success", Usage(2000, 100, 400), None, None, True),
        ("gemini/success", Usage(2000, 100, 400), None, "gemini-scripted-1", True),
        ("aider/success", Usage(661, 13, 0), 0.00071, "openai/scripted-1", False),
    ],
)
def test_usage_cost_model_and_session(
    name: str, usage: Usage, cost: float | None, model: str | None, session: bool
) -> None:
    report = captured(name).parse()
    assert report.usage == usage
    assert report.cost_usd == cost
    assert report.model == model
    assert bool(report.session_id) is session
    assert report.summary


def test_the_summary_is_the_final_message() -> None:
    assert captured("claude/success").parse().summary == "Wrote hello.txt."
    assert captured("codex/success").parse().summary == "Wrote hello.txt."
    assert captured("gemini/success").parse().summary == "Wrote hello.txt."
    assert (captured("aider/success").parse().summary or "").startswith("Writing the file.")


def test_a_long_summary_is_truncated() -> None:
    out = json.dumps({"type": "result", "subtype": "success", "result": "x" * 5000}).encode()
    summary = dialects.parse("claude-json", stdout=out, exit_code=0).summary or ""
    assert len(summary) == dialects.SUMMARY_CHARS
    assert summary.endswith("…")


def test_claude_usage_grows_while_it_streams() -> None:
    run = captured("claude/success")
    reader = Reader(Dialect.CLAUDE_JSON)
    seen: list[Usage | None] = []
    for line in run.stdout.splitlines(keepends=True):
        reader.feed(line)
        seen.append(reader.usage())
    assert seen[0] is None, "nothing reported before the first model call"
    partial = [u for u in seen if u is not None]
    assert partial[0].input_tokens == 1200, "the first call's input, before the result"
    assert partial[-1] == Usage(2400, 100, 400), "the result's totals at the end"
    assert reader.cost_usd() == 0.01008


def test_a_denial_after_a_successful_edit_is_not_a_failure() -> None:
    lines = [
        {"type": "system", "subtype": "init", "session_id": "s", "model": "m"},
        {
            "type": "assistant",
            "message": {
                "id": "m1",
                "content": [{"type": "tool_use", "id": "t1", "name": "Write", "input": {}}],
            },
        },
        {
            "type": "user",
            "message": {"content": [{"type": "tool_result", "tool_use_id": "t1"}]},
        },
        {
            "type": "result",
            "subtype": "success",
            "is_error": False,
            "result": "Wrote it; could not run the tests.",
            "permission_denials": [{"tool_name": "Bash", "tool_input": {"command": "make test"}}],
        },
    ]
    out = "\n".join(json.dumps(line) for line in lines).encode()
    report = dialects.parse("claude-json", stdout=out, exit_code=0)
    assert report.status is Status.SUCCESS
    assert report.denials == ("Bash make test",)


@pytest.mark.parametrize("cli", sorted(DIALECTS))
def test_no_output_is_a_failure_with_the_exit_code(cli: str) -> None:
    report = dialects.parse(DIALECTS[cli], stdout=b"command not found\n", exit_code=127)
    assert report.status is Status.FAILURE
    assert (report.reason or "").startswith("exit code 127"), report.reason
    assert "command not found" in (report.reason or "")


@pytest.mark.parametrize("cli", ["claude", "codex", "gemini"])
def test_exit_0_without_a_result_is_a_failure(cli: str) -> None:
    report = dialects.parse(DIALECTS[cli], stdout=b"", exit_code=0)
    assert report.status is Status.FAILURE
    assert report.reason


def test_plain_trusts_the_exit_code() -> None:
    ok = dialects.parse("plain", stdout=b"built\nall good\n", exit_code=0)
    assert ok == Report(Status.SUCCESS, summary="built\nall good")
    bad = dialects.parse("plain", stdout=b"compiling\n", stderr=b"error: boom\n", exit_code=2)
    assert bad.status is Status.FAILURE
    assert bad.reason == "exit code 2: compiling\nerror: boom"
    assert bad.usage is None and bad.cost_usd is None


# --- pricing ------------------------------------------------------------------------------


def test_cost_from_pricing_when_the_cli_reports_none() -> None:
    run = captured("codex/success")
    prices = {"gpt-scripted-1": Price(input=1.25, output=10.0, cached_input=0.125)}
    assert run.parse(pricing=prices).cost_usd is None, "codex names no model: unknown"
    with_model = dialects.parse(
        "codex-jsonl",
        stdout=run.stdout,
        exit_code=0,
        argv=("codex", "exec", "-m", "gpt-scripted-1", "--", "prompt"),
        pricing=prices,
    )
    assert with_model.model == "gpt-scripted-1"
    assert with_model.cost_usd == pytest.approx((1600 * 1.25 + 400 * 0.125 + 100 * 10.0) / 1e6)


def test_a_missing_price_is_unknown_never_0() -> None:
    run = captured("gemini/success")
    assert run.parse().cost_usd is None
    assert run.parse(pricing={"other-model": Price(1, 1)}).cost_usd is None
    assert run.parse(pricing={"gemini-scripted-1": Price(0, 0)}).cost_usd == 0


def test_the_clis_own_cost_wins_over_pricing() -> None:
    report = captured("claude/success").parse(pricing={"claude-opus-5-5": Price(100, 100)})
    assert report.cost_usd == 0.01008


def test_a_price_matches_the_model_without_its_provider_prefix() -> None:
    usage = Usage(1_000_000, 1_000_000, 0)
    assert dialects.price_of("openai/gpt-x", usage, {"gpt-x": Price(1, 2)}) == 3.0
    assert dialects.price_of("openai/gpt-x", usage, {"openai/gpt-x": Price(1, 1)}) == 2.0


def test_cached_input_costs_the_input_price_unless_given() -> None:
    usage = Usage(input_tokens=1000, output_tokens=0, cached_input_tokens=400)
    assert Price(input=1.0, output=0).cost(usage) == pytest.approx(1000 / 1e6)
    assert Price(input=1.0, output=0, cached_input=0.5).cost(usage) == pytest.approx(800 / 1e6)


# --- GITEXEC_RESULT_FILE ---------------------------------------------------------------------


def test_the_result_file_takes_precedence() -> None:
    run = captured("claude/success")
    result = json.dumps(
        {"status": "failure", "summary": "tests still fail", "usage": {"input_tokens": 5}}
    ).encode()
    report = run.parse(result_file=result)
    assert report.status is Status.FAILURE
    assert report.summary == "tests still fail"
    assert report.usage == Usage(5, 0, 0)
    assert report.session_id == run.parse().session_id, "unset fields keep what the CLI said"


def test_a_result_file_can_report_success_over_a_failing_exit() -> None:
    result = b'{"status": "success", "summary": "done", "cost_usd": 0.25, "model": "m"}'
    report = dialects.parse("plain", stdout=b"", exit_code=1, result_file=result)
    assert report.status is Status.SUCCESS
    assert report.reason is None
    assert report.cost_usd == 0.25


def test_a_failure_in_the_result_file_gives_a_reason() -> None:
    quiet = dialects.parse("plain", stdout=b"", exit_code=0, result_file=b'{"status": "failure"}')
    assert quiet.status is Status.FAILURE
    assert quiet.reason == "reported in GITEXEC_RESULT_FILE"
    said = b'{"status": "failure", "summary": "2 tests fail"}'
    assert dialects.parse("plain", stdout=b"", exit_code=0, result_file=said).reason == (
        "2 tests fail"
    )


def test_an_empty_result_file_is_ignored() -> None:
    report = dialects.parse("plain", stdout=b"ok\n", exit_code=0, result_file=b"  \n")
    assert report.status is Status.SUCCESS


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"{nope", "not valid JSON"),
        (b"[1]", "expected a JSON object"),
        (b'{"status": "done"}', "status: expected one of success, failure, throttled, got 'done'"),
        (b'{"status": "success", "cost_usd": -1}', "cost_usd: expected a non-negative number"),
        (b'{"status": "success", "usage": {"input_tokens": "many"}}', "usage.input_tokens"),
        (b'{"status": "success", "summary": 3}', "summary: expected a string"),
    ],
)
def test_a_malformed_result_file_is_a_failure_that_says_why(content: bytes, problem: str) -> None:
    report = dialects.parse("plain", stdout=b"", exit_code=0, result_file=content)
    assert report.status is Status.FAILURE
    assert (report.reason or "").startswith("GITEXEC_RESULT_FILE: ")
    assert problem in (report.reason or "")


def test_report_json_shape() -> None:
    report = captured("gemini/http429").parse()
    data = report.to_json()
    assert data["status"] == "throttled"
    assert data["retry_after_s"] == 7.0
    assert data["usage"] is None and data["cost_usd"] is None
    assert set(data) == {
        "status",
        "reason",
        "retry_after_s",
        "usage",
        "cost_usd",
        "model",
        "session_id",
        "summary",
        "denials",
    }
