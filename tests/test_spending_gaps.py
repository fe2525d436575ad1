"""Budgets and quota pools through the CLI, where a live run meets them: `adjust --quota`
(live and across kill -9), a pool's `max_parallel`, `budget.hard`, a ticket's budget over
several attempts, spend remembered after a crash, throttled time, resumed sessions, and
where throttles are shown.

Agents are shell commands reporting through GITEXEC_RESULT_FILE, so every outcome is exact.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from gitexec.journal import read_records
from tests.helpers import until_file, wait_for
from tests.project import gitexec, make_project, status, ticket_yaml


def journal(repo: Path, run_id: str) -> list[dict[str, Any]]:
    return read_records(repo / f".git/gitexec/runs/{run_id}/journal.jsonl")


def at_once(events: list[dict[str, Any]]) -> tuple[int, int]:
    """(most, now): agents running at once at most, and at the end of `events`, by the
    journal's agent-started and agent-exited lines."""
    agents: set[str] = set()
    most = 0
    for e in events:
        if e["event"] == "agent-started":
            agents.add(e["ticket"])
            most = max(most, len(agents))
        elif e["event"] == "agent-exited":
            agents.discard(e["ticket"])
        elif e["event"] == "run-resumed":  # what the crash cut off never exited
            agents.clear()
    return most, len(agents)


def most_at_once(events: list[dict[str, Any]]) -> int:
    return at_once(events)[0]


def agents_running(repo: Path, run_id: str) -> int:
    return at_once(journal(repo, run_id))[1]


