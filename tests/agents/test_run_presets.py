"""Each preset through `git exec run`: the real CLI, pointed at the scripted model server by
config alone, completes its ticket and its file lands in the ticket's merge commit."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from gitexec.journal import read_records
from tests.agents import clis
from tests.agents.server import HttpError, Reply, ScriptedModel, Step, WriteFile
from tests.helpers import git
from tests.project import gitexec, make_project, ticket_yaml

CLIS_ALL = ("claude", "codex", "gemini", "aider")


def status_of(repo: Path, run_id: str) -> dict[str, Any]:
    code, out, err = gitexec(repo, "status", "--run", run_id, "--format", "json")
    assert code == 0, err
    result: dict[str, Any] = json.loads(out)
    return result


def config_for(cli: str, server: ScriptedModel, bin_dir: Path) -> str:
    """A config that only adds the environment pointing the preset at the server."""
    env = clis.cli_environment(cli, server.url, Path(os.environ["HOME"]))
    env["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    return f"version: 1\nagents:\n  {cli}:\n    env: {json.dumps(env)}\n"


@pytest.mark.parametrize("cli", CLIS_ALL)
def test_preset_completes_a_ticket_through_git_exec_run(cli: str, tmp_path: Path) -> None:
    exe = clis.binary(cli)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / cli).symlink_to(exe)
    script: list[Step] = (
        [WriteFile("hello.txt", "hello\n", note="Wrote hello.txt.")]
        if cli == "aider"
        else [WriteFile("hello.txt", "hello\n"), Reply("Wrote hello.txt.")]
    )
    with ScriptedModel(script) as server:
        repo = make_project(
            tmp_path / "repo",
            {"HELLO": ticket_yaml("HELLO", agent=cli, prompt="Write hello.txt saying hello.")},
            config=config_for(cli, server, bin_dir),
        )
        code, out, err = gitexec(repo, "run", "--no-monitor", "--run-id", "r1")
        prompts = [r.text() for r in server.main_requests()]
    log = repo / ".git" / "gitexec" / "runs" / "r1" / "logs" / "HELLO.log"
    assert code == 0, (out, err, log.read_text() if log.exists() else "")
    assert git(repo, "show", "gitexec/r1:hello.txt") == "hello\n"
    files = git(repo, "show", "--first-parent", "-m", "--name-only", "--format=", "gitexec/r1")
    assert "hello.txt" in files.split()
    assert "Write hello.txt saying hello." in prompts[0]


# --- honest outcomes and the ledger, through `git exec run` ------------------------------------

FAST = ("claude", "codex", "gemini")  # aider waits out a throttle itself for about a minute
PRICED = {  # a pricing table for the models the CLIs report that carry no cost themselves
    "codex": "gpt-scripted-1",
    "gemini": "gemini-scripted-1",
    "aider": "scripted-1",
}


def project_for(cli: str, tmp_path: Path, server: ScriptedModel, **ticket: Any) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if not (bin_dir / cli).exists():
        (bin_dir / cli).symlink_to(clis.binary(cli))
    config = config_for(cli, server, bin_dir) + "retry_backoff: 0.2s\n"
    if cli in PRICED:
        config += f"pricing:\n  {PRICED[cli]}: {{input: 2.0, output: 8.0}}\n"
    fields = {"agent": cli, "prompt": "Write hello.txt saying hello.", **ticket}
    return make_project(tmp_path / "repo", {"HELLO": ticket_yaml("HELLO", **fields)}, config=config)


def write_hello(cli: str) -> list[Step]:
    if cli == "aider":
        return [WriteFile("hello.txt", "hello\n", note="Wrote hello.txt.")]
    return [WriteFile("hello.txt", "hello\n"), Reply("Wrote hello.txt.")]


@pytest.mark.parametrize("cli", CLIS_ALL)
def test_the_ledger_records_what_each_attempt_cost(cli: str, tmp_path: Path) -> None:
    with ScriptedModel(write_hello(cli)) as server:
        repo = project_for(cli, tmp_path, server)
        code, out, err = gitexec(repo, "run", "--no-monitor", "--run-id", "led")
    assert code == 0, out + err
    st = status_of(repo, "led")
    t = st["tickets"]["HELLO"]
    assert t["usage"]["input_tokens"] > 0 and t["usage"]["output_tokens"] > 0
    m = st["metrics"]
    if cli == "codex":  # codex names no model in its output: its price is unknown, not 0
        assert t["cost_usd"] is None and m["cost_usd"] is None
    else:  # reported by the CLI (claude), or from the pricing table
        assert t["cost_usd"] is not None and t["cost_usd"] > 0
        assert m["cost_usd"] == pytest.approx(t["cost_usd"])
    assert t["session_id"] or cli == "aider"
    assert t["summary"]
    assert t["failed_attempts"] == 0
    assert m["input_tokens"] == t["usage"]["input_tokens"]
    recorded = git(repo, "show", "gitexec/led:.gitexec/tickets/HELLO.yaml")
    assert "input_tokens:" in recorded
    assert ("cost_usd:" in recorded) == (t["cost_usd"] is not None)


@pytest.mark.parametrize("cli", FAST)
def test_throttled_then_completed_counts_no_failed_attempt(cli: str, tmp_path: Path) -> None:
    limited = HttpError(
        429, "Rate limit reached. Please try again in 1s.", retry_after_s=1, times=2
    )
    with ScriptedModel([limited, *write_hello(cli)]) as server:
        repo = project_for(cli, tmp_path, server)
        code, out, err = gitexec(repo, "run", "--no-monitor", "--run-id", "thr")
    assert code == 0, out + err
    t = status_of(repo, "thr")["tickets"]["HELLO"]
    assert t["status"] == "completed"
    assert t["throttled"] >= 1
    assert t["failed_attempts"] == 0
    assert t["attempts"] == t["throttled"] + 1
    kinds = [e["event"] for e in read_records(repo / ".git/gitexec/runs/thr/journal.jsonl")]
    assert "ticket-throttled" in kinds and "ticket-retry" not in kinds


@pytest.mark.parametrize("cli", FAST)
def test_an_error_reported_with_exit_0_fails_the_ticket_in_the_agents_words(
    cli: str, tmp_path: Path
) -> None:
    with ScriptedModel([HttpError(400, "Internal failure", times=None)]) as server:
        repo = project_for(cli, tmp_path, server, retries=0)
        code, out, err = gitexec(repo, "run", "--no-monitor", "--run-id", "err")
    assert code == 1, out + err
    t = status_of(repo, "err")["tickets"]["HELLO"]
    assert t["status"] == "failed"
    assert "Internal failure" in t["reason"]


def test_a_user_agent_reports_through_its_result_file(tmp_path: Path) -> None:
    report = (
        '{"status": "success", "summary": "did it", "usage": {"input_tokens": 10, '
        '"output_tokens": 2}, "cost_usd": 0.25, "session_id": "s-1", "model": "mine-1"}'
    )
    failing = '{"status": "failure", "summary": "gave up: no access to the API"}'
    config = "version: 1\nagents:\n  mine:\n    command: [sh, -c, '{{ ticket.run }}']\n"
    repo = make_project(
        tmp_path / "r",
        {
            "OK": ticket_yaml(
                "OK",
                agent="mine",
                run=f"echo x > x; printf '%s' '{report}' > \"$GITEXEC_RESULT_FILE\"",
            ),
            "NO": ticket_yaml(
                "NO", agent="mine", run=f"printf '%s' '{failing}' > \"$GITEXEC_RESULT_FILE\""
            ),
        },
        config=config,
    )
    code, out, err = gitexec(repo, "run", "--no-monitor", "--run-id", "rf")
    assert code == 1, out + err
    st = status_of(repo, "rf")
    ok = st["tickets"]["OK"]
    assert ok["status"] == "completed"
    assert ok["cost_usd"] == 0.25 and ok["session_id"] == "s-1" and ok["model"] == "mine-1"
    assert ok["summary"] == "did it"
    no = st["tickets"]["NO"]
    assert no["status"] == "failed"  # it exited 0, but said it failed
    assert "gave up: no access to the API" in no["reason"]
    assert st["metrics"]["cost_usd"] == 0.25
