"""Nothing lost, nothing wrong: a run against someone moving its branch, kills at awkward
moments, signals, closed pipes and full disks. Each test drives the CLI on a real
repository."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from gitexec.journal import read_records
from tests.helpers import git, until_file, wait_for
from tests.project import first_parent_tickets, gitexec, make_project, status, ticket_yaml


def gated(tid: str, gate: Path, **fields: Any) -> str:
    run = f"{until_file(gate)}; echo {tid} > {tid}.txt"
    return ticket_yaml(tid, run=run, **fields)


def start(repo: Path, run_id: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gitexec", "run", "--no-monitor", "--run-id", run_id, *args],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def three_tickets(path: Path, gate: Path) -> Path:
    """A merges at once; B waits for `gate`; C depends on B."""
    return make_project(
        path,
        {
            "A": ticket_yaml("A", run="echo A > A.txt"),
            "B": gated("B", gate),
            "C": ticket_yaml("C", depends_on=["B"], run="echo C > C.txt"),
        },
    )


def stopped_by_a_branch_move(tmp_path: Path, move: list[str]) -> Path:
    """A run whose branch someone else moved (`git <move>`) after A merged, B pending."""
    gate = tmp_path / "gate"
    repo = three_tickets(tmp_path / "r", gate)
    proc = start(repo, "mv")
    # The branch follows the journal within a moment (PUBLISH_EVERY_S).
    wait_for(lambda: first_parent_tickets(repo, "gitexec/mv") == ["A"])
    git(repo, *move)
    gate.touch()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, out + err
    assert "moved by someone else" in err
    assert "Traceback" not in err
    st = status(repo, "mv")
    assert st["state"] == "stopped"
    assert "moved by someone else" in st["reason"]
    return repo


def test_a_moved_integration_branch_stops_the_run_and_loses_nothing(tmp_path: Path) -> None:
    repo = stopped_by_a_branch_move(tmp_path, ["branch", "-f", "gitexec/mv", "main"])
    # B finished after the move: its result is kept, and A's merge is still known.
    assert git(repo, "rev-parse", "refs/gitexec/mv/B").strip()
    code, _, err = gitexec(repo, "resume", "--run", "mv", "--no-monitor")
    assert code == 2
    assert "someone else moved it; nothing was changed" in err
    assert git(repo, "rev-parse", "gitexec/mv").strip() == git(repo, "rev-parse", "main").strip()

    code, out, err = gitexec(repo, "resume", "--run", "mv", "--onto", "journal", "--no-monitor")
    assert code == 0, out + err
    assert sorted(first_parent_tickets(repo, "gitexec/mv")) == ["A", "B", "C"]
    displaced = git(repo, "rev-parse", "refs/gitexec-displaced/mv/1").strip()
    assert displaced == git(repo, "rev-parse", "main").strip()
    assert status(repo, "mv")["state"] == "completed"


def test_resume_onto_the_moved_branch_merges_again_what_it_lacks(tmp_path: Path) -> None:
    repo = stopped_by_a_branch_move(tmp_path, ["branch", "-f", "gitexec/mv", "main"])
    code, out, err = gitexec(repo, "resume", "--run", "mv", "--onto", "current", "--no-monitor")
    assert code == 0, out + err
    assert sorted(first_parent_tickets(repo, "gitexec/mv")) == ["A", "B", "C"]
    for f in ("A.txt", "B.txt", "C.txt"):
        assert git(repo, "show", f"gitexec/mv:{f}").strip() == f[0]
    st = status(repo, "mv")
    assert st["state"] == "completed"
    assert st["tickets"]["B"]["attempts"] == 1  # its kept result merged; the agent did not rerun


def test_a_deleted_integration_branch_is_made_again_by_resume(tmp_path: Path) -> None:
    repo = stopped_by_a_branch_move(tmp_path, ["branch", "-D", "gitexec/mv"])
    code, out, err = gitexec(repo, "resume", "--run", "mv", "--no-monitor")
    assert code == 0, out + err
    assert sorted(first_parent_tickets(repo, "gitexec/mv")) == ["A", "B", "C"]
    assert status(repo, "mv")["state"] == "completed"


@pytest.mark.parametrize("order", ["completion", "plan"])
def test_timestamps_agree_between_ticket_files_and_status(tmp_path: Path, order: str) -> None:
    gate = tmp_path / "gate"
    repo = make_project(
        tmp_path / "r",
        {
            "A": ticket_yaml("A", run="echo A > A.txt"),
            "F": ticket_yaml("F", run="exit 1"),
            "G": ticket_yaml("G", run="sleep 1.5; echo G > G.txt"),
        },
        config=f"version: 1\nmerge:\n  order: {order}\ngates:\n  integration: ['true']\n",
    )
    del gate
    code, out, err = gitexec(repo, "run", "--no-monitor", "--run-id", "ts", "--jobs", "3")
    assert code == 1, out + err
    st = status(repo, "ts")
    from ruamel.yaml import YAML

    for tid in ("A", "F", "G"):
        text = git(repo, "show", f"gitexec/ts:.gitexec/tickets/{tid}.yaml")
        recorded = YAML(typ="safe").load(text)["result"]["finished_at"]
        assert recorded == st["tickets"][tid]["finished_at"], tid
    # The failed ticket ended long before the run did.
    assert st["tickets"]["F"]["finished_at"] < st["finished_at"]


# --- signals, pipes, and kills at awkward moments ----------------------------------------------


def journal_of(repo: Path, run_id: str) -> list[dict[str, Any]]:
    return read_records(repo / f".git/gitexec/runs/{run_id}/journal.jsonl")


def run_processes(run_id: str) -> list[int]:
    """Live processes whose environment names the run (agents, gates, what they started)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if f"GITEXEC_RUN={run_id}".encode() in environ and state != "Z":
            found.append(int(entry))
    return found