class Live:
    """`git exec run` (or `resume`) in a subprocess."""

    def __init__(self, repo: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gitexec", *args, "--no-monitor"],
            cwd=repo,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def finish(self) -> tuple[int, str]:
        out, err = self.proc.communicate(timeout=120)
        return self.proc.returncode, out + err

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.communicate(timeout=30)


def gated(tid: str, gate: Path, agent: str) -> str:
    """A ticket whose agent waits for `gate` to exist."""
    run = f"{until_file(gate)}; echo {tid} > {tid}.txt"
    return ticket_yaml(tid, agent=agent, run=run)


def pooled(max_parallel: int | None = None) -> str:
    """Agents `a1` and `a2` drawing on one provider account (quota pool `acct`)."""
    agent = "    command: [sh, -c, '{{ ticket.run }}']\n    quota: acct\n"
    config = f"version: 1\nagents:\n  a1:\n{agent}  a2:\n{agent}"
    if max_parallel is not None:
        config += f"quotas:\n  acct: {{max_parallel: {max_parallel}}}\n"
    return config


def pooled_project(tmp_path: Path, gate: Path, max_parallel: int | None, n: int = 4) -> Path:
    tickets = {f"T{i}": gated(f"T{i}", gate, "a1" if i % 2 else "a2") for i in range(n)}
    return make_project(tmp_path / "r", tickets, config=pooled(max_parallel))


# --- quota pools: max_parallel, adjust --quota ---------------------------------------------


def test_a_pools_max_parallel_limits_its_agents_together(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    repo = pooled_project(tmp_path, gate, max_parallel=2)
    live = Live(repo, "run", "--run-id", "mp", "--jobs", "4")
    try:
        wait_for(lambda: agents_running(repo, "mp") == 2)
    finally:
        gate.touch()
    code, out = live.finish()
    assert code == 0, out
    events = journal(repo, "mp")
    assert most_at_once(events) == 2  # a1 and a2 together, though 4 slots were free
    assert {e["agent"] for e in events if e["event"] == "ticket-dispatched"} == {"a1", "a2"}


def test_adjust_quota_changes_a_pools_parallelism_live(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    repo = pooled_project(tmp_path, gate, max_parallel=1)
    live = Live(repo, "run", "--run-id", "aq", "--jobs", "4")
    try:
        wait_for(lambda: agents_running(repo, "aq") == 1)
        code, out, err = gitexec(repo, "adjust", "--quota", "acct=3")
        assert code == 0, out + err
        assert "quota acct: 3 at once" in out
        wait_for(lambda: agents_running(repo, "aq") == 3)
        assert status(repo, "aq")["quotas"]["acct"]["max_parallel"] == 3
    finally:
        gate.touch()
    code, out = live.finish()
    assert code == 0, out
    events = journal(repo, "aq")
    adjusted = next(n for n, e in enumerate(events) if e.get("action") == "quota")
    assert most_at_once(events[:adjusted]) == 1
    assert most_at_once(events) == 3


def test_adjust_quota_survives_kill_9_and_resume(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    repo = pooled_project(tmp_path, gate, max_parallel=1)
    live = Live(repo, "run", "--run-id", "kq", "--jobs", "4")
    try:
        wait_for(lambda: agents_running(repo, "kq") == 1)
        code, out, err = gitexec(repo, "adjust", "--quota", "acct=3")
        assert code == 0, out + err
        wait_for(lambda: agents_running(repo, "kq") == 3)
        live.kill()
        assert status(repo, "kq")["quotas"]["acct"]["max_parallel"] == 3
        resumed = Live(repo, "resume", "--run", "kq")
        # The pool's limit is 3 again, not the config's 1 (counted from the resume on: until
        # then the journal still shows the agents the kill cut off).
        wait_for(lambda: any(e["event"] == "run-resumed" for e in journal(repo, "kq")))
        wait_for(lambda: agents_running(repo, "kq") == 3)
    finally:
        gate.touch()
    code, out = resumed.finish()
    assert code == 0, out
    st = status(repo, "kq")
    assert st["state"] == "completed"
    assert st["quotas"]["acct"]["max_parallel"] == 3
    events = journal(repo, "kq")
    after = max(n for n, e in enumerate(events) if e["event"] == "run-resumed")
    assert most_at_once(events[after:]) == 3


# --- budgets -------------------------------------------------------------------------------


def paid(cost: float, extra: str = "") -> str:
    """Agent `paid`: runs its ticket's command, then reports that it cost `cost`."""
    report = json.dumps({"status": "success", "cost_usd": cost, "summary": "done"})
    script = f'{{{{ ticket.run }}}}; printf %s {json.dumps(report)} > "$GITEXEC_RESULT_FILE"'
    return (
        "version: 1\nretry_backoff: 0.1s\nagents:\n  paid:\n"
        f"    command: [sh, -c, {json.dumps(script)}]\n" + extra
    )


def test_a_hard_budget_stops_the_tickets_still_running(tmp_path: Path) -> None:
    gate, b_started = tmp_path / "gate", tmp_path / "b-started"
    tickets = {
        # A spends the budget while B's agent runs; B's agent would wait forever.
        "A": ticket_yaml("A", agent="paid", run=f"until [ -f {b_started} ]; do sleep 0.02; done"),
        "B": ticket_yaml(
            "B", agent="paid", run=f"touch {b_started}; until [ -f {gate} ]; do sleep 0.02; done"
        ),
    }
    config = paid(0.6, "budget:\n  run_usd: 0.5\n  hard: true\n")
    repo = make_project(tmp_path / "r", tickets, config=config)
    try:
        code, out, err = gitexec(repo, "run", "--no-monitor", "--run-id", "hb", "--jobs", "2")
    finally:
        gate.touch()
    assert code == 1, out + err
    assert "running agents are stopped" in out + err
    st = status(repo, "hb")
    assert (st["state"], st["reason"], st["budget"]["hard"]) == ("stopped", "budget", True)
    assert st["tickets"]["A"]["status"] == "completed"
    assert st["tickets"]["B"]["status"] != "completed"
    assert st["metrics"]["cost_usd"] == 0.6  # B was stopped before it could report
    exited = [e for e in journal(repo, "hb") if e["event"] == "agent-exited"]
    assert [e["ticket"] for e in exited if e["cancelled"]] == ["B"]


def test_a_tickets_budget_counts_its_retries_together(tmp_path: Path) -> None:
    flag = tmp_path / "validated-once"
    ticket = ticket_yaml(
        "A",
        agent="paid",
        run="echo a > a.txt",
        budget_usd=0.5,
        retries=2,
        validate=[f"test -f {flag} || (touch {flag}; exit 1)"],
    )
    repo = make_project(tmp_path / "r", {"A": ticket}, config=paid(0.3))
    code, out, err = gitexec(repo, "run", "--no-monitor", "--run-id", "tr")
    assert code == 1, out + err
    a = status(repo, "tr")["tickets"]["A"]
    # Each attempt (0.3) is within the budget (0.5); the two together are not.
    assert a["attempts"] == 2
    assert a["status"] == "failed"
    assert a["reason"].startswith("budget:"), a["reason"]
    assert "0.2000 left" in a["reason"]
    assert a["cost_usd"] == 0.6


def test_a_tickets_budget_counts_its_conflict_rerun(tmp_path: Path) -> None:
    x_merged = 'until [ "$(git show gitexec/tc:shared.txt)" = from-x ]; do sleep 0.02; done'
    tickets = {
        "X": ticket_yaml("X", agent="paid", run="echo from-x > shared.txt"),
        # Y finishes once X is merged, so it conflicts and runs again.
        "Y": ticket_yaml(
            "Y", agent="paid", run=f"{x_merged}; echo from-y > shared.txt", budget_usd=0.5
        ),
    }
    config = paid(0.3, "merge:\n  on_conflict: [rerun, fail]\n")
    repo = make_project(tmp_path / "r", tickets, config=config, files={"shared.txt": "base\n"})
    code, out, err = gitexec(
        repo, "run", "--no-monitor", "--run-id", "tc", "--allow-overlap", "--jobs", "2"
    )
    assert code == 1, out + err
    y = status(repo, "tc")["tickets"]["Y"]
    assert y["attempts"] == 2  # the rerun after the conflict
    assert (y["status"], y["cost_usd"]) == ("failed", 0.6)
    assert y["reason"].startswith("budget:"), y["reason"]


def test_spend_is_remembered_after_kill_9_and_the_budget_still_stops_the_run(
    tmp_path: Path,
) -> None:
    gate = tmp_path / "gate"
    tickets = {
        "A": ticket_yaml("A", agent="paid", run="echo a > a.txt"),
        "B": ticket_yaml("B", agent="paid", run="echo b > b.txt", depends_on=["A"]),
        "C": ticket_yaml(
            "C",
            agent="paid",
            run=f"until [ -f {gate} ]; do sleep 0.02; done; echo c > c.txt",
            depends_on=["B"],
        ),
        "D": ticket_yaml("D", agent="paid", run="echo d > d.txt", depends_on=["C"]),
    }
    repo = make_project(tmp_path / "r", tickets, config=paid(0.3, "budget:\n  run_usd: 0.7\n"))
    live = Live(repo, "run", "--run-id", "bk", "--jobs", "1")
    try:
        wait_for(lambda: agents_running(repo, "bk") == 1 and "C" in started(repo, "bk"))
        live.kill()
    finally:
        gate.touch()
    st = status(repo, "bk")
    assert (st["state"], st["metrics"]["cost_usd"]) == ("crashed", 0.6)
    # A crash forgets nothing: C's new attempt brings the spend to 0.9, past 0.7.
    code, out, err = gitexec(repo, "resume", "--run", "bk", "--no-monitor")
    assert code == 1, out + err
    st = status(repo, "bk")
    assert (st["state"], st["reason"]) == ("stopped", "budget")
    assert st["metrics"]["cost_usd"] == 0.9
    assert st["tickets"]["C"]["status"] == "completed"
    assert st["tickets"]["D"]["status"] == "pending"
    assert "D" not in started(repo, "bk")


def started(repo: Path, run_id: str) -> list[str]:
    return [e["ticket"] for e in journal(repo, run_id) if e["event"] == "agent-started"]


# --- throttled time ------------------------------------------------------------------------


def throttled_once(attempts: Path, retry_after: int) -> str:
    """Agents `a1` and `a2` on pool `acct`: the account's first request is throttled with
    a retry-after, the rest are served."""
    script = (
        f"n=0; while ! mkdir {attempts}/$n 2>/dev/null; do n=$((n + 1)); done; "
        'if [ "$n" -lt 1 ]; then '
        f'printf \'{{"status": "throttled", "retry_after_s": {retry_after}, "summary": "429"}}\' '
        '> "$GITEXEC_RESULT_FILE"; '
        "else echo $GITEXEC_TICKET > $GITEXEC_TICKET.txt; fi"
    )
    agent = f"    command: [sh, -c, {json.dumps(script)}]\n    quota: acct\n"
    return f"version: 1\nagents:\n  a1:\n{agent}  a2:\n{agent}"


def test_throttled_time_is_counted_apart_from_agent_time(tmp_path: Path) -> None:
    attempts = tmp_path / "attempts"
    attempts.mkdir()
    config = throttled_once(attempts, 1)
    repo = make_project(tmp_path / "r", {"A": ticket_yaml("A", agent="a1")}, config=config)
    code, out, err = gitexec(repo, "run", "--no-monitor", "--run-id", "ts")
    assert code == 0, out + err
    st = status(repo, "ts")
    events = journal(repo, "ts")
    paused = next(e for e in events if e["event"] == "quota-paused")
    a = st["tickets"]["A"]
    # A waited at least the pause the provider asked for, and that wait is not agent time.
    assert a["throttled_s"] >= paused["delay_s"] - 0.05
    assert st["metrics"]["throttled_s"] == a["throttled_s"]
    ran = sum(e["duration_s"] for e in events if e["event"] == "agent-exited")
    assert a["duration_s"] == round(ran, 3)
    assert a["throttled"] == 1 and a["failed_attempts"] == 0


# --- resumed sessions ----------------------------------------------------------------------


def session_agent(calls: Path, extra: str = "") -> str:
    """Agent `s`: each start says in `calls` whether it began cold or continued a session,
    runs its ticket's command and reports a session id of its own."""

    def command(how: str) -> str:
        script = (
            f"echo $GITEXEC_TICKET {how} >> {calls}; {{{{ ticket.run }}}}; "
            'printf \'{"status": "success", "session_id": "sess-%s"}\' "$GITEXEC_TICKET" '
            '> "$GITEXEC_RESULT_FILE"'
        )
        return f"[sh, -c, {json.dumps(script)}]"

    return (
        "version: 1\nretry_backoff: 0.1s\nagents:\n  s:\n"
        f"    command: {command('cold')}\n"
        f"    resume_command: {command('resumed-{{ session_id }}')}\n" + extra
    )


def retried(tmp_path: Path, config: str) -> Path:
    flag = tmp_path / "validated-once"
    ticket = ticket_yaml(
        "A",
        agent="s",
        run="echo a > a.txt",
        retries=1,
        validate=[f"test -f {flag} || (touch {flag}; exit 1)"],
    )
    return make_project(tmp_path / "r", {"A": ticket}, config=config)


def test_a_retry_continues_the_session_and_resume_sessions_false_starts_cold(
    tmp_path: Path,
) -> None:
    calls = tmp_path / "calls"
    repo = retried(tmp_path / "on", session_agent(calls))
    code, out, err = gitexec(repo, "run", "--no-monitor", "--run-id", "on")
    assert code == 0, out + err
    assert calls.read_text().split("\n") == ["A cold", "A resumed-sess-A", ""]

    calls.unlink()
    repo = retried(tmp_path / "off", session_agent(calls, "resume_sessions: false\n"))
    code, out, err = gitexec(repo, "run", "--no-monitor", "--run-id", "off")
    assert code == 0, out + err
    assert status(repo, "off")["tickets"]["A"]["attempts"] == 2
    assert calls.read_text().split("\n") == ["A cold", "A cold", ""]


def test_a_conflict_rerun_continues_the_session(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    x_merged = 'until [ "$(git show gitexec/cr:shared.txt)" = from-x ]; do sleep 0.02; done'
    tickets = {
        "X": ticket_yaml("X", agent="s", run="echo from-x > shared.txt"),
        "Y": ticket_yaml("Y", agent="s", run=f"{x_merged}; echo from-y > shared.txt"),
    }
    config = session_agent(calls, "merge:\n  on_conflict: [rerun, fail]\n")
    repo = make_project(tmp_path / "r", tickets, config=config, files={"shared.txt": "base\n"})
    code, out, err = gitexec(
        repo, "run", "--no-monitor", "--run-id", "cr", "--allow-overlap", "--jobs", "2"
    )
    assert code == 0, out + err
    y = status(repo, "cr")["tickets"]["Y"]
    assert (y["status"], y["attempts"]) == ("completed", 2)
    ys = [line for line in calls.read_text().splitlines() if line.startswith("Y ")]
    assert ys == ["Y cold", "Y resumed-sess-Y"]


# --- where throttles are shown -------------------------------------------------------------


def test_the_report_and_agents_show_the_pools_that_throttled(tmp_path: Path) -> None:
    attempts = tmp_path / "attempts"
    attempts.mkdir()
    tickets = {"A": ticket_yaml("A", agent="a1"), "B": ticket_yaml("B", agent="a2")}
    repo = make_project(tmp_path / "r", tickets, config=throttled_once(attempts, 1))
    code, out, err = gitexec(repo, "run", "--no-monitor", "--run-id", "tv")
    assert code == 0, out + err
    throttled_s = status(repo, "tv")["metrics"]["throttled_s"]
    assert throttled_s > 0

    code, report, err = gitexec(repo, "report", "--run", "tv")
    assert code == 0, err
    assert "### Quota pools" in report
    assert "| acct | open | 1 |" in report
    assert "Waiting for throttling providers: " in report

    code, out, err = gitexec(repo, "agents", "--run", "tv")
    assert code == 0, err
    assert "quota acct: open, throttled 1 time" in out
    assert "throttled time: " in out
    code, out, err = gitexec(repo, "agents", "--run", "tv", "--format", "json")
    data = json.loads(out)
    assert data["quotas"]["acct"]["throttled_count"] == 1
    assert data["throttled_s"] == throttled_s


def test_agents_and_the_report_say_until_when_a_pool_is_paused(tmp_path: Path) -> None:
    """A run killed while its pool is paused (its ticket throttled, waiting) is reported
    like any other: this once made `report` an internal error."""
    attempts = tmp_path / "attempts"
    attempts.mkdir()
    config = throttled_once(attempts, 600)
    repo = make_project(tmp_path / "r", {"A": ticket_yaml("A", agent="a1")}, config=config)
    live = Live(repo, "run", "--run-id", "pp")
    wait_for(lambda: any(e["event"] == "quota-paused" for e in journal(repo, "pp")))
    live.kill()
    until = status(repo, "pp")["quotas"]["acct"]["until"]
    code, out, err = gitexec(repo, "agents", "--run", "pp")
    assert code == 0, err
    assert f"quota acct: paused until {until} (" in out
    code, report, err = gitexec(repo, "report", "--run", "pp")
    assert code == 0, err
    assert f"| acct | paused until {until} | 1 |" in report
    code, out, err = gitexec(repo, "report", "--run", "pp", "--junit", str(tmp_path / "j.xml"))
    assert code == 0, out + err
    assert 'name="gitexec.throttled" value="1"' in (tmp_path / "j.xml").read_text()
