"""Learning from past runs: the run history, estimates measured in it, and `history`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from gitexec.history import HISTORY_FILE, History, record_run
from gitexec.runstate import RunState, RunStatus, TicketRun
from gitexec.tickets import TicketState
from tests.helpers import commit_all, write_files
from tests.project import gitexec, make_project, run_ok, ticket_yaml


def plan_json(repo: Path, *args: str) -> dict[str, Any]:
    code, out, err = gitexec(repo, "plan", "--format", "json", *args)
    assert code == 0, err
    data: dict[str, Any] = json.loads(out)
    return data


def history_json(repo: Path, *args: str) -> dict[str, Any]:
    code, out, err = gitexec(repo, "history", "--format", "json", *args)
    assert code == 0, err
    data: dict[str, Any] = json.loads(out)
    return data


def history_file(repo: Path) -> Path:
    return repo / ".git" / "gitexec" / HISTORY_FILE


def test_plan_estimate_improves_after_a_run(tmp_path: Path) -> None:
    """Tickets without an `estimate` are planned at the default (10m) until they have run;
    then their measured durations stand in, and the plan says which."""
    repo = make_project(
        tmp_path / "r",
        {
            "A": ticket_yaml("A", run="echo a > a"),
            "B": ticket_yaml("B", depends_on=["A"], run="echo b > b"),
            "C": ticket_yaml("C", run="echo c > c", estimate="5m"),
        },
    )
    before = plan_json(repo)
    assert before["estimate"]["makespan_s"] == 2 * 600.0  # A then B at the default
    assert before["critical_path"] == ["A", "B"]
    assert "measured" not in before["estimate"]

    assert run_ok(repo, "--run-id", "first")[0] == 0

    after = plan_json(repo)
    assert after["estimate"]["measured"] == ["A", "B"]  # C keeps the estimate it declares
    assert after["estimate"]["makespan_s"] == 300.0  # A and B took far less: C's 5m bounds it
    assert after["critical_path"] == ["C"]
    assert after["fingerprint"] == before["fingerprint"]  # history never makes a plan stale
    assert after["groups"] == before["groups"]  # ... nor changes what a run merges in
    assert plan_json(repo, "--no-history")["estimate"] == before["estimate"]
    code, out, _ = gitexec(repo, "plan")
    assert code == 0 and "measured: [A, B]" in out


def test_the_committed_plan_never_takes_estimates_from_history(tmp_path: Path) -> None:
    repo = make_project(tmp_path / "r", {"A": ticket_yaml("A", run="echo a > a")})
    assert run_ok(repo, "--run-id", "one")[0] == 0
    code, _, err = gitexec(repo, "plan", "-o", ".gitexec/plan.yaml")
    assert code == 0, err
    written = (repo / ".gitexec" / "plan.yaml").read_text()
    assert "measured" not in written and "makespan_s: 600" in written
    # The pre-commit hook regenerates it the same way on every clone: nothing to rewrite.
    assert gitexec(repo, "plan", "--update")[0] == 0
    assert (repo / ".gitexec" / "plan.yaml").read_text() == written


def test_new_tickets_take_their_agents_average(tmp_path: Path) -> None:
    repo = make_project(tmp_path / "r", {"A": ticket_yaml("A", run="echo a > a")})
    assert run_ok(repo, "--run-id", "one")[0] == 0
    write_files(repo, {".gitexec/tickets/N.yaml": ticket_yaml("N", run="echo n > n")})
    commit_all(repo, "a new ticket")
    estimate = plan_json(repo)["estimate"]
    assert estimate["measured"] == ["A"] and estimate["agent_average"] == ["N"]
    assert estimate["makespan_s"] < 600.0
    code, out, _ = gitexec(repo, "run", "--dry-run")
    assert code == 0
    assert "estimates from their agent's past tickets: N" in out
    assert "estimated wall time 10m" not in out


def test_history_reports_a_flaky_ticket(tmp_path: Path) -> None:
    """B fails in one run and passes in the next: `history` and `diagnose` call it flaky."""
    flag = tmp_path / "flag"
    repo = make_project(
        tmp_path / "r",
        {
            "A": ticket_yaml("A", run="echo a > a"),
            "B": ticket_yaml("B", run=f"test -e {flag} && echo b > b"),
        },
    )
    assert run_ok(repo, "--run-id", "one")[0] == 1
    flag.touch()
    assert run_ok(repo, "--run-id", "two")[0] == 0

    report = history_json(repo)
    assert report["runs"] == 2
    flaky = {f["ticket"]: f for f in report["flaky"]}
    assert set(flaky) == {"B"}
    assert flaky["B"]["outcomes"] == ["failed", "completed"]
    assert flaky["B"]["passed_after_failing"] == 1
    assert report["agents"]["shell"]["tickets"] == 4
    assert report["agents"]["shell"]["completed"] == 3
    assert report["agents"]["shell"]["success_rate"] == 0.75
    assert any(line.startswith("B is flaky") for line in report["advice"])

    code, out, _ = gitexec(repo, "history")
    assert code == 0
    assert "Flaky tickets (failed, then passed):\n  B" in out
    runs = history_json(repo, "--ticket", "B")["runs"]
    assert [(r["run"], r["outcome"]) for r in runs] == [("one", "failed"), ("two", "completed")]
    assert history_json(repo, "--limit", "1")["flaky"] == []  # one run shows no change

    code, out, _ = gitexec(repo, "diagnose", "--analyze-bottlenecks", "--format", "json")
    assert code == 0
    diagnosis = json.loads(out)
    assert diagnosis["bottlenecks"]["history"]["flaky"][0]["ticket"] == "B"
    assert any(line.startswith("B is flaky") for line in diagnosis["advice"])
    code, out, _ = gitexec(repo, "diagnose", "--analyze-bottlenecks")
    assert "flaky: B" in out


def test_a_ticket_that_needed_a_retry_is_flaky(tmp_path: Path) -> None:
    counter = tmp_path / "count"
    repo = make_project(
        tmp_path / "r",
        {
            "A": ticket_yaml(
                "A", run=f"echo x >> {counter}; test $(wc -l < {counter}) -ge 2", retries=1
            )
        },
        config="version: 1\nretry_backoff: 0s\n",
    )
    assert run_ok(repo, "--run-id", "one")[0] == 0
    flaky = history_json(repo)["flaky"]
    assert [(f["ticket"], f["retried_to_pass"]) for f in flaky] == [("A", 1)]


def test_history_shows_conflict_hot_spots(tmp_path: Path) -> None:
    repo = make_project(
        tmp_path / "r",
        {
            "A": ticket_yaml("A", run="echo from-a > shared.txt"),
            "B": ticket_yaml("B", run="echo from-b > shared.txt"),
        },
        config="version: 1\nmerge:\n  on_conflict: [fail]\n",
        files={"shared.txt": "base\n"},
    )
    assert run_ok(repo, "--run-id", "one", "--jobs", "2")[0] == 1
    spots = history_json(repo)["conflict_hot_spots"]
    assert len(spots) == 1 and spots[0]["path"] == "shared.txt" and spots[0]["conflicts"] == 1
    code, out, _ = gitexec(repo, "history")
    assert code == 0 and "Conflict hot spots:\n  shared.txt" in out


def test_a_torn_line_is_skipped_and_the_next_run_starts_its_own(tmp_path: Path) -> None:
    repo = make_project(tmp_path / "r", {"A": ticket_yaml("A", run="echo a > a")})
    assert run_ok(repo, "--run-id", "one")[0] == 0
    path = history_file(repo)
    with path.open("ab") as f:
        f.write(b'{"v":1,"run":"killed-mid-write","tick')  # a writer killed mid-line
    assert history_json(repo)["runs"] == 1
    write_files(repo, {".gitexec/tickets/B.yaml": ticket_yaml("B", run="echo b > b")})
    commit_all(repo, "another")
    assert run_ok(repo, "--run-id", "two")[0] == 0
    report = history_json(repo)
    assert report["runs"] == 2 and report["skipped_lines"] == 1
    lines = path.read_bytes().splitlines()
    assert json.loads(lines[-1])["run"] == "two"


def test_no_history_yet(tmp_path: Path) -> None:
    repo = make_project(tmp_path / "r", {"A": ticket_yaml("A", run="true")})
    code, out, _ = gitexec(repo, "history")
    assert code == 0 and out.startswith("no run history yet")
    code, _, err = gitexec(repo, "history", "--ticket", "A")
    assert code == 2 and "no run history yet" in err
    assert history_json(repo)["runs"] == 0


# --- the file ------------------------------------------------------------------------------


def finished(run_id: str, at: float, **tickets: tuple[TicketState, float]) -> RunState:
    state = RunState(run_id, status=RunStatus.COMPLETED, started_at=at - 10, finished_at=at)
    for tid, (outcome, seconds) in tickets.items():
        state.tickets[tid] = TicketRun(
            tid, tid, f"{tid}.yaml", "shell", status=outcome, attempts=1, agent_s=seconds
        )
    return state


def test_history_keeps_the_newest_runs_within_its_bounds(tmp_path: Path) -> None:
    for n in range(30):
        problem = record_run(
            tmp_path,
            finished(f"run-{n:02d}", 1000.0 + n, A=(TicketState.COMPLETED, n + 1.0)),
            max_runs=5,
            max_bytes=100_000,
        )
        assert problem is None
    lines = (tmp_path / HISTORY_FILE).read_bytes().splitlines()
    assert len(lines) <= 6  # compacted whenever it grows past the bound
    past = History.load(tmp_path)
    assert [r.run for r in past.runs][-5:] == [f"run-{n:02d}" for n in range(25, 30)]

    one_line = len(lines[-1]) + 1
    for n in range(30, 40):
        record_run(
            tmp_path,
            finished(f"run-{n:02d}", 1000.0 + n, A=(TicketState.COMPLETED, 1.0)),
            max_runs=100,
            max_bytes=3 * one_line,
        )
    assert (tmp_path / HISTORY_FILE).stat().st_size <= 4 * one_line
    assert History.load(tmp_path).runs[-1].run == "run-39"


def test_a_run_recorded_again_replaces_its_earlier_record(tmp_path: Path) -> None:
    """A resumed run, or the next wave's `collect`, writes the same run again."""
    record_run(tmp_path, finished("r", 1.0, A=(TicketState.COMPLETED, 1.0)))
    record_run(
        tmp_path, finished("r", 2.0, A=(TicketState.COMPLETED, 1.0), B=(TicketState.FAILED, 2.0))
    )
    past = History.load(tmp_path)
    assert len(past.runs) == 1 and {t.ticket for t in past.runs[0].tickets} == {"A", "B"}


