"""Live control of a running engine from another process, and resuming dead runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gitexec.journal import read_records
from tests.helpers import git, until_file, wait_for
from tests.project import (
    crashed_run,
    first_parent_tickets,
    gitexec,
    make_project,
    status,
    ticket_yaml,
)


def live_members(pgid: int) -> list[int]:
    """Processes of a group that are still running (zombies waiting for a reaper don't count)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[-1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                found.append(int(entry))
    return found


def agents_of_run(run_id: str, repo: Path) -> list[int]:
    """Live processes started by this run's agents (their environment names the run)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            cwd = os.readlink(f"/proc/{entry}/cwd")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if (
            f"GITEXEC_RUN={run_id}".encode() in environ
            and cwd.startswith(str(repo))
            and state != "Z"
        ):
            found.append(int(entry))
    return found


def gated(tid: str, gate: Path, **fields: Any) -> str:
    """A ticket whose agent waits until `gate` exists, then writes <tid>.txt."""
    run = f"{until_file(gate)}; echo {tid} > {tid}.txt"
    return ticket_yaml(tid, run=run, **fields)


class LiveRun:
    """`git exec run` in a subprocess, with helpers to look at it."""

    def __init__(self, repo: Path, run_id: str, *args: str) -> None:
        self.repo = repo
        self.run_id = run_id
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gitexec", "run", "--no-monitor", "--run-id", run_id, *args],
            cwd=repo,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(lambda: status(repo, run_id)["state"] in ("running", "paused"))

    def state(self, tid: str) -> str:
        return str(status(self.repo, self.run_id)["tickets"][tid]["status"])

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "gate"
    yield path
    path.touch()  # never leave agents waiting


def test_pause_adjust_resume(tmp_path: Path, gate: Path) -> None:
    repo = make_project(
        tmp_path / "r",
        {t: gated(t, gate) for t in "ABCD"} | {"E": ticket_yaml("E", run="echo e > e")},
    )
    live = LiveRun(repo, "p", "--jobs", "1")
    wait_for(lambda: live.state("A") == "running" or live.state("B") == "running")
    code, out, _ = gitexec(repo, "pause")
    assert code == 0
    assert out.startswith("run p: paused")
    assert status(repo, "p")["state"] == "paused"
    code, out, _ = gitexec(repo, "adjust", "--jobs", "3", "--priority", "E=9")
    assert code == 0
    assert "jobs 1 -> 3" in out and "priority of E = 9" in out
    assert status(repo, "p")["jobs"] == 3
    gate.touch()
    time.sleep(0.5)
    # Paused: whatever was running finishes, nothing new starts.
    st = status(repo, "p")
    assert st["tickets"]["E"]["status"] == "pending"
    assert gitexec(repo, "resume")[0] == 0
    code, out, err = live.finish()
    assert code == 0, out + err
    st = status(repo, "p")
    assert st["state"] == "completed"
    # E had the highest priority once resumed.
    order = [
        e["ticket"]
        for e in read_records(repo / ".git/gitexec/runs/p/journal.jsonl")
        if e["event"] == "ticket-dispatched"
    ]
    resumed_at = next(i for i, t in enumerate(order) if t not in ("A", "B"))
    assert order[resumed_at] == "E"


def test_pause_wait_for_completion_returns_when_idle(tmp_path: Path, gate: Path) -> None:
    repo = make_project(
        tmp_path / "r", {"A": gated("A", gate), "B": ticket_yaml("B", depends_on=["A"], run="true")}
    )
    live = LiveRun(repo, "w")
    wait_for(lambda: live.state("A") == "running")
    waiter = subprocess.Popen(
        [sys.executable, "-m", "gitexec", "pause", "--wait-for-completion"],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: status(repo, "w")["paused"])  # the engine took the request
    time.sleep(0.5)
    assert waiter.poll() is None  # A is still running
    gate.touch()
    out, _ = waiter.communicate(timeout=30)
    assert waiter.returncode == 0
    assert "no ticket is running" in out
    assert status(repo, "w")["tickets"]["B"]["status"] == "pending"
    gitexec(repo, "stop", "--preserve-state")
    live.finish()


def test_stop_force_kills_agents_and_cancels(tmp_path: Path, gate: Path) -> None:
    repo = make_project(
        tmp_path / "r", {"A": gated("A", gate), "B": ticket_yaml("B", depends_on=["A"], run="true")}
    )
    live = LiveRun(repo, "s")
    wait_for(lambda: status(repo, "s")["tickets"]["A"]["status"] == "running")
    events = repo / ".git/gitexec/runs/s/journal.jsonl"
    wait_for(lambda: any(e["event"] == "agent-started" for e in read_records(events)))
    pgid = next(e["pgid"] for e in read_records(events) if e["event"] == "agent-started")
    code, out, _ = gitexec(repo, "stop", "--force")
    assert code == 0
    assert "killing running agents" in out and "pending tickets will be cancelled" in out
    code, _, _ = live.finish()
    assert code == 1
    st = status(repo, "s")
    assert st["state"] == "stopped"
    assert {t["status"] for t in st["tickets"].values()} == {"cancelled"}
    assert live_members(int(pgid)) == []
    # Nothing left to resume.
    code, _, err = gitexec(repo, "resume", "--run", "s")
    assert code == 2
    assert "nothing left to resume" in err


def test_retry_and_reassign_a_failed_ticket(tmp_path: Path, gate: Path) -> None:
    config = "version: 1\nagents:\n  fixed:\n    command: [sh, -c, 'echo fixed > a.txt']\n"
    repo = make_project(
        tmp_path / "r",
        {
            "A": ticket_yaml("A", run="exit 1"),
            "B": ticket_yaml("B", depends_on=["A"], run="echo b > b"),
            "HOLD": gated("HOLD", gate),
        },
        config=config,
    )
    live = LiveRun(repo, "rr")
    wait_for(lambda: live.state("B") == "blocked")
    code, _, err = gitexec(repo, "retry", "B")
    assert code == 2
    assert "B is blocked; only failed, conflict or cancelled tickets can be retried" in err
    code, out, _ = gitexec(repo, "reassign", "A", "--agent", "fixed")
    assert code == 0
    assert "A reassigned to fixed; requeued A, B" in out
    wait_for(lambda: live.state("B") == "completed")
    gate.touch()
    code, out, err = live.finish()
    assert code == 0, out + err
    st = status(repo, "rr")
    assert st["tickets"]["A"]["agent"] == "fixed"
    assert git(repo, "show", "gitexec/rr:a.txt") == "fixed\n"


def test_fallback_sequential_runs_a_group_one_at_a_time(tmp_path: Path, gate: Path) -> None:
    log = tmp_path / "log"
    repo = make_project(
        tmp_path / "r",
        {"GATE": gated("GATE", gate)}
        | {
            t: ticket_yaml(
                t, depends_on=["GATE"], run=f"echo start >> {log}; sleep 0.2; echo end >> {log}"
            )
            for t in "XYZ"
        },
    )
    live = LiveRun(repo, "fs", "--jobs", "3")
    plan_group = status(repo, "fs")["tickets"]["X"]["group"]
    code, out, _ = gitexec(repo, "fallback-sequential", str(plan_group))
    assert code == 0
    assert f"group {plan_group}: 3 ticket(s) will run one at a time" in out
    gate.touch()
    assert live.finish()[0] == 0
    assert log.read_text().split() == ["start", "end"] * 3


def test_control_without_a_live_engine(tmp_path: Path) -> None:
    repo = make_project(tmp_path / "r", {"A": ticket_yaml("A", run="true")})
    for args in (["pause"], ["stop"], ["adjust", "--jobs", "2"], ["retry", "A"]):
        code, _, err = gitexec(repo, *args)
        assert code == 2
        assert "no live engine" in err


# --- durability --------------------------------------------------------------------------------


KILL_DAG = {
    "A": [], "B": [], "C": ["A"], "D": ["A", "B"], "E": ["C"], "F": ["D", "E"], "G": [],
    "H": ["G"], "I": ["H", "C"], "J": [], "K": ["J"], "L": ["K", "F"], "M": [], "N": ["M"],
    "O": ["N", "I"], "P": [], "Q": ["P", "L"], "R": ["Q"], "S": ["R", "O"], "T": ["S"],
}  # fmt: skip


def dag_repo(path: Path) -> Path:
    """20 tickets, merged in plan order; each output depends on its dependencies' outputs."""
    tickets = {}
    for tid, d in KILL_DAG.items():
        run = (
            f"sleep 0.05; mkdir -p out; cat /dev/null {' '.join(f'out/{x}' for x in d)} > out/{tid};"
            f" echo {tid} >> out/{tid}"
        )
        tickets[tid] = ticket_yaml(
            tid, depends_on=d, paths=[f"out/{tid}"], run=run, validate=[f"test -s out/{tid}"]
        )
    return make_project(path, tickets, config="version: 1\nmerge:\n  order: plan\n")


def code_tree(repo: Path, ref: str) -> str:
    return git(repo, "rev-parse", f"{ref}:out")


@pytest.mark.parametrize("kill_after_events", [2, 19, 37, 55, 73, 91, 109, 127, 145, 163, 181])
def test_kill_9_and_resume_gives_the_same_result(tmp_path: Path, kill_after_events: int) -> None:
    reference = dag_repo(tmp_path / "ref")
    assert gitexec(reference, "run", "--no-monitor", "--run-id", "k", "--jobs", "3")[0] == 0
    expected = code_tree(reference, "gitexec/k")

    repo = dag_repo(tmp_path / "r")
    journal = repo / ".git/gitexec/runs/k/journal.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gitexec", "run", "--no-monitor", "--run-id", "k", "--jobs", "3"],
        cwd=repo,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: len(read_records(journal)) >= kill_after_events or proc.poll() is not None)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if status(repo, "k")["state"] != "completed":
        code, out, err = gitexec(repo, "resume", "--validate-state", "--no-monitor")
        assert code == 0, out + err
    assert code_tree(repo, "gitexec/k") == expected
    merged = first_parent_tickets(repo, "gitexec/k")
    assert sorted(merged) == sorted(KILL_DAG)  # every ticket merged exactly once
    st = status(repo, "k")
    assert st["state"] == "completed"
    # No agent of this run is left running.
    leftovers = subprocess.run(
        ["pgrep", "-f", str(repo)], capture_output=True, text=True, check=False
    )
    assert leftovers.stdout.strip() == ""


