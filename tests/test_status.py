"""Watching runs: status and agents while a run goes, the dashboard, monitor, clean."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from gitexec.dashboard import render, snapshot
from gitexec.journal import load_events
from gitexec.runstate import replay
from tests.helpers import git, until_file, wait_for
from tests.project import (
    FAKE_CONFIG,
    crashed_run,
    gitexec,
    make_project,
    run_ok,
    status,
    ticket_yaml,
)


def test_status_and_agents_while_running(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    repo = make_project(
        tmp_path / "r",
        {
            "A": ticket_yaml(
                "A", agent="fake", prompt="PROGRESS 40\nECHO waiting\n", estimate="10s"
            ),
            "B": ticket_yaml("B", run=f"{until_file(gate)}; echo b > b", estimate="10s"),
            "C": ticket_yaml("C", depends_on=["B"], run="echo c > c"),
        },
        config=FAKE_CONFIG,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "gitexec", "run", "--no-monitor", "--run-id", "live", "--jobs", "2"],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: status(repo, "live")["tickets"]["A"]["status"] == "completed")
        wait_for(lambda: status(repo, "live")["tickets"]["B"]["status"] == "running")
        st = status(repo, "live")
        assert st["state"] == "running"
        assert st["tickets"]["C"]["status"] == "pending"
        # Without --run, the live run is the one shown.
        code, out, _ = gitexec(repo, "status")
        assert code == 0
        assert out.startswith("run live: running")
        assert "ETA" in out
        code, out, _ = gitexec(repo, "agents", "--format", "json")
        rows = json.loads(out)["agents"]
        assert {"agent_id": "slot-2", "ticket": "B", "status": "executing"}.items() <= rows[
            0
        ].items() or any(r["ticket"] == "B" and r["status"] == "executing" for r in rows)
        assert any(
            r["ticket"] == "C" and r["status"] == "waiting" and r["eta"] == "deps" for r in rows
        )
        code, table, _ = gitexec(repo, "agents")
        assert table.startswith("Agent ID     | Ticket         | Status      | Progress | ETA")
    finally:
        gate.touch()
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    assert status(repo, "live")["state"] == "completed"


def test_crashed_run_is_reported_as_crashed(tmp_path: Path) -> None:
    repo, pgid = crashed_run(tmp_path / "r")
    try:
        st = status(repo, "dead")
        assert st["state"] == "crashed"
        _, out, _ = gitexec(repo, "status", "--run", "dead")
        assert "`git exec resume` continues this run" in out
    finally:
        # The orphaned agent (resume would kill it; here the test does).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


def test_dashboard_renders_the_seed_view(tmp_path: Path) -> None:
    repo = make_project(
        tmp_path / "r",
        {
            "A": ticket_yaml("A", run="echo a > a"),
            "B": ticket_yaml("B", depends_on=["A"], run="exit 1"),
        },
    )
    run_ok(repo, "--run-id", "d")
    state = replay("d", load_events(repo / ".git/gitexec/runs/d/journal.jsonl").events)
    snap = snapshot(state, jobs=4, progress=lambda _: None, eta_s=0.0)
    console = Console(file=io.StringIO(), width=120, color_system=None)
    console.print(render(snap, __import__("collections").deque(["merged A"])))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    for label in (
        "Active Groups:",
        "Running Agents: 0/4",
        "Completion Rate: 100% (1/2)",
        "Active Conflicts: 0",
        "ETA: 0s",
    ):
        assert label in text
    for column in ("Agent ID", "Ticket", "Status", "Progress", "ETA"):
        assert column in text
    assert "failed" in text and "merged A" in text


def test_monitor_follows_a_finished_run(tmp_path: Path) -> None:
    repo = make_project(tmp_path / "r", {"A": ticket_yaml("A", run="echo a > a")})
    run_ok(repo, "--run-id", "m")
    code, out, _ = gitexec(repo, "monitor", "--run", "m", "--no-dashboard")
    assert code == 0
    assert "start     A (slot 1, shell, attempt 1)" in out
    assert "finished  completed" in out


def test_clean_removes_pool_and_named_runs(tmp_path: Path) -> None:
    repo = make_project(tmp_path / "r", {"A": ticket_yaml("A", run="echo a > a")})
    run_ok(repo, "--run-id", "c1")
    run_ok(repo, "--run-id", "c2")
    assert "slot-1" in git(repo, "worktree", "list")
    code, out, _ = gitexec(repo, "clean")
    assert code == 0
    assert "removed worktrees: slot-1" in out
    assert "slot-1" not in git(repo, "worktree", "list")
    assert git(repo, "branch", "--list", "gitexec/*").split() == ["gitexec/c1", "gitexec/c2"]
    code, out, _ = gitexec(repo, "clean", "--run", "c1")
    assert "removed run c1" in out
    assert git(repo, "branch", "--list", "gitexec/*").split() == ["gitexec/c2"]
    assert git(repo, "for-each-ref", "refs/gitexec/c1") == ""
    assert git(repo, "for-each-ref", "refs/gitexec/c2") != ""
    code, out, _ = gitexec(repo, "clean", "--all")
    assert git(repo, "branch", "--list", "gitexec/*") == ""
    code, _, err = gitexec(repo, "status")
    assert code == 2 and "no runs yet" in err
