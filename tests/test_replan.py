"""Changing a run's plan while it goes, through the CLI against live runs: enqueue, cancel,
retry --keep-worktree, adjust --resource / --agent; each also across kill -9 and resume."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from gitexec.journal import read_records
from tests.helpers import git, until_file, wait_for, write_files
from tests.project import first_parent_tickets, gitexec, make_project, status, ticket_yaml
from tests.test_control import LiveRun


def gated(tid: str, gate: Path, **fields: Any) -> str:
    run = f"{until_file(gate)}; echo {tid} > {tid}.txt"
    return ticket_yaml(tid, run=run, **fields)


class Live(LiveRun):
    """A live run that may also be killed (-9) and that gets longer to finish."""

    def finish(self, timeout: float = 90) -> tuple[int, str, str]:
        return super().finish(timeout)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.communicate(timeout=30)


def events(repo: Path, run_id: str) -> list[dict[str, Any]]:
    return read_records(repo / f".git/gitexec/runs/{run_id}/journal.jsonl")


def resume(repo: Path, run_id: str) -> None:
    code, out, err = gitexec(repo, "resume", "--run", run_id, "--no-monitor")
    assert code == 0, out + err


# --- enqueue -----------------------------------------------------------------------------------


def test_enqueue_into_a_running_run(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    repo = make_project(tmp_path / "r", {"A": gated("A", gate)})
    write_files(repo, {"new/X.yaml": ticket_yaml("X", depends_on=["A"], run="cat A.txt > X.txt")})
    live = Live(repo, "eq")
    wait_for(lambda: live.state("A") == "running")
    code, out, err = gitexec(repo, "enqueue", "new/X.yaml")
    assert code == 0, out + err
    assert "added X" in out
    assert live.state("X") == "pending"
    gate.touch()
    code, out, err = live.finish()
    assert code == 0, out + err
    assert sorted(first_parent_tickets(repo, "gitexec/eq")) == ["A", "X"]
    assert git(repo, "show", "gitexec/eq:X.txt") == "A\n"  # it started after A merged
    recorded = git(repo, "show", "gitexec/eq:.gitexec/tickets/X.yaml")
    assert "status: completed" in recorded


def test_enqueue_is_checked_like_check(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    repo = make_project(tmp_path / "r", {"A": gated("A", gate)})
    write_files(
        repo,
        {
            "new/Y.yaml": ticket_yaml("Y", depends_on=["Z"], run="true"),
            "new/Z.yaml": ticket_yaml("Z", depends_on=["Y"], run="true"),
            "new/A.yaml": ticket_yaml("A", run="true"),
        },
    )
    live = Live(repo, "ck")
    wait_for(lambda: live.state("A") == "running")
    code, _, err = gitexec(repo, "enqueue", "new/Y.yaml", "new/Z.yaml")
    assert code == 2
    assert "dependency cycle: Y -> Z -> Y" in err
    assert ".gitexec/tickets/Y.yaml:" in err
    code, _, err = gitexec(repo, "enqueue", "new/A.yaml")
    assert code == 2 and "already in the repository" in err
    gate.touch()
    assert live.finish()[0] == 0
    assert set(status(repo, "ck")["tickets"]) == {"A"}


def test_enqueue_survives_kill_9_and_into_a_stopped_run(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    repo = make_project(tmp_path / "r", {"A": gated("A", gate)})
    write_files(
        repo,
        {
            "new/X.yaml": ticket_yaml("X", depends_on=["A"], run="echo x > x.txt"),
            "new/Y.yaml": ticket_yaml("Y", depends_on=["X"], run="echo y > y.txt"),
        },
    )
    live = Live(repo, "ek")
    wait_for(lambda: live.state("A") == "running")
    assert gitexec(repo, "enqueue", "new/X.yaml")[0] == 0
    live.kill()
    # No engine now: the ticket is journaled (and its file committed) for resume.
    code, out, err = gitexec(repo, "enqueue", "new/Y.yaml", "--run", "ek")
    assert code == 0, out + err
    assert "git exec resume --run ek" in out
    gate.touch()
    resume(repo, "ek")
    assert sorted(first_parent_tickets(repo, "gitexec/ek")) == ["A", "X", "Y"]
    assert status(repo, "ek")["state"] == "completed"


def test_enqueue_into_a_paused_run_by_id_and_from_a_revision(tmp_path: Path) -> None:
    """X by its bare id from the work tree's ticket folder, Y from a tagged revision whose
    file is gone from the work tree: both wait while the run is paused, and run after."""
    gate = tmp_path / "gate"
    repo = make_project(tmp_path / "r", {"A": gated("A", gate)})
    write_files(repo, {"later/Y.yaml": ticket_yaml("Y", depends_on=["A"], run="echo y > y.txt")})
    git(repo, "add", "later")
    git(repo, "commit", "-qm", "Y for later")
    git(repo, "tag", "with-y")
    git(repo, "rm", "-q", "-r", "later")
    git(repo, "commit", "-qm", "not yet")
    live = Live(repo, "pz")
    wait_for(lambda: live.state("A") == "running")
    code, out, err = gitexec(repo, "pause")
    assert code == 0, out + err
    write_files(repo, {".gitexec/tickets/X.yaml": ticket_yaml("X", run="echo x > x.txt")})
    code, out, err = gitexec(repo, "enqueue", "X")
    assert code == 0, out + err
    assert "added X" in out
    code, out, err = gitexec(repo, "enqueue", "--rev", "with-y", "later/Y.yaml")
    assert code == 0, out + err
    assert "added Y" in out
    code, _, err = gitexec(repo, "enqueue", "--rev", "with-y", "later/Z.yaml")
    assert code != 0 and "later/Z.yaml" in err and "with-y" in err
    gate.touch()
    wait_for(lambda: live.state("A") == "completed")
    st = status(repo, "pz")
    assert st["state"] == "paused"
    assert (st["tickets"]["X"]["status"], st["tickets"]["Y"]["status"]) == ("pending", "pending")
    assert gitexec(repo, "resume")[0] == 0
    code, out, err = live.finish()
    assert code == 0, out + err
    assert sorted(first_parent_tickets(repo, "gitexec/pz")) == ["A", "X", "Y"]
    assert git(repo, "show", "gitexec/pz:y.txt") == "y\n"
    recorded = git(repo, "show", "gitexec/pz:.gitexec/tickets/Y.yaml")
    assert "status: completed" in recorded


# --- cancel ------------------------------------------------------------------------------------


def test_cancel_pending_blocks_dependents_and_survives_resume(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    repo = make_project(
        tmp_path / "r",
        {
            "A": gated("A", gate),
            "B": ticket_yaml("B", depends_on=["A"], run="echo b > b"),
            "C": ticket_yaml("C", depends_on=["B"], run="echo c > c"),
            "D": ticket_yaml("D", depends_on=["A"], run="echo d > d"),
        },
    )
    live = Live(repo, "cx", "--jobs", "1")
    wait_for(lambda: live.state("A") == "running")
    code, out, err = gitexec(repo, "cancel", "B")
    assert code == 0, out + err
    assert live.state("B") == "cancelled"
    st = status(repo, "cx")["tickets"]
    assert st["C"]["status"] == "blocked" and st["C"]["reason"] == "dependency B cancelled"
    live.kill()
    gate.touch()
    code, out, err = gitexec(repo, "resume", "--run", "cx", "--no-monitor")
    assert code == 1, out + err  # tickets were cancelled and blocked
    st = status(repo, "cx")["tickets"]
    assert st["B"]["status"] == "cancelled" and st["C"]["status"] == "blocked"
    assert st["A"]["status"] == "completed" and st["D"]["status"] == "completed"


def test_cancel_running_needs_force(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    repo = make_project(tmp_path / "r", {"A": gated("A", gate), "B": ticket_yaml("B", run="true")})
    live = Live(repo, "cf", "--jobs", "1")
    wait_for(lambda: any(e["event"] == "agent-started" for e in events(repo, "cf")))
    code, _, err = gitexec(repo, "cancel", "A")
    assert code == 2 and "A is running; `cancel --force` stops its agent" in err
    code, out, err = gitexec(repo, "cancel", "A", "--force")
    assert code == 0, out + err
    code, _, _ = live.finish()
    assert code == 1  # a cancelled ticket did not complete
    st = status(repo, "cf")["tickets"]
    assert st["A"]["status"] == "cancelled" and st["B"]["status"] == "completed"
    assert not gate.exists()  # its agent never got to finish


def test_a_ticket_cancelled_while_running_stays_cancelled_after_kill_9(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    repo = make_project(tmp_path / "r", {"A": gated("A", gate), "B": gated("B", gate)})
    live = Live(repo, "ck", "--jobs", "1")
    wait_for(lambda: any(e["event"] == "agent-started" for e in events(repo, "ck")))
    first = next(e["ticket"] for e in events(repo, "ck") if e["event"] == "agent-started")
    other = "B" if first == "A" else "A"
    code, out, err = gitexec(repo, "cancel", first, "--force")
    assert code == 0, out + err
    wait_for(lambda: live.state(first) == "cancelled")
    live.kill()
    gate.touch()
    code, out, err = gitexec(repo, "resume", "--run", "ck", "--no-monitor")
    assert code == 1, out + err  # a cancelled ticket did not complete
    st = status(repo, "ck")["tickets"]
    assert st[first]["status"] == "cancelled" and st[other]["status"] == "completed"
    assert first_parent_tickets(repo, "gitexec/ck") == [other]


# --- retry --keep-worktree ---------------------------------------------------------------------


def test_retry_keep_worktree_starts_from_what_the_failed_attempt_left(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    # The first attempt writes part 1 and fails; an attempt finding part 1 adds part 2.
    run = "if [ -f part1 ]; then echo 2 > part2; else echo 1 > part1; exit 1; fi"
    repo = make_project(tmp_path / "r", {"A": ticket_yaml("A", run=run), "H": gated("H", gate)})
    live = Live(repo, "kw")
    wait_for(lambda: live.state("A") == "failed")
    code, out, err = gitexec(repo, "retry", "A", "--keep-worktree")
    assert code == 0, out + err
    wait_for(lambda: live.state("A") == "completed")
    gate.touch()
    assert live.finish()[0] == 0
    assert git(repo, "show", "gitexec/kw:part1") == "1\n"
    assert git(repo, "show", "gitexec/kw:part2") == "2\n"
    # Without it, a retry starts afresh (and fails again the same way).
    code, _, err = gitexec(repo, "retry", "A", "--keep-worktree", "--run", "kw")
    assert code == 2  # the run is over


def test_a_kept_worktree_survives_kill_9_and_resume(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    # The first attempt writes part 1 and fails; the retry (from what it left) waits for
    # the gate, so the engine dies while it runs.
    run = (
        f"if [ -f part1 ]; then {until_file(gate)}; echo 2 > part2; else echo 1 > part1; exit 1; fi"
    )
    repo = make_project(tmp_path / "r", {"A": ticket_yaml("A", run=run), "H": gated("H", gate)})
    live = Live(repo, "kk")
    wait_for(lambda: live.state("A") == "failed")
    code, out, err = gitexec(repo, "retry", "A", "--keep-worktree")
    assert code == 0, out + err
    wait_for(lambda: len([e for e in events(repo, "kk") if e["event"] == "agent-started"]) >= 3)
    live.kill()
    gate.touch()
    resume(repo, "kk")
    assert git(repo, "show", "gitexec/kk:part1") == "1\n"
    assert git(repo, "show", "gitexec/kk:part2") == "2\n"


# --- adjust --resource / --agent ---------------------------------------------------------------


def running_agents(repo: Path, run_id: str) -> int:
    st = status(repo, run_id)
    return sum(1 for t in st["tickets"].values() if t["status"] == "running")


def test_adjust_resource_and_agent_limits_live_and_after_resume(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    tickets = {t: gated(t, gate, resources={"gpu": 2}) for t in "ABC"}
    repo = make_project(tmp_path / "r", tickets)
    live = Live(repo, "rs", "--jobs", "3")
    wait_for(lambda: running_agents(repo, "rs") == 1)  # 2 + 2 > a capacity of 3 (jobs)
    code, out, err = gitexec(repo, "adjust", "--resource", "gpu=4")
    assert code == 0, out + err
    wait_for(lambda: running_agents(repo, "rs") == 2)
    code, out, err = gitexec(repo, "adjust", "--agent", "shell=1")
    assert code == 0, out + err
    live.kill()
    resumed = subprocess.Popen(
        [sys.executable, "-m", "gitexec", "resume", "--run", "rs", "--no-monitor"],
        cwd=repo,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: running_agents(repo, "rs") == 1)
    assert running_agents(repo, "rs") == 1  # the agent limit of 1 survived resume
    gate.touch()
    assert resumed.wait(timeout=90) == 0
    assert status(repo, "rs")["state"] == "completed"