def test_one_ctrl_c_under_git_exec_stops_gracefully(tmp_path: Path) -> None:
    """A terminal's Ctrl-C reaches git's wrapper and the engine; git forwards it as well."""
    gate = tmp_path / "gate"
    repo = make_project(
        tmp_path / "r", {"A": gated("A", gate), "B": ticket_yaml("B", depends_on=["A"], run="true")}
    )
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.Popen(
        ["git", "exec", "run", "--no-monitor", "--run-id", "cc"],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, like a terminal's foreground job
    )
    wait_for(lambda: any(e["event"] == "agent-started" for e in journal_of(repo, "cc")))
    os.killpg(proc.pid, signal.SIGINT)
    wait_for(
        lambda: (
            status(repo, "cc")["tickets"]["A"]["status"] == "running"
            and any(
                e["event"] == "control" and e["action"] == "interrupt"
                for e in journal_of(repo, "cc")
            )
        )
    )
    time.sleep(0.3)
    gate.touch()  # the running agent finishes: one interrupt is a graceful stop
    out, err = proc.communicate(timeout=60)
    # git's wrapper reports the interrupt its own way once the engine exited (re-raising
    # it on itself, or exiting 128+); what the engine did is in the journal.
    assert proc.returncode != 0, out + err
    assert "stopped: 1/2 completed" in out
    interrupts = [e for e in journal_of(repo, "cc") if e["event"] == "control"]
    assert [e["force"] for e in interrupts] == [False]
    st = status(repo, "cc")
    assert st["state"] == "stopped"
    assert st["tickets"]["A"]["status"] == "completed"
    assert st["tickets"]["B"]["status"] == "pending"


