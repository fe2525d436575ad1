"""What a live run shows while it goes: start lines when agents start, waiting states by
name, times of running tickets, and overlaps that merge rules do not settle."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from gitexec.journal import read_records
from tests.helpers import until_file, wait_for
from tests.project import gitexec, make_project, status, ticket_yaml


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "gate"
    yield path
    path.touch()  # never leave agents waiting


def _waits(gate: Path, then: str) -> str:
    return f"{until_file(gate)}; {then}"


def _run(repo: Path, run_id: str, *args: str) -> subprocess.Popen[str]:
    """`git exec run` with plain event lines on stderr (not a terminal, no --no-monitor)."""
    return subprocess.Popen(
        [sys.executable, "-m", "gitexec", "run", "--run-id", run_id, *args],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class _Lines:
    """The event lines a live run has printed on stderr so far (read on a thread)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert proc.stderr is not None
        self._thread = threading.Thread(target=self._read, args=(proc.stderr,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n").split("] ", 1)[-1])

    def done(self) -> list[str]:
        self._thread.join(timeout=60)
        return self.lines

    def finish(self, proc: subprocess.Popen[str]) -> tuple[str, list[str]]:
        """Wait for the run; its stdout, and every line it printed on stderr (read only by
        this thread: `communicate` would race it for them)."""
        assert proc.stdout is not None
        out = proc.stdout.read()
        proc.wait(timeout=60)
        return out, self.done()


def _events(repo: Path, run_id: str) -> list[dict[str, Any]]:
    return read_records(repo / ".git/gitexec/runs" / run_id / "journal.jsonl")


def _agents(repo: Path) -> dict[str, dict[str, object]]:
    code, out, err = gitexec(repo, "agents", "--format", "json")
    assert code == 0, err
    return {str(r["ticket"]): r for r in json.loads(out)["agents"]}


def test_a_ticket_waiting_for_an_agent_place_is_not_shown_as_started(
    tmp_path: Path, gate: Path
) -> None:
    # jobs 1: B's worktree is prepared in the spare slot while A's agent runs, then waits.
    repo = make_project(
        tmp_path / "r",
        {"A": ticket_yaml("A", run=_waits(gate, "echo a > a")), "B": ticket_yaml("B", run="true")},
    )
    proc = _run(repo, "w", "--jobs", "1")
    printed = _Lines(proc)
    try:
        wait_for(lambda: any(e["event"] == "attempt-waiting" for e in _events(repo, "w")))
        rows = _agents(repo)
        assert rows["B"]["status"] == "waiting for a place"
        assert rows["A"]["status"] == "executing"
        _, table, _ = gitexec(repo, "status", "--run", "w")
        assert re.search(r"^\s+B\s+waiting for a place\b", table, re.M), table
        # B holds the spare slot, but no agent of it runs: no start line for it yet.
        assert any(line.startswith("start     A (slot 1") for line in printed.lines)
        assert not any(line.startswith("start     B") for line in printed.lines), printed.lines
    finally:
        gate.touch()
    out, lines = printed.finish(proc)
    assert proc.returncode == 0, out + "\n".join(lines)
    starts = [line for line in lines if line.startswith("start")]
    assert starts == [
        "start     A (slot 1, shell, attempt 1)",
        "start     B (slot 2, shell, attempt 1)",
    ]


def test_a_merge_awaiting_its_gate_is_shown_by_name(tmp_path: Path, gate: Path) -> None:
    repo = make_project(
        tmp_path / "r",
        {"A": ticket_yaml("A", run="echo a > a")},
        config=f"version: 1\ngates:\n  integration: [{json.dumps(_waits(gate, 'true'))}]\n",
    )
    proc = _run(repo, "g", "--no-monitor")
    try:
        wait_for(lambda: any(e["event"] == "gate-started" for e in _events(repo, "g")))
        row = _agents(repo)["A"]
        assert row["status"] == "awaiting gate"
        assert row["agent_id"] == "-"
        _, table, _ = gitexec(repo, "agents")
        assert "slot-None" not in table and "awaiting gate" in table
        _, table, _ = gitexec(repo, "status")
        assert re.search(r"^\s+A\s+awaiting gate\b", table, re.M), table
    finally:
        gate.touch()
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err


def test_status_of_a_running_ticket_shows_its_time(tmp_path: Path, gate: Path) -> None:
    repo = make_project(tmp_path / "r", {"A": ticket_yaml("A", run=_waits(gate, "echo a > a"))})
    proc = _run(repo, "t", "--no-monitor")

    def shown_time() -> str:
        _, table, _ = gitexec(repo, "status", "--run", "t")
        row = re.search(r"^\s+A\s+executing\s+1\s+shell\s+\d+\s+(\S+)", table, re.M)
        assert row is not None, table
        return row.group(1)

    try:
        wait_for(lambda: any(e["event"] == "agent-started" for e in _events(repo, "t")))
        wait_for(lambda: shown_time() not in ("0s", "0.0s"))
        assert re.fullmatch(r"\d+(\.\d)?s", shown_time())
    finally:
        gate.touch()
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err


def test_live_overlaps_leave_out_what_merge_rules_settle(tmp_path: Path, gate: Path) -> None:
    both = "echo {t} >> CHANGELOG.md; echo {t} >> shared.txt; " + _waits(gate, "true")
    repo = make_project(
        tmp_path / "r",
        {t: ticket_yaml(t, run=both.format(t=t)) for t in ("A", "B")},
        config=(
            "version: 1\nmerge:\n  on_conflict: [rules, fail]\n"
            "  rules:\n    - {paths: [CHANGELOG.md], strategy: union}\n"
        ),
        files={"CHANGELOG.md": "# changes\n", "shared.txt": "base\n"},
    )
    proc = _run(repo, "ov", "--jobs", "2", "--no-monitor")
    try:
        wait_for(lambda: any(e["event"] == "overlap" for e in _events(repo, "ov")), timeout=20)
        overlaps = [e for e in _events(repo, "ov") if e["event"] == "overlap"]
        assert [(e["tickets"], e["paths"]) for e in overlaps] == [(["A", "B"], ["shared.txt"])]
        assert status(repo, "ov")["overlaps"] == [{"tickets": ["A", "B"], "paths": ["shared.txt"]}]
    finally:
        gate.touch()
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, out + err  # shared.txt conflicts, as reported
    events = _events(repo, "ov")
    assert not any("CHANGELOG.md" in e.get("paths", []) for e in events if e["event"] == "overlap")
    conflict = next(e for e in events if e["event"] == "conflict")
    assert conflict["paths"] == ["shared.txt"]
