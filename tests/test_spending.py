"""Agents at scale, through the CLI: budgets, shared quota pools, context hand-off.

The agents here are shell commands that report through GITEXEC_RESULT_FILE (what they
cost, or that the provider throttled them), so every outcome is exact; the real CLIs
meet the same machinery in tests/agents.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from gitexec.journal import read_records
from tests.helpers import wait_for
from tests.project import gitexec, make_project, status, ticket_yaml


def journal(repo: Path, run_id: str) -> list[dict[str, Any]]:
    return read_records(repo / f".git/gitexec/runs/{run_id}/journal.jsonl")


def reporting_agent(cost: float, *, extra: str = "") -> str:
    """A config agent `paid`: runs the ticket's command, then reports its cost."""
    report = json.dumps({"status": "success", "cost_usd": cost, "summary": "done"})
    return (
        "version: 1\nagents:\n  paid:\n"
        f"    command: [sh, -c, '{{{{ ticket.run }}}}; printf %s {json.dumps(report)} > \"$GITEXEC_RESULT_FILE\"']\n"
        + extra
    )


# --- budgets -----------------------------------------------------------------------------------


def test_a_run_stops_at_its_budget_and_resumes_with_a_larger_one(tmp_path: Path) -> None:
    tickets = {t: ticket_yaml(t, agent="paid", run=f"echo {t} > {t}.txt") for t in "ABCD"}
    repo = make_project(tmp_path / "r", tickets, config=reporting_agent(0.3))
    code, out, err = gitexec(
        repo, "run", "--no-monitor", "--run-id", "b", "--jobs", "1", "--budget-usd", "0.5"
    )
    assert code == 1, out + err
    st = status(repo, "b")
    assert st["state"] == "stopped"
    assert st["reason"] == "budget"
    assert st["metrics"]["completed"] == 2  # 0.3 spent: go on; 0.6: stop
    assert st["metrics"]["cost_usd"] == 0.6
    started = [e["ticket"] for e in journal(repo, "b") if e["event"] == "agent-started"]
    assert len(started) == 2  # the ticket prepared in the spare slot never started
    assert any(e["event"] == "budget-reached" for e in journal(repo, "b"))

    # Resumed with the same budget: nothing new starts.
    code, out, err = gitexec(repo, "resume", "--run", "b", "--no-monitor")
    assert code == 1, out + err
    assert status(repo, "b")["reason"] == "budget"
    assert len([e for e in journal(repo, "b") if e["event"] == "agent-started"]) == 2

    code, out, err = gitexec(repo, "resume", "--run", "b", "--budget-usd", "2", "--no-monitor")
    assert code == 0, out + err
    st = status(repo, "b")
    assert st["state"] == "completed"
    assert st["metrics"]["cost_usd"] == 1.2
    assert st["budget"]["run_usd"] == 2.0


def test_a_ticket_over_its_budget_fails_with_reason_budget(tmp_path: Path) -> None:
    repo = make_project(
        tmp_path / "r",
        {
            "A": ticket_yaml("A", agent="paid", run="echo a > a", budget_usd=0.2),
            "B": ticket_yaml("B", agent="paid", run="echo b > b"),
        },
        config=reporting_agent(0.3, extra="budget:\n  ticket_usd: 1.0\n"),
    )
    code, out, err = gitexec(repo, "run", "--no-monitor", "--run-id", "tb")
    assert code == 1, out + err
    st = status(repo, "tb")
    assert st["tickets"]["A"]["status"] == "failed"
    assert st["tickets"]["A"]["reason"].startswith("budget:")
    assert st["tickets"]["B"]["status"] == "completed"  # within the config's ticket budget


