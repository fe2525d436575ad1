"""A journal with well-formed but wrong lines: every command that reads it names the lines
it skips and goes on; `resume` refuses what it cannot continue safely."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import git
from tests.project import (
    crashed_run,
    first_parent_tickets,
    gitexec,
    make_project,
    run_ok,
    ticket_yaml,
)

JOURNAL = ".git/gitexec/runs/{}/journal.jsonl"

# Lines that are JSON objects, but not events this run can have had.
BAD_LINES = [
    ('"event": "ticket-dispatched", "ticket": "A", "attempt": "two", "agent": "shell", '
     '"slot": 1, "base": "0000000000000000000000000000000000000000"',
     "ticket-dispatched: attempt: expected an integer, got 'two'"),
    ('"event": "ticket-finished", "ticket": "GHOST", "state": "failed", "reason": "boo"',
     "ticket-finished names unknown ticket 'GHOST'"),
    ('"event": "agent-exited", "ticket": "A", "exit_code": ' + "1" + "0" * 400
     + ', "duration_s": 1.0, "timed_out": false, "cancelled": false',
     "agent-exited: exit_code: expected an integer, got 1000000000000000000000000000000000000..."),
    ('"event": "teleported", "ticket": "A"', "unknown event 'teleported'"),
    ('"event": "ticket-finished", "ticket": "A", "state": "exploded", "reason": "x"',
     "ticket-finished: state: expected TicketState, got 'exploded'"),
]  # fmt: skip


def _damage(repo: Path, run_id: str, after: int = 1) -> list[str]:
    """Put BAD_LINES after line `after` of the run's journal; the warnings to expect."""
    path = repo / JOURNAL.format(run_id)
    lines = path.read_text().splitlines()
    t = json.loads(lines[0])["t"]
    bad = [f'{{"seq": 9000{n}, "t": {t}, {body}}}' for n, (body, _) in enumerate(BAD_LINES)]
    # A sequence number out of range must not push the events written after it out too.
    bad.append(f'{{"seq": 1{"0" * 400}, "t": {t}, "event": "warning", "message": "hi"}}')
    bad.append("[1, 2, 3]")
    path.write_text("\n".join([*lines[:after], *bad, *lines[after:]]) + "\n")
    where = JOURNAL.format(run_id)
    messages = [message for _, message in BAD_LINES]
    messages.append("warning: expected an integer, got " + "1" + "0" * 36 + "...")
    messages.append("not a JSON object")
    return [
        f"gitexec: warning: {where}: line {after + 1 + n}: {message}; skipped"
        for n, message in enumerate(messages)
    ]


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("gitexec: warning: ")]


@pytest.fixture
def damaged(tmp_path: Path) -> tuple[Path, list[str]]:
    repo = make_project(
        tmp_path / "r",
        {
            "A": ticket_yaml("A", run="echo a > a"),
            "B": ticket_yaml("B", run="exit 1", depends_on=["A"]),
        },
    )
    code, out, err = run_ok(repo, "--run-id", "r1")
    assert code == 1, out + err
    return repo, _damage(repo, "r1", after=3)


@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["status", "--format", "json"],
        ["agents"],
        ["agents", "--format", "json", "--include-metrics"],
        ["report"],
        ["report", "--junit", "j.xml", "--markdown", "m.md"],
        ["monitor", "--no-dashboard"],
        ["runs"],
    ],
)
def test_readers_name_the_lines_they_skip(damaged: tuple[Path, list[str]], args: list[str]) -> None:
    repo, expected = damaged
    code, out, err = gitexec(repo, *args, *(["--run", "r1"] if args[0] != "runs" else []))
    assert code == 0, err
    assert "internal error" not in err and "Traceback" not in err
    if args[0] == "runs":
        assert _warnings(err) == [
            f"gitexec: warning: run r1: {len(expected)} line(s) of its journal do not fit and "
            "are skipped (`git exec status --run r1` names them)"
        ]
        return
    assert _warnings(err) == expected
    # What the good lines say is all there.
    if args == ["status", "--format", "json"]:
        data = json.loads(out)
        assert {t: v["status"] for t, v in data["tickets"].items()} == {
            "A": "completed",
            "B": "failed",
        }
        assert data["state"] == "failed"


def test_resume_goes_on_past_damaged_lines(tmp_path: Path) -> None:
    repo, pgid = crashed_run(tmp_path / "r", "dead")
    try:
        expected = _damage(repo, "dead", after=2)
        code, out, err = gitexec(repo, "resume", "--run", "dead", "--no-monitor")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    assert code == 0, out + err
    assert _warnings(err)[: len(expected)] == expected
    assert first_parent_tickets(repo, "gitexec/dead") == ["A"]
    # What resume wrote after the damage reads back whole.
    code, out, err = gitexec(repo, "status", "--run", "dead", "--format", "json")
    assert code == 0 and _warnings(err) == expected
    assert json.loads(out)["state"] == "completed"


def _rewrite_first(repo: Path, run_id: str, change: dict[str, Any]) -> None:
    path = repo / JOURNAL.format(run_id)
    lines = path.read_text().splitlines()
    first = json.loads(lines[0])
    for key, value in change.items():
        if value is None:
            del first[key]
        else:
            first[key] = value
    path.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")


def _ticket_info(tid: str) -> dict[str, Any]:
    return {
        "title": tid,
        "file": f".gitexec/tickets/{tid}.yaml",
        "agent": "shell",
        "depends_on": [],
        "group": 1,
        "estimate_s": 600.0,
        "priority": 0,
        "paths": [],
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"jobs": "four"},
            "run dead cannot be resumed: its journal has no usable run-started record "
            "(line 1: run-started: jobs: expected an integer, got 'four'; skipped)",
        ),
        (
            {"tickets": {"A": _ticket_info("A"), "Z": _ticket_info("Z")}},
            "run dead cannot be resumed: its journal names ticket(s) Z, which its base commit "
            "{base} does not have",
        ),
        (
            {"base": "1234567890123456789012345678901234567890"},
            "run dead cannot be resumed: its base commit 1234567890123456789012345678901234567890 "
            "is not in this repository",
        ),
        (
            {"integration": "refs/heads/main"},
            "run dead cannot be resumed: its journal names the branch refs/heads/main, not "
            "refs/heads/gitexec/dead",
        ),
    ],
)
def test_resume_refuses_a_journal_it_cannot_continue(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    repo, pgid = crashed_run(tmp_path / "r", "dead")
    os.killpg(pgid, signal.SIGKILL)
    base = json.loads((repo / JOURNAL.format("dead")).read_text().splitlines()[0])["base"]
    main_before = git(repo, "rev-parse", "main")
    _rewrite_first(repo, "dead", change)
    code, out, err = gitexec(repo, "resume", "--run", "dead", "--no-monitor")
    assert code == 2, out + err
    assert f"gitexec: error: {message.format(base=base[:12])}" in err, err
    assert "internal error" not in err
    assert git(repo, "rev-parse", "main") == main_before
