"""The hooks as pre-commit itself loads and runs them, against real repositories."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import commit_all, git, write_files
from tests.project import make_project, ticket_yaml

ROOT = Path(__file__).resolve().parent.parent


def pre_commit(*args: str, cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PRE_COMMIT_HOME": str(home), "PRE_COMMIT_COLOR": "never"}
    return subprocess.run(
        [sys.executable, "-m", "pre_commit", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )


def test_manifest_is_valid(tmp_path: Path) -> None:
    proc = pre_commit(
        "validate-manifest", str(ROOT / ".pre-commit-hooks.yaml"), cwd=ROOT, home=tmp_path
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_try_repo_check_and_plan_hooks(tmp_path: Path) -> None:
    """pre-commit installs gitexec from this checkout and runs the hooks."""
    if not (ROOT / ".git").exists():
        pytest.skip("try-repo needs the project as a git repository")
    home = tmp_path / "pre-commit-home"
    repo = make_project(tmp_path / "r", {"A": ticket_yaml("A", run="true")})

    proc = pre_commit("try-repo", str(ROOT), "gitexec-check", "--all-files", cwd=repo, home=home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "gitexec check" in proc.stdout and "Passed" in proc.stdout

    write_files(
        repo, {".gitexec/tickets/B.yaml": ticket_yaml("B", depends_on=["NOPE"], run="true")}
    )
    git(repo, "add", "-A")
    proc = pre_commit("try-repo", str(ROOT), "gitexec-check", "--all-files", cwd=repo, home=home)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert ".gitexec/tickets/B.yaml:3:14: error: unknown dependency 'NOPE'" in proc.stdout

    # gitexec-plan: a committed plan that went stale is regenerated and the hook fails once.
    write_files(repo, {".gitexec/tickets/B.yaml": ticket_yaml("B", depends_on=["A"], run="true")})
    subprocess.run(
        [sys.executable, "-m", "gitexec", "plan", "-o", ".gitexec/plan.yaml"], cwd=repo, check=True
    )
    commit_all(repo, "plan")
    write_files(repo, {".gitexec/tickets/C.yaml": ticket_yaml("C", run="true")})
    git(repo, "add", "-A")
    proc = pre_commit("try-repo", str(ROOT), "gitexec-plan", "--all-files", cwd=repo, home=home)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "was out of date and has been regenerated" in proc.stdout
    assert "C" in (repo / ".gitexec/plan.yaml").read_text()
    git(repo, "add", "-A")
    proc = pre_commit("try-repo", str(ROOT), "gitexec-plan", "--all-files", cwd=repo, home=home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
