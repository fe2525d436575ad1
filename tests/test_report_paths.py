"""Where reports may be written: never into a git directory, never silently nowhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from gitexec.commands.run import publish_reports
from gitexec.workspace import Workspace
from tests.helpers import git
from tests.project import captured, gitexec, make_project, run_ok, ticket_yaml


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = make_project(tmp_path / "r", {"A": ticket_yaml("A", run="echo a > a.txt")})
    git(repo, "worktree", "add", "-q", str(tmp_path / "wt"))
    assert run_ok(repo, "--run-id", "r")[0] == 0
    return repo


GIT_PATHS = [
    ".git/HEAD",
    ".git/refs/heads/main",
    ".git",
    ".git/new-file.xml",
    ".git/worktrees/wt/HEAD",
    "../wt/.git",  # a linked worktree's link to its git directory
    "sub/../.git/config",
]


@pytest.mark.parametrize("target", GIT_PATHS)
@pytest.mark.parametrize("option", ["--junit", "--markdown"])
def test_reports_refuse_paths_inside_a_git_directory(repo: Path, option: str, target: str) -> None:
    path = repo / target
    before = path.read_bytes() if path.is_file() else None
    code, out, err = gitexec(repo, "report", "--run", "r", option, target)
    assert code == 2, out + err
    assert "inside the git directory" in err and target.split("/")[-1] in err
    assert (path.read_bytes() if path.is_file() else None) == before
    assert git(repo, "rev-parse", "HEAD").strip()  # the repository still works


def test_run_with_a_report_path_in_the_git_directory_leaves_it_alone(repo: Path) -> None:
    head = (repo / ".git/HEAD").read_bytes()
    code, out, err = run_ok(repo, "--run-id", "r2", "--junit", ".git/HEAD")
    assert code == 2, out + err  # refused before anything runs
    assert err.startswith("gitexec: error: refusing to write the report to .git/HEAD: it is ")
    assert "inside the git directory" in err and "Traceback" not in err
    assert (repo / ".git/HEAD").read_bytes() == head
    assert not (repo / ".git/gitexec/runs/r2").exists()
    ws = Workspace.find(repo)
    with captured() as (_, err_stream):
        assert publish_reports(ws, "r2", junit=".git/HEAD", markdown=None) is False
    assert "inside the git directory" in err_stream.getvalue()
    with captured():
        assert publish_reports(ws, "r2", junit="out/r.xml", markdown=None) is True


def test_report_parent_directories(repo: Path, tmp_path: Path) -> None:
    # Inside the repository, missing directories are made.
    code, out, err = gitexec(repo, "report", "--run", "r", "--junit", "out/deep/r.xml")
    assert code == 0, out + err
    assert (repo / "out/deep/r.xml").is_file()
    # Outside it, a missing directory is more likely a typo: say so, create nothing.
    missing = tmp_path / "nowhere" / "deeper" / "r.md"
    code, out, err = gitexec(repo, "report", "--run", "r", "--markdown", str(missing))
    assert code == 2
    assert f"directory {missing.parent} does not exist" in err
    assert not (tmp_path / "nowhere").exists()


def test_a_report_that_cannot_be_written_fails_the_command(repo: Path) -> None:
    (repo / "taken").mkdir()
    code, _, err = gitexec(repo, "report", "--run", "r", "--junit", "taken")
    assert code == 2
    assert "cannot write the report" in err
    code, out, err = run_ok(repo, "--run-id", "r3", "--junit", "taken")
    assert code == 1, out + err
    assert "cannot write the report" in err and "taken" in err and "Traceback" not in err
    assert (repo / "taken").is_dir()
    ws = Workspace.find(repo)
    with captured():
        assert publish_reports(ws, "r", junit="taken", markdown=None) is False
