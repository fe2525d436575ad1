"""`git exec clean`: what it removes, what it keeps (and says so), and what it cannot remove."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

from tests.helpers import commit_all, git, write_files
from tests.project import crashed_run, gitexec, make_project, run_ok, ticket_yaml
from tests.unprivileged import cli, sandbox


def project(path: Path) -> Path:
    return make_project(path, {"A": ticket_yaml("A", run="echo a > a.txt")})


def branches(repo: Path) -> list[str]:
    return git(repo, "branch", "--list", "--format=%(refname:short)", "gitexec/*").split()


def test_clean_all_keeps_a_branch_checked_out_and_committed_on(tmp_path: Path) -> None:
    repo = project(tmp_path / "r")
    for run_id in ("r1", "r2", "r3"):
        assert run_ok(repo, "--run-id", run_id)[0] == 0
    git(repo, "checkout", "-q", "gitexec/r1")
    write_files(repo, {"mine.txt": "my work\n"})
    mine = commit_all(repo, "my own work on the result")
    git(repo, "worktree", "add", "-q", str(tmp_path / "wt"), "gitexec/r2")
    code, out, err = gitexec(repo, "clean", "--all")
    assert code == 0, out + err
    assert "kept branch gitexec/r1: checked out in " in out
    assert f"kept branch gitexec/r2: checked out in {tmp_path / 'wt'}" in out
    assert "removed run r3" in out
    assert branches(repo) == ["gitexec/r1", "gitexec/r2"]
    assert git(repo, "rev-parse", "HEAD").strip() == mine
    assert git(repo, "symbolic-ref", "HEAD").strip() == "refs/heads/gitexec/r1"


def test_clean_keeps_a_branch_whose_tip_gitexec_did_not_write(tmp_path: Path) -> None:
    repo = project(tmp_path / "r")
    assert run_ok(repo, "--run-id", "r1")[0] == 0
    git(repo, "checkout", "-q", "gitexec/r1")
    write_files(repo, {"mine.txt": "my work\n"})
    mine = commit_all(repo, "my own work on the result")
    git(repo, "checkout", "-q", "main")
    for args in (("--run", "r1"), ("--all",)):
        code, out, err = gitexec(repo, "clean", *args)
        assert code == 0, out + err
        assert f"kept branch gitexec/r1: its tip {mine[:12]} is not a commit gitexec wrote" in out
        assert git(repo, "rev-parse", "gitexec/r1").strip() == mine
    # Moved back onto a commit gitexec wrote, it goes.
    git(repo, "branch", "-f", "gitexec/r1", "gitexec/r1~1")
    code, out, _ = gitexec(repo, "clean", "--all")
    assert code == 0 and branches(repo) == []


def test_clean_reads_a_reflog_entry_without_a_message(tmp_path: Path) -> None:
    repo = project(tmp_path / "r")
    assert run_ok(repo, "--run-id", "r1")[0] == 0
    write_files(repo, {"mine.txt": "my work\n"})
    mine = commit_all(repo, "my own work")
    git(repo, "update-ref", "refs/heads/gitexec/r1", mine)  # no -m: no message in the reflog
    code, out, err = gitexec(repo, "clean", "--all")
    assert code == 0, out + err
    assert f"kept branch gitexec/r1: its tip {mine[:12]} is not a commit gitexec wrote" in out


def test_clean_says_which_runs_it_keeps_and_all_removes_their_branches(tmp_path: Path) -> None:
    repo = project(tmp_path / "r")
    runs = [f"k{n:02}" for n in range(12)]
    for run_id in runs:
        assert run_ok(repo, "--run-id", run_id)[0] == 0
    code, out, err = gitexec(repo, "clean")
    assert code == 0, out + err
    assert "removed worktrees: slot-1" in out
    assert "removed run k00 (branch gitexec/k00 kept)" in out
    assert "removed run k01 (branch gitexec/k01 kept)" in out
    assert (
        "kept the newest 10 finished runs (k02 … k11); `git exec clean --all` removes them" in out
    )
    assert git(repo, "for-each-ref", "refs/gitexec/k00") == ""
    code, out, err = gitexec(repo, "clean", "--all")
    assert code == 0, out + err
    assert "removed run k00" in out and "removed run k11" in out
    assert branches(repo) == []
    assert git(repo, "for-each-ref", "refs/gitexec/") == ""


def test_clean_says_it_keeps_recent_and_resumable_runs(tmp_path: Path) -> None:
    repo, pgid = crashed_run(tmp_path / "r")
    os.killpg(pgid, signal.SIGKILL)
    assert run_ok(repo, "--run-id", "done")[0] == 0
    code, out, err = gitexec(repo, "clean")
    assert code == 0, out + err
    assert "kept 1 finished run (done): clean keeps the newest 10;" in out
    assert "kept crashed run dead: `git exec resume --run dead` continues it" in out


def test_clean_run_whose_directory_is_gone_removes_what_is_left(tmp_path: Path) -> None:
    repo = project(tmp_path / "r")
    assert run_ok(repo, "--run-id", "r1")[0] == 0
    shutil.rmtree(repo / ".git" / "gitexec" / "runs" / "r1")
    code, out, err = gitexec(repo, "clean", "--run", "r1")
    assert code == 0, out + err
    assert "removed run r1" in out
    assert branches(repo) == [] and git(repo, "for-each-ref", "refs/gitexec/") == ""
    code, out, err = gitexec(repo, "clean", "--run", "r1")
    assert code == 2 and "no run 'r1'" in err
    code, out, err = gitexec(repo, "clean", "--run", "../../x")
    assert code == 2 and "--run: invalid id '../../x'" in err


def test_clean_removes_the_pool_from_the_cache_dir_wherever_it_was_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = project(tmp_path / "r")
    assert run_ok(repo, "--run-id", "r1")[0] == 0
    monkeypatch.setenv("GITEXEC_WORKTREE_DIR", str(tmp_path / "elsewhere"))
    assert run_ok(repo, "--run-id", "r2")[0] == 0
    pools = [*Path(tmp_path / "elsewhere").iterdir(), *(Path.home() / ".cache/gitexec").iterdir()]
    assert len(pools) == 2 and all((p / "slot-1").is_dir() for p in pools)
    monkeypatch.delenv("GITEXEC_WORKTREE_DIR")
    code, out, err = gitexec(repo, "clean")
    assert code == 0, out + err
    assert not any(p.exists() for p in pools)
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1


def test_clean_reports_what_it_cannot_remove_and_fails() -> None:
    with sandbox() as box:
        repo = project(box / "r")
        proc = cli(box, repo, "run", "--no-monitor", "--run-id", "r1")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        (pool,) = (box / "home" / ".cache" / "gitexec").iterdir()
        pool.chmod(0o555)  # the slots cannot be unlinked from it
        proc = cli(box, repo, "clean", "--all")
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert f"could not remove {pool / 'slot-1'}" in proc.stderr
        assert "removed run r1" in proc.stdout
        pool.chmod(0o755)
        proc = cli(box, repo, "clean")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert not pool.exists()
