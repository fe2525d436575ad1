"""The built-in presets against the real, pinned agent CLIs and the scripted model server.

Each test runs a preset's command as the engine renders it (a ticket's prompt, stdin
closed, the preset's environment) in a real `git worktree`, and reads the output with the
preset's dialect. The CLIs come from tests/agents/install-clis; without them these tests
skip, unless GITEXEC_REQUIRE_AGENT_CLIS=1 (CI) makes that a failure.
"""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gitexec.config import AgentSpec
from gitexec.dialects import Dialect, Price, Status
from tests.agents import clis
from tests.agents.server import HttpError, Reply, ScriptedModel, Step, WriteFile
from tests.helpers import git

CLIS = ("claude", "codex", "gemini", "aider")
FAST_CLIS = ("claude", "codex", "gemini")  # aider retries throttles itself for ~60 s
RATE_LIMITED = "Rate limit reached for requests. Please try again in 7s."


def write_then_reply(cli: str, path: str, content: str, reply: str) -> list[Step]:
    """The CLI's own edit tool writes the file, then the model answers. aider takes its
    edits from the answer itself, so it makes a single call."""
    if cli == "aider":
        return [WriteFile(path, content, note=reply)]
    return [WriteFile(path, content), Reply(reply)]


def changed_paths(worktree: Path) -> set[str]:
    out = git(worktree, "status", "--porcelain", "--untracked-files=all")
    return {line[3:] for line in out.splitlines()}


@pytest.fixture
def outside(tmp_path: Path) -> Iterator[Path]:
    """A path outside the worktree and outside /tmp (Codex's sandbox lets agents write
    /tmp), never written by a test that passes; removed in case."""
    path = Path("/var/tmp") / f"gitexec-test-{uuid.uuid4().hex}.txt"
    yield path
    path.unlink(missing_ok=True)


@pytest.mark.parametrize("cli", CLIS)
def test_preset_writes_the_file_with_the_clis_own_tool(
    cli: str, model: ScriptedModel, worktree: Path, home: Path
) -> None:
    model.set_script(
        write_then_reply(cli, "hello.txt", "hello from the agent\n", "Wrote hello.txt.")
    )
    run = clis.run_agent(clis.preset(cli), model, worktree, home)
    report = run.report()

    assert run.exit_code == 0, run.describe()
    assert (worktree / "hello.txt").read_text() == "hello from the agent\n"
    assert changed_paths(worktree) == {"hello.txt"}, "the preset leaves nothing else behind"
    assert report.status is Status.SUCCESS, run.describe()
    assert report.reason is None
    assert report.usage is not None and report.usage.input_tokens > 0
    assert report.usage.output_tokens > 0
    assert "Wrote hello.txt." in (report.summary or "")
    assert model.exhausted == 0
    first = model.main_requests()[0]
    assert "You are working on ticket T-1" in first.text(), "the ticket's prompt reached the model"
    if cli in ("claude", "codex", "gemini"):
        assert report.session_id
        assert report.usage.cached_input_tokens == 200 * len(model.main_requests())
    if cli in ("claude", "aider"):  # these two price their own usage
        assert report.cost_usd is not None and report.cost_usd > 0
        assert report.model
    if cli == "gemini":
        assert report.model == clis.MODELS["gemini"]
        assert report.cost_usd is None, "no price, no cost: unknown, never 0"
        priced = run.report(pricing={"gemini-scripted-1": Price(1.0, 4.0, 0.1)})
        usage = report.usage
        expected = ((usage.input_tokens - 400) * 1.0 + 400 * 0.1 + usage.output_tokens * 4.0) / 1e6
        assert priced.cost_usd == pytest.approx(expected)