def test_a_streaming_attempt_over_its_budget_is_stopped_while_it_runs(tmp_path: Path) -> None:
    """An agent printing claude's stream-json usage as it goes (a million input tokens
    per message, at $1 per million) is stopped once its attempt costs more than $2.5."""
    message = (
        '{"type": "assistant", "message": {"id": "m%s", "model": "m", "content": '
        '[{"type": "text", "text": "working"}], "usage": {"input_tokens": 1000000, '
        '"output_tokens": 0}}}'
    )
    script = f"n=0; while true; do n=$((n + 1)); printf '{message}\\n' $n; sleep 0.2; done"
    config = (
        "version: 1\npricing:\n  m: {input: 1.0, output: 1.0}\nagents:\n  streamer:\n"
        "    dialect: claude-json\n"
        f"    command: [sh, -c, {json.dumps(script)}]\n"
    )
    repo = make_project(
        tmp_path / "r",
        {"S": ticket_yaml("S", agent="streamer", budget_usd=2.5, timeout="60s")},
        config=config,
    )
    code, out, err = gitexec(repo, "run", "--no-monitor", "--run-id", "st")
    assert code == 1, out + err
    t = status(repo, "st")["tickets"]["S"]
    assert t["status"] == "failed"
    assert t["reason"].startswith("budget:"), t["reason"]
    assert 2.5 < t["cost_usd"] < 10  # stopped soon after it went over


# --- quota pools -------------------------------------------------------------------------------


def throttling_agent(attempts: Path, throttled: int, retry_after: int) -> str:
    """Agents `a1` and `a2`, one provider account (`acct`): the first `throttled` requests
    to the account are throttled with a retry-after, the rest are served."""
    script = (
        f"n=0; while ! mkdir {attempts}/$n 2>/dev/null; do n=$((n + 1)); done; "
        f'if [ "$n" -lt {throttled} ]; then '
        f'printf \'{{"status": "throttled", "retry_after_s": {retry_after}, "summary": "429"}}\' '
        '> "$GITEXEC_RESULT_FILE"; '
        "else echo $GITEXEC_TICKET > $GITEXEC_TICKET.txt; fi"
    )
    agent = f"    command: [sh, -c, {json.dumps(script)}]\n    quota: acct\n"
    return f"version: 1\nagents:\n  a1:\n{agent}  a2:\n{agent}"


def test_a_throttle_pauses_the_pool_then_a_probe_goes_first(tmp_path: Path) -> None:
    attempts = tmp_path / "attempts"
    attempts.mkdir()
    tickets = {t: ticket_yaml(t, agent="a1" if t in "AB" else "a2") for t in "ABCD"}
    repo = make_project(tmp_path / "r", tickets, config=throttling_agent(attempts, 2, 1))
    code, out, err = gitexec(repo, "run", "--no-monitor", "--run-id", "q", "--jobs", "4")
    assert code == 0, out + err
    st = status(repo, "q")
    assert {t["status"] for t in st["tickets"].values()} == {"completed"}
    assert all(t["failed_attempts"] == 0 for t in st["tickets"].values())
    assert sum(t["throttled"] for t in st["tickets"].values()) >= 1
    assert st["quotas"]["acct"]["state"] == "open"
    assert st["quotas"]["acct"]["throttled_count"] >= 1
    # While the pool probes, one ticket goes alone; the pool then opens or pauses again.
    probes: list[list[str]] = []
    for e in journal(repo, "q"):
        if e["event"] == "quota-probing":
            probes.append([])
        elif e["event"] in ("quota-opened", "quota-paused") and probes:
            probes[-1].append("|")  # the probe's answer
        elif e["event"] == "agent-started" and probes and "|" not in probes[-1]:
            probes[-1].append(e["ticket"])
    assert probes, "the pool never probed"
    assert all(len([t for t in p if t != "|"]) <= 1 for p in probes), probes


def test_a_provider_that_keeps_refusing_is_asked_less_often_then_given_up(
    tmp_path: Path,
) -> None:
    attempts = tmp_path / "attempts"
    attempts.mkdir()
    config = throttling_agent(attempts, 1000, 0) + "quotas:\n  acct: {max_wait: 3s}\n"
    repo = make_project(tmp_path / "r", {"A": ticket_yaml("A", agent="a1")}, config=config)
    code, out, err = gitexec(repo, "run", "--no-monitor", "--run-id", "qr")
    assert code == 1, out + err
    a = status(repo, "qr")["tickets"]["A"]
    assert a["status"] == "failed"
    assert "quota acct waited longer than its max_wait" in a["reason"]
    delays = [e["delay_s"] for e in journal(repo, "qr") if e["event"] == "quota-paused"]
    assert delays[0] == 0 and delays[1:] and all(d >= 2 for d in delays[1:])
    assert len(list(attempts.iterdir())) == len(delays) + 1  # the last refusal gives up