def test_a_closed_output_pipe_does_not_stop_the_run(tmp_path: Path) -> None:
    repo = make_project(
        tmp_path / "r", {t: ticket_yaml(t, run=f"echo {t} > {t}.txt") for t in "ABCDEFGH"}
    )
    run = subprocess.Popen(
        [sys.executable, "-m", "gitexec", "run", "--run-id", "pipe", "--jobs", "2"],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert run.stdout is not None
    head = subprocess.run(["head", "-1"], stdin=run.stdout, capture_output=True, check=True)
    run.stdout.close()
    assert head.stdout  # the reader saw its line, then went away
    assert run.wait(timeout=60) == 0  # every ticket completed: exit by ticket outcome
    st = status(repo, "pipe")
    assert st["state"] == "completed"
    assert st["metrics"]["completed"] == 8


def test_a_pending_gate_runs_again_after_a_crash(tmp_path: Path) -> None:
    """The gate the crash left running would never end by itself: resume must kill it."""
    hold, pid_file, alive = tmp_path / "hold", tmp_path / "gate.pid", tmp_path / "alive"
    gate_log = tmp_path / "gates"
    # The first gate waits for a file nobody creates; the later ones pass, noting whether
    # the first one is still running beside them.
    gate = (
        f"echo gate >> {gate_log}; if [ $(wc -l < {gate_log}) -gt 1 ]; then p=$(cat {pid_file}); "
        f'if [ -d /proc/$p ] && ! grep -q ") Z" /proc/$p/stat; then echo $p >> {alive}; fi; '
        f"exit 0; fi; echo $$ > {pid_file}; {until_file(hold, 0.05)}"
    )
    repo = make_project(
        tmp_path / "r",
        {
            "A": ticket_yaml("A", run="echo A > A.txt"),
            "B": ticket_yaml("B", depends_on=["A"], run="echo B > B.txt"),
        },
        config=f"version: 1\ngates:\n  integration:\n    - '{gate}'\n",
    )
    proc = start(repo, "pg")
    try:
        wait_for(lambda: pid_file.exists() and pid_file.read_text().strip() != "")
        orphan = int(pid_file.read_text())  # A merged, its gate is running
        assert orphan in run_processes("pg")
        proc.kill()
        proc.wait()
        assert orphan in run_processes("pg")  # the crash left it running
        code, out, err = gitexec(repo, "resume", "--run", "pg", "--no-monitor")
        assert code == 0, out + err
        events = journal_of(repo, "pg")
        resumed = max(n for n, e in enumerate(events) if e["event"] == "run-resumed")
        after = [e["event"] for e in events[resumed:]]
        assert after.index("gate-passed") < after.index("ticket-dispatched")  # A gated first
        assert gate_log.read_text().split() == ["gate", "gate", "gate"]  # again for A, then B
        assert not alive.exists()  # resume killed it before gating again
        assert run_processes("pg") == []
        assert sorted(first_parent_tickets(repo, "gitexec/pg")) == ["A", "B"]
    finally:
        hold.touch()  # lets a gate resume failed to kill end
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_stopping_during_a_gate_stops_it(tmp_path: Path) -> None:
    repo = make_project(
        tmp_path / "r",
        {"A": ticket_yaml("A", run="echo A > A.txt")},
        config="version: 1\ngates:\n  integration: ['sleep 300']\n",
    )
    proc = start(repo, "sg")
    wait_for(lambda: any(e["event"] == "gate-started" for e in journal_of(repo, "sg")))
    wait_for(lambda: bool(run_processes("sg")))
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGINT):
        if proc.poll() is None:
            proc.send_signal(sig)
            time.sleep(0.8)
    out, err = proc.communicate(timeout=30)  # no SIGKILL needed
    assert proc.returncode in (130, -signal.SIGINT), out + err
    assert "stopping now: killing running agents" in err
    wait_for(lambda: run_processes("sg") == [], timeout=10)
    st = status(repo, "sg")
    assert st["state"] == "stopped"
    assert st["tickets"]["A"]["status"] == "pending"  # its ungated merge was undone; resumable
    assert git(repo, "rev-parse", "gitexec/sg").strip() == git(repo, "rev-parse", "main").strip()