def test_live_overlap_reported_before_the_merge(tmp_path: Path, gate: Path) -> None:
    # No declared paths: the scheduler lets them run together; both edit shared.txt.
    repo = make_project(
        tmp_path / "r",
        {t: ticket_yaml(t, run=f"echo {t} >> shared.txt; {until_file(gate)}") for t in ("A", "B")},
        config="version: 1\nmerge:\n  on_conflict: [rules, fail]\n",
        files={"shared.txt": "base\n"},
    )
    live = LiveRun(repo, "ov", "--jobs", "2")
    journal = repo / ".git/gitexec/runs/ov/journal.jsonl"
    wait_for(lambda: any(e["event"] == "overlap" for e in read_records(journal)), timeout=20)
    events = read_records(journal)
    overlap = next(e for e in events if e["event"] == "overlap")
    assert overlap["tickets"] == ["A", "B"]
    assert overlap["paths"] == ["shared.txt"]
    assert not any(e["event"] == "ticket-merging" for e in events)  # before any merge
    st = status(repo, "ov")
    assert st["overlaps"] == [{"tickets": ["A", "B"], "paths": ["shared.txt"]}]
    code, out, _ = gitexec(repo, "diagnose", "--check-conflicts", "--format", "json")
    assert code == 0
    assert '"run": "ov"' in out and "shared.txt" in out
    gate.touch()
    code, _, _ = live.finish()
    assert code == 1  # the second merge conflicts, as predicted


