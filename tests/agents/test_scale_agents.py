"""Agents at scale with the real Claude Code CLI against the scripted model server:
a shared quota pool riding out a rate limit, a retry continuing the agent's session, and
a dependent ticket's prompt saying what its dependency did."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gitexec.journal import read_records
from tests.agents.server import HttpError, Reply, ScriptedModel, Step, WriteFile
from tests.agents.test_run_presets import project_for, status_of
from tests.helpers import commit_all
from tests.project import gitexec, ticket_yaml

LIMITED = "Rate limit reached. Please try again in 1s."


def journal(repo: Path, run_id: str) -> list[dict[str, Any]]:
    return read_records(repo / f".git/gitexec/runs/{run_id}/journal.jsonl")


def test_a_rate_limit_pauses_the_shared_pool_and_nothing_counts_as_failed(
    tmp_path: Path,
) -> None:
    steps: list[Step] = [WriteFile("hello.txt", "hello\n"), Reply("Wrote hello.txt.")] * 3
    limited = HttpError(429, LIMITED, retry_after_s=1, times=3)
    with ScriptedModel([limited, *steps]) as server:
        repo = project_for("claude", tmp_path, server)
        (repo / ".gitexec/tickets").joinpath("B.yaml").write_text(
            ticket_yaml("B", agent="claude", prompt="Write hello.txt.")
        )
        (repo / ".gitexec/tickets").joinpath("C.yaml").write_text(
            ticket_yaml("C", agent="claude", prompt="Write hello.txt.")
        )
        commit_all(repo, "more tickets")
        code, out, err = gitexec(repo, "run", "--no-monitor", "--run-id", "q", "--jobs", "3")
    assert code == 0, out + err
    st = status_of(repo, "q")
    assert {t["status"] for t in st["tickets"].values()} == {"completed"}
    assert all(t["failed_attempts"] == 0 for t in st["tickets"].values())
    assert st["quotas"]["claude"]["throttled_count"] >= 1
    kinds = [e["event"] for e in journal(repo, "q")]
    assert "quota-paused" in kinds and "quota-probing" in kinds and "quota-opened" in kinds


def test_a_retry_continues_the_agents_session(tmp_path: Path) -> None:
    flag = tmp_path / "validated-once"
    script: list[Step] = [
        WriteFile("one.txt", "1\n"),
        Reply("First part done."),
        WriteFile("two.txt", "2\n"),
        Reply("Second part done."),
    ]
    with ScriptedModel(script) as server:
        repo = project_for(
            "claude",
            tmp_path,
            server,
            retries=1,
            validate=[f"test -f {flag} || (touch {flag}; exit 1)"],
        )
        code, out, err = gitexec(repo, "run", "--no-monitor", "--run-id", "s")
        requests = server.main_requests()
    assert code == 0, out + err
    t = status_of(repo, "s")["tickets"]["HELLO"]
    assert t["attempts"] == 2
    first_session = next(
        e["session_id"] for e in journal(repo, "s") if e["event"] == "agent-reported"
    )
    second = [r for r in requests if "First part done." in r.text()]
    assert second, "the retry's requests carry the first attempt's turns"
    started = [e for e in journal(repo, "s") if e["event"] == "agent-started"]
    assert started[0]["slot"] == started[1]["slot"]  # where the session lives
    argv_log = (repo / ".git/gitexec/runs/s/logs/HELLO.log").read_text()
    assert argv_log.count("=== HELLO attempt") == 2
    assert first_session


def test_a_dependent_tickets_prompt_says_what_its_dependency_did(tmp_path: Path) -> None:
    script: list[Step] = [
        WriteFile("hello.txt", "hello\n"),
        Reply("Wrote hello.txt with a greeting."),
        Reply("Documented it."),
    ]
    with ScriptedModel(script) as server:
        repo = project_for("claude", tmp_path, server)
        (repo / ".gitexec/tickets/DOC.yaml").write_text(
            ticket_yaml("DOC", agent="claude", depends_on=["HELLO"], prompt="Document hello.")
        )
        commit_all(repo, "a dependent ticket")
        code, out, err = gitexec(repo, "run", "--no-monitor", "--run-id", "h")
        prompts = [r.text() for r in server.main_requests() if "Document hello." in r.text()]
    assert code == 0, out + err
    assert prompts
    prompt = json.loads(prompts[0])
    text = json.dumps(prompt)
    assert "HELLO" in text and "hello.txt (+1 -0)" in text
    assert "Wrote hello.txt with a greeting." in text
