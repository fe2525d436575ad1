"""What `run` and `resume` say and refuse, before and after the work: `--into` checked up
front, `--validate` results, resume's header and which run it picks."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.helpers import git, write_files
from tests.project import crashed_run, gitexec, make_project, run_ok, status, ticket_yaml

RUNS = ".git/gitexec/runs"


def _project(tmp_path: Path, **tickets: str) -> Path:
    return make_project(
        tmp_path / "r",
        {
            tid: ticket_yaml(tid, run=run)
            for tid, run in (tickets or {"A": "echo a > a.txt"}).items()
        },
    )


# --- run --into ----------------------------------------------------------------------------


@pytest.mark.parametrize("into", ["HEAD", "main~1", "@", "-x", "a..b"])
def test_into_a_revision_is_refused_before_anything_runs(tmp_path: Path, into: str) -> None:
    repo = _project(tmp_path)
    code, out, err = run_ok(repo, "--run-id", "r1", f"--into={into}")
    assert code == 2, out + err
    assert f"gitexec: error: --into {into}: " in err and "branch" in err
    assert not (repo / RUNS / "r1").exists()  # no journal: nothing ran
    assert "refs/heads/gitexec/r1" not in git(repo, "for-each-ref")


def test_into_a_full_ref_name_lands_on_the_branch(tmp_path: Path) -> None:
    repo = _project(tmp_path)
    code, out, err = run_ok(repo, "--run-id", "r1", "--into", "refs/heads/main")
    assert code == 0, out + err
    assert git(repo, "rev-parse", "main") == git(repo, "rev-parse", "gitexec/r1")
    assert (repo / "a.txt").read_text() == "a\n"  # main is checked out: merged there
    refs = git(repo, "for-each-ref", "--format=%(refname)").split()
    assert not [r for r in refs if r.startswith("refs/heads/refs/")]


def test_into_a_dirty_checkout_is_refused_before_anything_runs(tmp_path: Path) -> None:
    repo = _project(tmp_path)
    write_files(repo, {"README.md": "my edit\n"})
    code, out, err = run_ok(repo, "--run-id", "r1", "--into", "main")
    assert code == 2, out + err
    assert "--into main: it is checked out at" in err and "uncommitted changes" in err
    assert not (repo / RUNS / "r1").exists()
    assert (repo / "README.md").read_text() == "my edit\n"


@pytest.mark.parametrize("failing", [False, True])
def test_a_checkout_made_dirty_during_the_run_keeps_its_reports(
    tmp_path: Path, failing: bool
) -> None:
    repo = tmp_path / "r"
    tickets = {"A": f"echo a > a.txt; echo 'edited meanwhile' >> {repo}/README.md"}
    if failing:
        tickets["B"] = "exit 3"
    repo = _project(tmp_path, **tickets)
    code, out, err = run_ok(
        repo, "--run-id", "r1", "--into", "main", "--junit", "j.xml", "--markdown", "m.md"
    )
    assert code == 1, out + err  # never 2 after the work is done; 1: the landing or B failed
    assert "gitexec: error: --into main: it is checked out at" in err
    assert "uncommitted changes" in err and "merge gitexec/r1" in err
    assert (repo / "j.xml").is_file() and (repo / "m.md").is_file()
    assert status(repo, "r1")["tickets"]["A"]["status"] == "completed"
    assert git(repo, "rev-parse", "main") != git(repo, "rev-parse", "gitexec/r1")
    assert "edited meanwhile" in (repo / "README.md").read_text()  # the user's edit stays


# --- run --validate --------------------------------------------------------------------------


def test_validate_prints_its_result(tmp_path: Path) -> None:
    repo = _project(tmp_path)
    code, out, err = run_ok(repo, "--run-id", "v1", "--validate")
    assert code == 0, out + err
    assert "  validation: ok (" in out
    flaky = tmp_path / "count"
    gate = f"n=$(cat {flaky} 2>/dev/null || echo 0); echo $((n+1)) > {flaky}; [ $n -lt 1 ]"
    bad = make_project(
        tmp_path / "b",
        {"A": ticket_yaml("A", run="echo a > a")},
        config=f"version: 1\ngates:\n  integration: [{json.dumps(gate)}]\n",
    )
    code, out, err = run_ok(bad, "--run-id", "v2", "--validate")
    assert code == 1, out + err
    lines = out.splitlines()
    at = lines.index("  validation: 1 problem(s)")
    assert lines[at + 1].startswith("    - the final result fails its gate")


# --- resume ----------------------------------------------------------------------------------


def test_resume_says_what_it_continues(tmp_path: Path) -> None:
    repo, _ = crashed_run(tmp_path / "r", "dead")  # resume kills its orphaned agent
    code, out, err = gitexec(repo, "resume", "--no-monitor")
    assert code == 0, out + err
    header = out.splitlines()[0]
    assert header.startswith("resuming run dead (crashed, started ")
    assert header.endswith(" ago): 1 of 1 ticket(s) left (1 interrupted)"), header


def _age(repo: Path, run_id: str, seconds: float) -> None:
    """Make a run's journal say it started `seconds` ago."""
    path = repo / RUNS / run_id / "journal.jsonl"
    lines = path.read_text().splitlines()
    first = json.loads(lines[0])
    shift = time.time() - seconds - first["t"]
    out = []
    for line in lines:
        record = json.loads(line)
        record["t"] += shift
        out.append(json.dumps(record))
    path.write_text("\n".join(out) + "\n")


def test_resume_asks_which_run_when_it_is_old(tmp_path: Path) -> None:
    repo, pgid = crashed_run(tmp_path / "r", "old")
    os.killpg(pgid, 9)
    _age(repo, "old", 3 * 86400)
    code, out, err = gitexec(repo, "resume", "--no-monitor")
    assert code == 2, out + err
    assert err.startswith("gitexec: error: run old was started 3d ago: say which run to resume")
    assert "\n  old  crashed, started 3d ago, 0 of 1 ticket(s) completed\n" in err + "\n"
    assert status(repo, "old")["state"] == "crashed"  # untouched
    code, out, err = gitexec(repo, "resume", "--run", "old", "--no-monitor")
    assert code == 0, out + err
    assert out.startswith("resuming run old (crashed, started 3d ago): 1 of 1 ticket(s) left")


def test_resume_asks_which_run_when_a_newer_run_exists(tmp_path: Path) -> None:
    repo, pgid = crashed_run(tmp_path / "r", "old")
    os.killpg(pgid, 9)
    code, out, err = run_ok(repo, "--run-id", "new", "--only", "A")
    assert code == 0, out + err
    code, out, err = gitexec(repo, "resume", "--no-monitor")
    assert code == 2, out + err
    assert err.startswith("gitexec: error: the newest run is new (completed, started ")
    assert "say which run to resume with `git exec resume --run ID`" in err
    assert "\n  old  crashed, started " in err
    assert status(repo, "old")["state"] == "crashed"
