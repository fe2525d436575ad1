"""Outcomes through `git exec run` when the CLI's exit code does not tell: a preset whose
CLI is a stand-in replaying captured output (tests/agents/fixtures) in the ticket's worktree,
so the dialect, the scheduler and the ticket file all see what the real CLI printed."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from gitexec.journal import read_records
from tests.project import gitexec, make_project, status, ticket_yaml

FIXTURES = Path(__file__).parent / "fixtures"

REPLAY = """\
import json, os, pathlib, sys
fixtures = pathlib.Path(os.environ["REPLAY_FIXTURES"])
plan = os.environ["REPLAY_PLAN"].split(",")
count = pathlib.Path(os.environ["REPLAY_COUNT"])
n = int(count.read_text()) if count.exists() else 0
count.write_text(str(n + 1))
name = plan[min(n, len(plan) - 1)]
if name == "success":
    pathlib.Path("hello.txt").write_text("hello\\n")
# The captured throttle asked for 7 s; a second is enough to show the wait.
sys.stdout.write((fixtures / f"{name}.stdout").read_text().replace("in 7s", "in 1s"))
sys.stderr.write((fixtures / f"{name}.stderr").read_text())
code = json.loads((fixtures / f"{name}.json").read_text())["exit_code"]
sys.exit(int(os.environ.get("REPLAY_EXIT", code)))
"""


def replaying(tmp_path: Path, cli: str, plan: str, **env: str) -> Path:
    """A project whose `cli` preset runs a stand-in replaying the fixtures named in `plan`
    (comma-separated, one per attempt, the last one repeated)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in = bin_dir / cli
    stand_in.write_text(f"#!{sys.executable}\n{REPLAY}", encoding="utf-8")
    stand_in.chmod(0o755)
    variables = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "REPLAY_FIXTURES": str(FIXTURES / cli),
        "REPLAY_PLAN": plan,
        "REPLAY_COUNT": str(tmp_path / "count"),
        **env,
    }
    config = f"version: 1\nagents:\n  {cli}:\n    env: {json.dumps(variables)}\n"
    ticket = ticket_yaml("HELLO", agent=cli, prompt="Write hello.txt saying hello.", retries=0)
    return make_project(tmp_path / "repo", {"HELLO": ticket}, config=config)


def exit_codes(repo: Path, run_id: str) -> list[int]:
    records = read_records(repo / f".git/gitexec/runs/{run_id}/journal.jsonl")
    return [r["exit_code"] for r in records if r["event"] == "agent-exited"]


def test_claude_reporting_an_api_error_with_exit_0_fails_the_ticket(tmp_path: Path) -> None:
    repo = replaying(tmp_path, "claude", "http500", REPLAY_EXIT="0")
    code, out, err = gitexec(repo, "run", "--no-monitor", "--run-id", "e0")
    assert code == 1, out + err
    assert exit_codes(repo, "e0") == [0]
    t = status(repo, "e0")["tickets"]["HELLO"]
    assert t["status"] == "failed"
    assert t["reason"].startswith("API Error: 500 Internal server error")


def test_claude_denied_everything_with_exit_0_fails_the_ticket(tmp_path: Path) -> None:
    repo = replaying(tmp_path, "claude", "denied")
    code, out, err = gitexec(repo, "run", "--no-monitor", "--run-id", "d0")
    assert code == 1, out + err
    assert exit_codes(repo, "d0") == [0]
    t = status(repo, "d0")["tickets"]["HELLO"]
    assert t["status"] == "failed"
    assert t["reason"].startswith("permission denied: ")


def test_aider_throttled_then_succeeding_completes_with_no_failed_attempt(
    tmp_path: Path,
) -> None:
    repo = replaying(tmp_path, "aider", "http429,success")
    code, out, err = gitexec(repo, "run", "--no-monitor", "--run-id", "th")
    assert code == 0, out + err
    assert exit_codes(repo, "th") == [0, 0]  # aider exits 0 after giving up on the throttle
    t = status(repo, "th")["tickets"]["HELLO"]
    assert t["status"] == "completed"
    assert (t["attempts"], t["throttled"], t["failed_attempts"]) == (2, 1, 0)
    assert t["cost_usd"] == 0.00071
    records = read_records(repo / ".git/gitexec/runs/th/journal.jsonl")
    kinds = [r["event"] for r in records]
    assert "ticket-throttled" in kinds and "ticket-retry" not in kinds