def _kill_early(repo: Path, anchor: Path | None, delay_s: float) -> None:
    """Start a run and kill it `delay_s` after `anchor` appears (after the start if None)."""
    proc = start(repo, "kr")
    while anchor is not None and proc.poll() is None and not anchor.exists():
        time.sleep(0.001)
    time.sleep(delay_s)
    proc.kill()
    proc.wait()


def test_a_run_killed_in_its_first_moments_is_absent_or_resumable(tmp_path: Path) -> None:
    """Kills placed from the run directory's creation (just before the first record) to
    moments after the journal appeared, like benchmarks/kill_resume.py --early: starting
    the interpreter takes longer than any fixed delay would cover."""
    run_dir = Path(".git/gitexec/runs/kr")
    points: list[tuple[Path | None, float]] = [(None, 0.1)]
    points += [(run_dir, d) for d in (0.0, 0.001, 0.003, 0.01)]
    points += [(run_dir / "journal.jsonl", d) for d in (0.0, 0.002, 0.01, 0.05, 0.2)]
    outcomes = []
    for n, (anchor, delay) in enumerate(points):
        repo = make_project(tmp_path / f"r{n}", {"A": ticket_yaml("A", run="echo A > A.txt")})
        _kill_early(repo, None if anchor is None else repo / anchor, delay)
        where = f"killed {delay}s after {anchor or 'the start'}"
        if (repo / run_dir / "journal.jsonl").exists():
            records = journal_of(repo, "kr")
            assert records and records[0]["event"] == "run-started", where  # never empty
            if status(repo, "kr")["state"] == "completed":
                outcomes.append("completed")
            else:
                code, out, err = gitexec(repo, "resume", "--run", "kr", "--no-monitor")
                assert code == 0, f"{where}: {out}{err}"
                outcomes.append("resumed")
        else:
            assert not git(repo, "branch", "--list", "gitexec/kr").strip(), where
            code, out, err = gitexec(repo, "run", "--no-monitor", "--run-id", "kr")
            assert code == 0, f"{where}: {out}{err}"
            outcomes.append("absent")
        assert status(repo, "kr")["state"] == "completed", where
        assert first_parent_tickets(repo, "gitexec/kr") == ["A"], where
    assert "resumed" in outcomes and "absent" in outcomes, outcomes


def test_a_run_killed_before_recording_its_end_is_finished_by_resume(tmp_path: Path) -> None:
    repo = make_project(tmp_path / "r", {"A": ticket_yaml("A", run="echo A > A.txt")})
    assert gitexec(repo, "run", "--no-monitor", "--run-id", "end")[0] == 0
    journal = repo / ".git/gitexec/runs/end/journal.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(lines[:-1]))  # the kill came just before run-finished
    assert status(repo, "end")["state"] == "crashed"
    code, out, err = gitexec(repo, "resume", "--no-monitor")
    assert code == 0, out + err
    assert status(repo, "end")["state"] == "completed"
    assert first_parent_tickets(repo, "gitexec/end") == ["A"]


def killed_with_two_merges(tmp_path: Path) -> tuple[Path, Path]:
    """A run killed -9 after A1 and A2 merged, while B waits for its gate."""
    gate = tmp_path / "gate"
    repo = make_project(
        tmp_path / "r",
        {
            "A1": ticket_yaml("A1", run="echo A1 > A1.txt"),
            "A2": ticket_yaml("A2", run="echo A2 > A2.txt"),
            "B": gated("B", gate),
            "C": ticket_yaml("C", depends_on=["B"], run="echo C > C.txt"),
        },
    )
    proc = start(repo, "cut")
    # The branch follows the journal within a moment (PUBLISH_EVERY_S).
    wait_for(lambda: sorted(first_parent_tickets(repo, "gitexec/cut")) == ["A1", "A2"])
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    return repo, gate