def test_codex_cost_comes_from_pricing_for_the_model_named_in_its_command(
    model: ScriptedModel, worktree: Path, home: Path
) -> None:
    # Codex reports no cost and no model: the model named with -m prices the usage.
    model.set_script(write_then_reply("codex", "a.txt", "a\n", "Done."))
    spec = clis.with_args(clis.preset("codex"), "-m", clis.MODELS["codex"])
    run = clis.run_agent(spec, model, worktree, home)
    report = run.report(pricing={clis.MODELS["codex"]: Price(input=2.0, output=8.0)})
    assert report.status is Status.SUCCESS, run.describe()
    assert report.model == clis.MODELS["codex"]
    assert report.usage is not None
    expected = (report.usage.input_tokens * 2.0 + report.usage.output_tokens * 8.0) / 1e6
    assert report.cost_usd == pytest.approx(expected)
    assert model.main_requests()[0].body["model"] == clis.MODELS["codex"]


@pytest.mark.parametrize("cli", CLIS)
def test_a_write_outside_the_worktree_is_a_failure_though_the_cli_exits_0(
    cli: str, model: ScriptedModel, worktree: Path, home: Path, outside: Path
) -> None:
    model.set_script(write_then_reply(cli, str(outside), "x\n", "I could not write it."))
    if cli == "aider":  # aider asks the model to fix its edit once
        model.set_script([WriteFile(str(outside), "x\n"), Reply("I could not write it.")])
    run = clis.run_agent(clis.preset(cli), model, worktree, home)
    report = run.report()

    assert run.exit_code == 0, run.describe()
    assert not outside.exists()
    assert changed_paths(worktree) == set()
    assert report.status is Status.FAILURE, run.describe()
    kind = "sandbox blocked" if cli == "codex" else "permission denied"
    assert (report.reason or "").startswith(kind), report.reason
    assert str(outside) in (report.reason or "") or cli == "codex", report.reason
    assert report.denials


@pytest.mark.parametrize("cli", FAST_CLIS)
@pytest.mark.parametrize("status", [429, 529])
def test_throttled_then_success(
    cli: str, status: int, model: ScriptedModel, worktree: Path, home: Path
) -> None:
    message = RATE_LIMITED if status == 429 else "Overloaded"
    model.set_script([HttpError(status, message, retry_after_s=7, times=None)])
    run = clis.run_agent(clis.preset(cli), model, worktree, home)
    report = run.report()
    assert report.status is Status.THROTTLED, run.describe()
    assert report.reason
    if status == 429 and cli != "codex":  # codex does not say what the server asked for
        assert report.retry_after_s == 7
    assert not (worktree / "hello.txt").exists()

    # The engine waits and runs the ticket again; now the provider answers.
    model.set_script(write_then_reply(cli, "hello.txt", "hello\n", "Wrote hello.txt."))
    again = clis.run_agent(clis.preset(cli), model, worktree, home)
    assert again.report().status is Status.SUCCESS, again.describe()
    assert (worktree / "hello.txt").read_text() == "hello\n"


def test_aider_gives_up_on_a_throttle_with_exit_0_and_reads_as_throttled(tmp_path: Path) -> None:
    # aider retries rate limits and overloads itself for about a minute, then exits 0 with
    # nothing done; both cases run side by side to keep the test at that one minute.
    def attempt(status: int) -> clis.Run:
        root = tmp_path / str(status)
        message = RATE_LIMITED if status == 429 else "Overloaded"
        with ScriptedModel([HttpError(status, message, retry_after_s=7, times=None)]) as server:
            return clis.run_agent(
                clis.preset("aider"), server, clis.make_worktree(root), root / "home"
            )

    clis.binary("aider")
    with ThreadPoolExecutor(max_workers=2) as pool:
        rate_limited, overloaded = pool.map(attempt, (429, 529))
    for run in (rate_limited, overloaded):
        assert run.exit_code == 0, run.describe()
        assert run.report().status is Status.THROTTLED, run.describe()
    assert rate_limited.report().retry_after_s == 7
    assert "Overloaded" in (overloaded.report().reason or "")


