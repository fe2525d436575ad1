"""State gitexec may not write or read (permissions): a clear error naming the path, exit 2,
before anything is changed. Run as an unprivileged user (root ignores permissions)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import git
from tests.project import make_project, ticket_yaml
from tests.unprivileged import cli, sandbox


def _chmod_tree(root: Path, *, writable: bool = False, readable: bool = True) -> None:
    """Take write (and maybe read) permission away from everything under `root`."""
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            path = Path(dirpath, name)
            path.chmod(0o444 if readable else 0)
        for name in dirnames:
            path = Path(dirpath, name)
            if not path.is_symlink():
                path.chmod(0o555 if readable else 0)
    root.chmod((0o755 if writable else 0o555) if readable else 0)


def _crashed(repo: Path, run_id: str) -> bytes:
    """Make a finished run look crashed (its end not recorded); its journal's bytes."""
    journal = repo / ".git/gitexec/runs" / run_id / "journal.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(line for line in lines if b'"run-finished"' not in line))
    return journal.read_bytes()


def _project(box: Path) -> Path:
    repo = make_project(
        box / "r", {"A": ticket_yaml("A", run="echo a > a"), "B": ticket_yaml("B", run="true")}
    )
    proc = cli(box, repo, "run", "--no-monitor", "--run-id", "r1", "--only", "A")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return repo


def _refused(proc: subprocess.CompletedProcess[str], verb: str, target: str) -> str:
    """The command refused (exit 2) with `gitexec: error: <verb> <path under target>: ...`;
    `verb` may be several, separated by `|`."""
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2, text
    assert "internal error" not in text and "Traceback" not in text
    prefixes = [f"gitexec: error: {v} " for v in verb.split("|")]
    line = next((x for x in proc.stderr.splitlines() if x.startswith(tuple(prefixes))), None)
    assert line is not None, text
    prefix = next(p for p in prefixes if line.startswith(p))
    where = line[len(prefix) :].split(":", 1)[0]
    repo = proc.args[4]  # python -m gitexec -C REPO ...
    where = os.path.relpath(where, repo) if os.path.isabs(where) else where
    assert where.startswith(target) or where.startswith(os.path.dirname(target)), line
    return line


@pytest.mark.parametrize("target", [".git/gitexec", ".git/gitexec/runs", ".git/refs/heads"])
def test_state_that_cannot_be_written_is_refused_before_anything_runs(target: str) -> None:
    with sandbox() as box:
        repo = _project(box)
        journal = _crashed(repo, "r1")
        _chmod_tree(repo / target)
        proc = cli(box, repo, "run", "--no-monitor", "--run-id", "r2")
        line = _refused(proc, "cannot write", target)
        assert "permission denied" in line
        assert not (repo / ".git/gitexec/runs/r2").exists()
        assert "gitexec/r2" not in git(repo, "branch", "--list")

        proc = cli(box, repo, "resume", "--run", "r1", "--no-monitor")
        _refused(proc, "cannot write", target)
        assert (repo / ".git/gitexec/runs/r1/journal.jsonl").read_bytes() == journal

        proc = cli(box, repo, "clean", "--all")
        _refused(proc, "cannot write", target)
        assert (repo / ".git/gitexec/runs/r1").is_dir()
        assert "gitexec/r1" in git(repo, "branch", "--list")

        # Reading needs no write permission.
        proc = cli(box, repo, "status", "--run", "r1")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert proc.stdout.startswith("run r1: crashed")


@pytest.mark.parametrize("target", [".git/gitexec", ".git/gitexec/runs"])
def test_state_that_cannot_be_read_is_named(target: str) -> None:
    with sandbox() as box:
        repo = _project(box)
        _chmod_tree(repo / target, readable=False)
        for args in (["status"], ["agents"], ["report"], ["runs"], ["clean"], ["monitor"]):
            proc = cli(box, repo, *args)
            line = _refused(proc, "cannot read", target)
            assert line.endswith("permission denied; gitexec keeps its runs there. Make it "
                                 "readable, or run gitexec as the user who owns it")  # fmt: skip
        proc = cli(box, repo, "run", "--no-monitor", "--run-id", "r2")
        _refused(proc, "cannot write|cannot access", target)
        proc = cli(box, repo, "resume", "--run", "r1", "--no-monitor")
        assert proc.returncode == 2 and "internal error" not in proc.stderr, proc.stderr