def test_second_interrupt_forces_the_stop(tmp_path: Path, gate: Path) -> None:
    repo = make_project(tmp_path / "r", {"A": gated("A", gate)})
    live = LiveRun(repo, "int")
    events = repo / ".git/gitexec/runs/int/journal.jsonl"
    wait_for(lambda: any(e["event"] == "agent-started" for e in read_records(events)))
    pgid = next(e["pgid"] for e in read_records(events) if e["event"] == "agent-started")
    live.proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert live.proc.poll() is None  # the first interrupt waits for the running ticket
    live.proc.send_signal(signal.SIGINT)
    code, _, err = live.finish()
    assert code == 130
    assert "stopping" in err
    assert live_members(int(pgid)) == []
    st = status(repo, "int")
    assert st["state"] == "stopped"
    assert st["tickets"]["A"]["status"] == "pending"  # resumable


def test_torn_journal_line_is_tolerated(tmp_path: Path) -> None:
    from gitexec import events as ev
    from gitexec.journal import Journal

    path = tmp_path / "journal.jsonl"
    journal, _ = Journal.create(
        path, ev.RunStarted(run="r", base="b", integration="i", head="b", jobs=1, tickets={})
    )
    journal.close()
    with path.open("ab") as f:
        f.write(b'{"seq":2,"t":1.0,"event":"ticket-disp')  # the crash, mid-write
    assert [e["event"] for e in read_records(path)] == ["run-started"]
    journal = Journal(path)  # a resumed engine appends after the torn line
    event = journal.append(ev.RunResumed(head="b", jobs=1))
    journal.close()
    assert event.seq == 2
    assert [e["event"] for e in read_records(path)] == ["run-started", "run-resumed"]