def test_a_quota_pause_survives_kill_9_and_resume(tmp_path: Path) -> None:
    attempts = tmp_path / "attempts"
    attempts.mkdir()
    repo = make_project(
        tmp_path / "r",
        {"A": ticket_yaml("A", agent="a1")},
        config=throttling_agent(attempts, 1, 3),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "gitexec", "run", "--no-monitor", "--run-id", "qk"],
        cwd=repo,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: any(e["event"] == "quota-paused" for e in journal(repo, "qk")))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    paused = next(e for e in journal(repo, "qk") if e["event"] == "quota-paused")
    assert status(repo, "qk")["quotas"]["acct"]["state"] == "paused"
    code, out, err = gitexec(repo, "resume", "--run", "qk", "--no-monitor")
    assert code == 0, out + err
    events = journal(repo, "qk")
    resumed = max(n for n, e in enumerate(events) if e["event"] == "run-resumed")
    first = next(e for e in events[resumed:] if e["event"] == "ticket-dispatched")
    assert first["t"] >= paused["t"] + paused["delay_s"] - 0.05  # the pause was honoured
    assert status(repo, "qk")["tickets"]["A"]["failed_attempts"] == 0


# --- context hand-off --------------------------------------------------------------------------


def prompt_dumping(prompts: Path) -> str:
    """Agent `dump`: writes each prompt it gets to prompts/<ticket>.<n>, then runs its
    ticket's command and reports a summary."""
    script = (
        f'n=$(ls {prompts} | grep -c "^$GITEXEC_TICKET\\."); '
        f'printf "%s" "$1" > {prompts}/$GITEXEC_TICKET.$((n + 1)); '
        'sh -c "$2"; printf \'{"status": "success", "summary": "%s built it"}\' '
        '"$GITEXEC_TICKET" > "$GITEXEC_RESULT_FILE"'
    )
    return (
        "version: 1\nagents:\n  dump:\n"
        f"    command: [sh, -c, {json.dumps(script)}, dump, '{{{{ prompt }}}}', "
        "'{{ ticket.run }}']\n"
    )


def test_a_dependent_ticket_knows_what_its_dependency_did(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    repo = make_project(
        tmp_path / "r",
        {
            "API": ticket_yaml(
                "API", "Add the client", agent="dump", run="mkdir -p src && seq 3 > src/api.py"
            ),
            "DOC": ticket_yaml("DOC", "Document it", agent="dump", depends_on=["API"], run="true"),
        },
        config=prompt_dumping(prompts),
    )
    code, out, err = gitexec(repo, "run", "--no-monitor", "--run-id", "h")
    assert code == 0, out + err
    prompt = (prompts / "DOC.1").read_text()
    assert "API: Add the client" in prompt
    assert "src/api.py (+3 -0)" in prompt
    assert "Its agent said: API built it" in prompt


def test_a_conflict_rerun_is_shown_the_conflict(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    repo = make_project(
        tmp_path / "r",
        {
            "X": ticket_yaml("X", agent="dump", run="echo from-x > shared.txt"),
            "Y": ticket_yaml("Y", agent="dump", run="sleep 0.5; echo from-y > shared.txt"),
        },
        config=prompt_dumping(prompts) + "merge:\n  on_conflict: [rerun, fail]\n",
        files={"shared.txt": "base\n"},
    )
    code, out, err = gitexec(repo, "run", "--no-monitor", "--run-id", "c", "--allow-overlap")
    assert code == 0, out + err
    rerun = (prompts / "Y.2").read_text()
    assert "conflicted with work merged meanwhile in: shared.txt" in rerun
    assert "<<<<<<< integration (X)" in rerun and "from-x" in rerun and "from-y" in rerun
