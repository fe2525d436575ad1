"""Budgets and quota pools through the CLI, where a live run meets them: `adjust --quota`
(live and across kill -9), a pool's `max_parallel`, `budget.hard`, a ticket's budget over
several attempts, spend remembered after a crash, throttled time, resumed sessions, and
where throttles are shown.

Agents are shell commands reporting through GITEXEC_RESULT_FILE, so every outcome is exact.
"""

from __future__ import annotations

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
    run = f"while [ ! -f {gate} ]; do sleep 0.02; done; echo {tid} > {tid}.txt"
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
        # The pool's limit is 3 again, not the config's 1.
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