def test_concurrent_writers_never_tear_a_line(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from gitexec.history import record_run\n"
        "from tests.test_history import finished\n"
        "from gitexec.tickets import TicketState\n"
        "for n in range(20):\n"
        "    rid = f'{sys.argv[2]}-{n}'\n"
        "    ticket = {f'T{k}': (TicketState.COMPLETED, 1.0) for k in range(50)}\n"
        "    assert record_run(Path(sys.argv[1]), finished(rid, n, **ticket), max_runs=60) is None\n"
    )
    root = Path(__file__).parent.parent
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path), f"w{w}"], cwd=root)
        for w in range(4)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    past = History.load(tmp_path)
    assert past.skipped == 0
    assert len(past.runs) == 60  # 80 written, the newest 60 kept
    assert all(len(r.tickets) == 50 for r in past.runs)


def test_a_run_journals_measured_estimates_for_its_eta(tmp_path: Path) -> None:
    """The ETA, progress and dispatch order read the estimates the run journaled first."""
    from gitexec.journal import read_records

    repo = make_project(
        tmp_path / "r",
        {"A": ticket_yaml("A", run="echo a > a"), "B": ticket_yaml("B", run="true", estimate="1m")},
    )
    assert run_ok(repo, "--run-id", "one")[0] == 0
    assert run_ok(repo, "--run-id", "two")[0] == 0
    journal = repo / ".git" / "gitexec" / "runs" / "two" / "journal.jsonl"
    started = read_records(journal)[0]
    assert started["tickets"]["B"]["estimate_s"] == 60.0
    assert 0 < started["tickets"]["A"]["estimate_s"] < 600.0


