"""Scale-out: waves of tickets run on separate "runners" (fresh clones) and are collected."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import git
from tests.project import (
    first_parent_tickets,
    gitexec,
    make_project,
    ticket_yaml,
    tree_without_engine_files,
)

DEPS = {"A": [], "B": [], "C": ["A"], "D": ["A", "B"], "E": ["C", "D"], "F": []}


def project(path: Path, failing: str | None = None) -> Path:
    tickets = {}
    for tid, deps in DEPS.items():
        run = f"mkdir -p out; cat /dev/null {' '.join(f'out/{d}' for d in deps)} > out/{tid}; echo {tid} >> out/{tid}"
        if tid == failing:
            run = "exit 4"
        tickets[tid] = ticket_yaml(tid, depends_on=deps, paths=[f"out/{tid}"], run=run)
    config = "version: 1\nmerge:\n  rules:\n    - {paths: [CHANGELOG.md], strategy: union}\n"
    return make_project(path, tickets, config=config)


def clone(origin: Path, path: Path) -> Path:
    git(origin.parent, "clone", "-q", str(origin), str(path))
    return path


def run_waves(origin: Path, work: Path, run_id: str) -> tuple[Path, list[int]]:
    """Play a workflow: per wave, each ticket on its own clone, then a collect on another."""
    planner = clone(origin, work / "planner")
    code, out, err = gitexec(planner, "matrix", "--count")
    assert code == 0, err
    waves = int(out)
    state: Path | None = None
    codes: list[int] = []
    collector = planner
    for wave in range(1, waves + 1):
        code, out, _ = gitexec(planner, "matrix", "--wave", str(wave))
        assert code == 0
        results = work / f"results-{wave}"
        results.mkdir()
        for entry in json.loads(out)["include"]:
            runner = clone(origin, work / f"runner-{wave}-{entry['ticket']}")
            args = ["run-ticket", entry["ticket"], "--out", str(results), "--run-id", run_id]
            if state is not None:
                args += ["--state", str(state)]
            gitexec(runner, *args)
        collector = clone(origin, work / f"collector-{wave}")
        next_state = work / f"state-{wave}"
        args = ["collect", str(results)]
        args += [str(state)] if state is not None else []
        args += ["--run-id", run_id, "--out", str(next_state)]
        args += [] if state is not None else ["--base", "HEAD"]
        if wave < waves:
            args.append("--keep-going")
        code, out, err = gitexec(collector, *args)
        codes.append(code)
        assert code in (0, 1), out + err
        state = next_state
    # The last collector holds the whole run.
    return collector, codes


def test_waves_on_separate_runners_give_the_local_result(tmp_path: Path) -> None:
    origin = project(tmp_path / "origin")
    local = clone(origin, tmp_path / "local")
    assert gitexec(local, "run", "--no-monitor", "--run-id", "R")[0] == 0

    collector, codes = run_waves(origin, tmp_path, "R")
    assert codes[-1] == 0
    assert tree_without_engine_files(collector, "gitexec/R") == tree_without_engine_files(
        local, "gitexec/R"
    )
    assert sorted(first_parent_tickets(collector, "gitexec/R")) == sorted(DEPS)
    _code, out, _ = gitexec(collector, "status", "--run", "R", "--format", "json")
    st = json.loads(out)
    assert st["state"] == "completed"
    assert {t["status"] for t in st["tickets"].values()} == {"completed"}
    assert "status: completed" in git(collector, "show", "gitexec/R:.gitexec/tickets/E.yaml")


def test_a_failure_blocks_later_waves_and_is_recorded(tmp_path: Path) -> None:
    origin = project(tmp_path / "origin", failing="A")
    collector, codes = run_waves(origin, tmp_path, "R2")
    assert codes[-1] == 1
    _code, out, _ = gitexec(collector, "status", "--run", "R2", "--format", "json")
    st = json.loads(out)
    states = {tid: t["status"] for tid, t in st["tickets"].items()}
    assert states == {
        "A": "failed",
        "B": "completed",
        "C": "blocked",
        "D": "blocked",
        "E": "blocked",
        "F": "completed",
    }
    assert st["state"] == "failed"
    assert "status: failed" in git(collector, "show", "gitexec/R2:.gitexec/tickets/A.yaml")
    assert "status: blocked" in git(collector, "show", "gitexec/R2:.gitexec/tickets/E.yaml")


def test_matrix_and_errors(tmp_path: Path) -> None:
    repo = project(tmp_path / "r")
    code, out, _ = gitexec(repo, "matrix", "--wave", "1")
    assert code == 0
    first = json.loads(out)["include"]
    assert {e["ticket"] for e in first} == {"A", "B", "F"} or len(first) <= 4
    code, _, err = gitexec(repo, "matrix", "--wave", "99")
    assert code == 2
    assert "--wave must be between 1 and" in err
    code, _, err = gitexec(repo, "collect", str(tmp_path), "--run-id", "x")
    assert code == 2
    assert "needs --base" in err


def test_generated_workflow_is_valid(tmp_path: Path) -> None:
    repo = project(tmp_path / "r")
    code, _, _ = gitexec(repo, "workflow", "-o", "waves.yml", "--install", "gitexec==0.1.0")
    assert code == 0
    text = (repo / "waves.yml").read_text()
    assert "wave-3:" in text and "collect-3:" in text and "wave-4:" not in text
    assert "${{" not in "".join(
        line for line in text.splitlines() if line.lstrip().startswith("run:")
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.github-workflows",
            str(repo / "waves.yml"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    from tests.test_action import _actionlint

    actionlint = _actionlint()
    if actionlint is None:
        pytest.skip("actionlint is not installed here")
    proc = subprocess.run(
        [*actionlint, str(repo / "waves.yml")], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