def test_resume_finishes_moving_the_branch_over_merges_the_crash_cut_off(tmp_path: Path) -> None:
    # The engine moves the branch once per pass, after the journal: killed before a move,
    # the branch is where gitexec last put it, behind merges the journal has.
    repo, gate = killed_with_two_merges(tmp_path)
    git(repo, "update-ref", "-m", "gitexec: start run cut", "refs/heads/gitexec/cut", "main")
    gate.touch()
    code, out, err = gitexec(repo, "resume", "--run", "cut", "--no-monitor")
    assert code == 0, out + err
    assert sorted(first_parent_tickets(repo, "gitexec/cut")) == ["A1", "A2", "B", "C"]
    st = status(repo, "cut")
    assert st["state"] == "completed"
    assert [st["tickets"][t]["attempts"] for t in ("A1", "A2")] == [1, 1]  # merged once


@pytest.mark.parametrize("validate", [[], ["--validate-state"]])
def test_resume_finishes_a_branch_write_the_crash_cut_short(
    tmp_path: Path, validate: list[str]
) -> None:
    """Killed inside the branch's write: libgit2 had appended the reflog entry of the move
    but not yet renamed its lock file into place, so the branch is still at the move's
    start while its reflog names the journal's head (found by kill_resume.py)."""
    repo, gate = killed_with_two_merges(tmp_path)
    ref = repo / ".git" / "refs" / "heads" / "gitexec" / "cut"
    head = git(repo, "rev-parse", "gitexec/cut").strip()
    before = git(repo, "rev-parse", "gitexec/cut@{1}").strip()
    ref.write_text(before + "\n")  # as the crash left it: the lock holds the new head
    ref.with_name("cut.lock").write_text(head + "\n")
    gate.touch()
    code, out, err = gitexec(repo, "resume", "--run", "cut", *validate, "--no-monitor")
    assert code == 0, out + err
    assert sorted(first_parent_tickets(repo, "gitexec/cut")) == ["A1", "A2", "B", "C"]
    st = status(repo, "cut")
    assert st["state"] == "completed"
    assert [st["tickets"][t]["attempts"] for t in ("A1", "A2")] == [1, 1]  # merged once


@pytest.mark.parametrize("message", [["-m", "reset by hand"], []])
def test_a_branch_someone_put_back_on_an_earlier_head_is_not_taken_for_a_cut_off_move(
    tmp_path: Path, message: list[str]
) -> None:
    repo, gate = killed_with_two_merges(tmp_path)
    git(repo, "update-ref", *message, "refs/heads/gitexec/cut", "gitexec/cut~1")
    gate.touch()
    code, _, err = gitexec(repo, "resume", "--run", "cut", "--no-monitor")
    assert code == 2
    assert "someone else moved it; nothing was changed" in err


def test_a_branch_moved_after_the_last_merge_is_settled_by_resume(tmp_path: Path) -> None:
    # Every ticket is merged in the journal when the engine finds its branch moved: the
    # run stops with nothing left to run, and resume still puts the merges on the branch.
    gate = tmp_path / "gate"
    repo = make_project(
        tmp_path / "r",
        {"A": ticket_yaml("A", run="echo A > A.txt"), "G": gated("G", gate)},
    )
    proc = start(repo, "last")
    wait_for(lambda: first_parent_tickets(repo, "gitexec/last") == ["A"])
    git(repo, "branch", "-f", "gitexec/last", "main")
    gate.touch()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "moved by someone else" in err, out + err
    assert {t["status"] for t in status(repo, "last")["tickets"].values()} == {"completed"}
    code, out, err = gitexec(repo, "resume", "--run", "last", "--onto", "current", "--no-monitor")
    assert code == 0, out + err
    assert sorted(first_parent_tickets(repo, "gitexec/last")) == ["A", "G"]
    assert status(repo, "last")["state"] == "completed"