def priced_agent(cost: str) -> str:
    """Agent `paid`: does its ticket's work and reports what it cost (`cost` is a shell
    expression, so tickets can differ)."""
    script = (
        'sh -c "$1"; printf \'{"status": "success", "cost_usd": %s}\' '
        f'"$({cost})" > "$GITEXEC_RESULT_FILE"'
    )
    return (
        "version: 1\ndefault_agent: paid\nagents:\n  paid:\n"
        f"    command: [sh, -c, {json.dumps(script)}, paid, '{{{{ ticket.run }}}}']\n"
    )


def test_dry_run_shows_the_cost_past_runs_spent(tmp_path: Path) -> None:
    cost = "case $GITEXEC_TICKET in A) echo 0.25;; *) echo 0.75;; esac"
    tickets = {t: ticket_yaml(t, run=f"echo {t} > {t}.txt") for t in "AB"}
    repo = make_project(tmp_path / "r", tickets, config=priced_agent(cost))
    code, out, err = gitexec(repo, "run", "--dry-run")
    assert code == 0, err
    assert "expected cost" not in out  # nothing was ever spent here

    assert run_ok(repo, "--run-id", "one")[0] == 0
    write_files(repo, {".gitexec/tickets/C.yaml": ticket_yaml("C", run="echo C > C.txt")})
    commit_all(repo, "a new ticket")
    code, out, err = gitexec(repo, "run", "--dry-run")
    assert code == 0, err
    # A and B as they cost; C, never run, as any ticket of its agent did (0.25 to 0.75).
    assert "expected cost $1.25–$1.75 (from past runs)" in out, out


def test_tickets_of_an_agent_that_never_reported_a_cost_are_named(tmp_path: Path) -> None:
    config = priced_agent("echo 0.5") + "  free:\n    command: [sh, -c, 'true']\n"
    tickets = {"A": ticket_yaml("A", run="echo A > A.txt"), "F": ticket_yaml("F", agent="free")}
    repo = make_project(tmp_path / "r", tickets, config=config)
    assert run_ok(repo, "--run-id", "one")[0] == 0
    code, out, err = gitexec(repo, "run", "--dry-run")
    assert code == 0, err
    assert "expected cost $0.50 (from past runs); no past cost for 1 ticket(s): F" in out, out