def test_clean_keeps_resumable_runs(tmp_path: Path) -> None:
    repo, pgid = crashed_run(tmp_path / "r")
    os.killpg(pgid, signal.SIGKILL)
    journal = repo / ".git/gitexec/runs/dead/journal.jsonl"
    code, out, _ = gitexec(repo, "clean")
    assert code == 0
    assert "removed run dead" not in out
    assert journal.exists()
    assert status(repo, "dead")["state"] == "crashed"
    code, out, _ = gitexec(repo, "clean", "--run", "dead")
    assert "removed run dead" in out


# --- what a live change leaves for resume ------------------------------------------------------


def kill_engine(live: LiveRun) -> None:
    """SIGKILL the engine (its agents keep running until resume kills them)."""
    live.proc.send_signal(signal.SIGKILL)
    live.finish()


def dispatched_after_resume(repo: Path, run_id: str) -> list[dict[str, Any]]:
    records = read_records(repo / f".git/gitexec/runs/{run_id}/journal.jsonl")
    resumed = max(n for n, e in enumerate(records) if e["event"] == "run-resumed")
    return [e for e in records[resumed:] if e["event"] == "ticket-dispatched"]


def test_a_live_priority_survives_kill_and_resume(tmp_path: Path, gate: Path) -> None:
    repo = make_project(
        tmp_path / "r",
        {
            "A": gated("A", gate),
            "B": ticket_yaml("B", run="true"),
            "C": ticket_yaml("C", run="true"),
        },
    )
    live = LiveRun(repo, "prio", "--jobs", "1")
    wait_for(lambda: live.state("A") == "running")
    assert gitexec(repo, "adjust", "--priority", "C=5")[0] == 0
    kill_engine(live)
    gate.touch()
    code, out, err = gitexec(repo, "resume", "--run", "prio", "--no-monitor")
    assert code == 0, out + err
    order = [e["ticket"] for e in dispatched_after_resume(repo, "prio")]
    assert order[0] == "C"  # the priority given live still decides after resume
    assert status(repo, "prio")["state"] == "completed"


def test_fallback_sequential_of_waiting_tickets_survives_kill_and_resume(
    tmp_path: Path, gate: Path
) -> None:
    log = tmp_path / "log"
    repo = make_project(
        tmp_path / "r",
        {"GATE": gated("GATE", gate)}
        | {
            t: ticket_yaml(
                t, depends_on=["GATE"], run=f"echo start >> {log}; sleep 0.2; echo end >> {log}"
            )
            for t in "XYZ"
        },
    )
    live = LiveRun(repo, "fsr", "--jobs", "3")
    wait_for(lambda: live.state("GATE") == "running")
    group = status(repo, "fsr")["tickets"]["X"]["group"]
    assert gitexec(repo, "fallback-sequential", str(group))[0] == 0
    kill_engine(live)
    gate.touch()
    code, out, err = gitexec(repo, "resume", "--run", "fsr", "--no-monitor")
    assert code == 0, out + err
    starts = {e["ticket"]: e["sequential"] for e in dispatched_after_resume(repo, "fsr")}
    assert starts["X"] and starts["Y"] and starts["Z"]
    assert log.read_text().split() == ["start", "end"] * 3  # never two at once


def test_a_resumed_run_is_no_longer_paused(tmp_path: Path, gate: Path) -> None:
    repo = make_project(
        tmp_path / "r", {"A": gated("A", gate), "B": ticket_yaml("B", depends_on=["A"], run="true")}
    )
    live = LiveRun(repo, "pz")
    wait_for(lambda: live.state("A") == "running")
    assert gitexec(repo, "pause")[0] == 0
    wait_for(lambda: status(repo, "pz")["paused"])
    kill_engine(live)
    resumed = subprocess.Popen(
        [sys.executable, "-m", "gitexec", "resume", "--run", "pz", "--no-monitor"],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: status(repo, "pz")["state"] == "running" and live.state("A") == "running")
    assert status(repo, "pz")["paused"] is False
    gate.touch()
    out, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, out + err
    assert status(repo, "pz")["state"] == "completed"