@pytest.mark.parametrize(
    ("cli", "status", "words"),
    [
        ("claude", 500, "API Error: 500 Internal failure"),
        ("codex", 400, "Internal failure"),
        ("gemini", 400, "Internal failure"),
        ("aider", 401, "Internal failure"),
    ],
)
def test_an_api_error_is_a_failure_in_the_agents_own_words(
    cli: str, status: int, words: str, model: ScriptedModel, worktree: Path, home: Path
) -> None:
    model.set_script([HttpError(status, "Internal failure", times=None)])
    run = clis.run_agent(clis.preset(cli), model, worktree, home)
    report = run.report()
    assert report.status is Status.FAILURE, run.describe()
    assert words in (report.reason or ""), report.reason
    if cli == "aider":
        assert run.exit_code == 0, "aider reports the error and exits 0"


@pytest.mark.parametrize("cli", FAST_CLIS)
def test_resume_command_continues_the_session(
    cli: str, model: ScriptedModel, worktree: Path, home: Path
) -> None:
    model.set_script(write_then_reply(cli, "one.txt", "1\n", "First part done."))
    first = clis.run_agent(clis.preset(cli), model, worktree, home)
    session = first.report().session_id
    assert session, first.describe()
    before = len(model.requests)

    model.set_script(write_then_reply(cli, "two.txt", "2\n", "Second part done."))
    second = clis.run_agent(
        clis.preset(cli), model, worktree, home, prompt="Now the second part.", session_id=session
    )
    report = second.report()
    assert report.status is Status.SUCCESS, second.describe()
    assert (worktree / "two.txt").read_text() == "2\n"
    resumed = next(r for r in model.requests[before:] if r.main).text()
    assert "First part done." in resumed, "the earlier turns were sent again"
    assert "Now the second part." in resumed
    if cli != "gemini":  # gemini starts a new session id for the resumed run's report
        assert report.session_id == session


def test_a_user_agent_reports_through_gitexec_result_file(
    model: ScriptedModel, worktree: Path, home: Path
) -> None:
    script = (
        "echo working; echo done > out.txt; "
        'printf \'%s\' \'{"status": "throttled", "retry_after_s": 30, "summary": "quota", '
        '"usage": {"input_tokens": 10, "output_tokens": 2}, "cost_usd": 0.5, '
        '"session_id": "s-1", "model": "mine-1"}\' > "$GITEXEC_RESULT_FILE"'
    )
    spec = AgentSpec("mine", ("sh", "-c", script), dialect=Dialect.PLAIN)
    run = clis.run_agent(spec, model, worktree, home)
    assert run.exit_code == 0
    report = run.report()
    assert report.status is Status.THROTTLED
    assert report.retry_after_s == 30
    assert report.summary == "quota"
    assert report.cost_usd == 0.5
    assert report.session_id == "s-1"
    assert report.model == "mine-1"
    assert report.usage is not None and report.usage.input_tokens == 10


@pytest.mark.parametrize("cli", CLIS)
def test_presets_reach_nothing_but_the_model_server(
    cli: str, model: ScriptedModel, worktree: Path, home: Path, tmp_path: Path
) -> None:
    # No telemetry, update checks or price lists: every connection the CLI and its
    # children open goes to the scripted server.
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed")
    model.set_script(write_then_reply(cli, "hello.txt", "hello\n", "Wrote hello.txt."))
    trace = tmp_path / "connects.txt"
    wrapper = (strace, "-f", "-qq", "-e", "trace=connect", "-o", str(trace))
    run = clis.run_agent(clis.preset(cli), model, worktree, home, wrapper=wrapper)
    assert run.report().status is Status.SUCCESS, run.describe()
    port = model.url.rsplit(":", 1)[1]
    inet = re.compile(r"sin6?_port=htons\((\d+)\), (?:sin_addr=inet_addr|inet_pton)\(([^)]*)\)")
    targets = {m.groups() for m in inet.finditer(trace.read_text())}
    assert targets, "strace saw the connection to the server"
    assert targets <= {(port, '"127.0.0.1"')}, targets
