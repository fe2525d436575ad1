"""What agents cost and used, where a user reads it: `agents --include-metrics`, `status
--format json`, the dashboard, the Markdown and JUnit reports and the GitHub outputs, with
real non-zero costs reported by the agents themselves."""

from __future__ import annotations

import collections
import io
import json
import time
from pathlib import Path

import pytest
from lxml import etree
from rich.console import Console
from ruamel.yaml import YAML

from gitexec import events as ev
from gitexec.dashboard import render, snapshot
from gitexec.dialects import Status, Usage
from gitexec.journal import JOURNAL, Journal, load_events
from gitexec.report import RunReport
from gitexec.report.github import publish
from gitexec.runstate import RUNS_DIR, replay
from tests.helpers import init_repo
from tests.project import gitexec, make_project, run_ok, show, status, ticket_yaml
from tests.test_action import read_outputs
from tests.test_report import ticket_table

CONFIG = "version: 1\nagents:\n  mine:\n    command: [sh, -c, '{{ ticket.run }}']\n"
BURN = "python3 -c 'sum(range(3 * 10**6))'"


def reporting(tid: str, cost: float, tokens_in: int, tokens_out: int) -> str:
    """A ticket whose agent burns some CPU, writes a file and reports what it cost."""
    result = json.dumps(
        {
            "status": "success",
            "usage": {"input_tokens": tokens_in, "output_tokens": tokens_out},
            "cost_usd": cost,
            "model": "mine-1",
        }
    )
    run = f"{BURN}; echo {tid} > {tid}.txt; printf '%s' '{result}' > \"$GITEXEC_RESULT_FILE\""
    return ticket_yaml(tid, agent="mine", run=run)


@pytest.fixture
def paid(tmp_path: Path) -> Path:
    """A finished run `paid`: A cost $0.25 for 1000+200 tokens, B $0.50 for 3000+400."""
    repo = make_project(
        tmp_path / "r",
        {"A": reporting("A", 0.25, 1000, 200), "B": reporting("B", 0.5, 3000, 400)},
        config=CONFIG,
    )
    code, out, err = run_ok(repo, "--run-id", "paid", "--junit", "j.xml", "--markdown", "r.md")
    assert code == 0, out + err
    return repo


def test_agents_include_metrics_shows_tokens_and_cost_per_agent(paid: Path) -> None:
    code, out, err = gitexec(
        paid, "agents", "--run", "paid", "--format", "json", "--include-metrics"
    )
    assert code == 0, err
    mine = json.loads(out)["metrics"]["mine"]
    assert (mine["input_tokens"], mine["output_tokens"]) == (4000, 600)
    assert mine["cost_usd"] == 0.75
    assert (mine["tickets"], mine["completed"]) == (2, 2)

    code, out, _ = gitexec(paid, "agents", "--run", "paid", "--include-metrics")
    row = next(line for line in out.splitlines() if line.startswith("mine "))
    assert "4600" in row.split() and "$0.7500" in row.split()


def test_status_json_has_each_tickets_cpu_time_and_peak_memory(paid: Path) -> None:
    tickets = status(paid, "paid")["tickets"]
    for tid in ("A", "B"):
        assert tickets[tid]["cpu_s"] > 0, tid
        assert tickets[tid]["peak_rss_mb"] > 0, tid


def test_markdown_report_has_each_cost_and_the_total(paid: Path) -> None:
    rows = ticket_table((paid / "r.md").read_text(encoding="utf-8"))
    cost = rows[0].index("Cost")
    by_id = {r[0]: r for r in rows[1:]}
    assert by_id["A"][cost] == "$0.2500"
    assert by_id["B"][cost] == "$0.5000"
    assert by_id["Total"][cost] == "$0.7500"


def test_junit_has_each_tickets_cost_and_tokens(paid: Path) -> None:
    root = etree.parse(str(paid / "j.xml")).getroot()
    found = {}
    for case in root.iter("testcase"):
        properties = {p.get("name"): p.get("value") for p in case.iter("property")}
        found[case.get("name", "").split(":")[0]] = properties
    assert found["A"]["gitexec.cost_usd"] == "0.250000"
    assert found["A"]["gitexec.input_tokens"] == "1000"
    assert found["B"]["gitexec.cost_usd"] == "0.500000"
    assert found["B"]["gitexec.output_tokens"] == "400"


def test_github_outputs_carry_the_runs_cost_and_tokens(paid: Path, tmp_path: Path) -> None:
    output = tmp_path / "output"
    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
        "GITHUB_OUTPUT": str(output),
    }
    report = RunReport.load(paid / ".git" / "gitexec", "paid")
    publish(report, repo_root=paid, environ=env, stream=io.StringIO())
    outputs = read_outputs(output)
    assert outputs["cost-usd"] == "0.750000"
    assert outputs["tokens"] == "4600"


def test_readme_and_action_list_the_cost_and_token_outputs() -> None:
    root = Path(__file__).resolve().parent.parent
    readme = root.joinpath("README.md").read_text(encoding="utf-8")
    section = readme.split("## GitHub Actions", 1)[1].split("\n## ", 1)[0]
    assert "`cost-usd`" in section and "`tokens`" in section
    action = root.joinpath("action.yml").read_text(encoding="utf-8")
    assert "  cost-usd:\n    description:" in action
    assert "  tokens:\n    description:" in action


def test_dashboard_shows_the_run_total_streamed_costs_and_throttled_tickets(
    tmp_path: Path,
) -> None:
    """A running, a throttled and a finished ticket: the header sums what each cost so far,
    the running row shows its streamed cost, the throttled one says so and when it goes on."""
    repo = init_repo(tmp_path / "r")
    path = repo / ".git" / "gitexec" / RUNS_DIR / "live" / JOURNAL
    names = {"A": "Streaming", "B": "Throttled", "C": "Done"}
    start = ev.RunStarted(
        run="live",
        base="a" * 40,
        integration="refs/heads/gitexec/live",
        head="a" * 40,
        jobs=2,
        tickets={tid: ev.TicketInfo(title) for tid, title in names.items()},
    )
    journal, _ = Journal.create(path, start)
    for tid, slot in (("A", 1), ("B", 2)):
        journal.append(
            ev.TicketDispatched(ticket=tid, attempt=1, agent="claude", slot=slot, base="")
        )
        journal.append(ev.AgentStarted(ticket=tid, pid=1, pgid=1, slot=slot, agent="claude"))
    journal.append(ev.AgentUsage(ticket="A", usage=Usage(12_000, 800), cost_usd=0.125))
    journal.append(
        ev.AgentReported(
            ticket="B",
            status=Status.THROTTLED,
            reason="rate limited",
            usage=Usage(1000, 0),
            cost_usd=0.03,
        )
    )
    journal.append(ev.AgentExited(ticket="B", exit_code=0, duration_s=1.0))
    journal.append(ev.TicketThrottled(ticket="B", reason="rate limited", delay_s=3600.0))
    journal.close()

    state = replay("live", load_events(path).events)
    snap = snapshot(state, jobs=2, progress=lambda _: None, eta_s=None, now=time.time())
    console = Console(file=io.StringIO(), width=160, color_system=None)
    console.print(render(snap, collections.deque()))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "Cost: $0.1550 (13.8k tokens)" in text
    rows = {line.split("│")[2].strip(): line for line in text.splitlines() if line.count("│") > 6}
    assert "$0.1250" in rows["A"] and "executing" in rows["A"]
    assert "throttled" in rows["B"]
    throttled = next(r for r in snap.rows if r.ticket == "B")
    assert throttled.status == "throttled" and throttled.eta.startswith(("59m", "1h", "60m"))


def test_the_ticket_file_records_conflicts_failed_and_throttled_attempts(tmp_path: Path) -> None:
    """C is throttled once, fails once, then passes; B conflicts with A on shared.txt: the
    `result` each ticket file gets on the integration branch says so."""
    counter = tmp_path / "count"
    throttle = '{"status": "throttled", "reason": "rate limited", "retry_after_s": 0}'
    run_c = (
        f"echo x >> {counter}; n=$(wc -l < {counter}); "
        f"if [ $n -eq 1 ]; then printf '%s' '{throttle}' > \"$GITEXEC_RESULT_FILE\"; "
        "elif [ $n -eq 2 ]; then exit 1; else echo c > c.txt; fi"
    )
    repo = make_project(
        tmp_path / "r",
        {
            "A": ticket_yaml("A", run="echo from-a > shared.txt"),
            "B": ticket_yaml("B", run="sleep 0.5; echo from-b > shared.txt"),
            "C": ticket_yaml("C", agent="mine", run=run_c, retries=1),
        },
        config=CONFIG + "retry_backoff: 0s\nmerge:\n  on_conflict: [fail]\n",
        files={"shared.txt": "base\n"},
    )
    code, out, err = run_ok(repo, "--run-id", "rec", "--jobs", "3")
    assert code == 1, out + err
    tickets = status(repo, "rec")["tickets"]
    loser = next(tid for tid in ("A", "B") if tickets[tid]["status"] == "conflict")

    def result_of(tid: str) -> dict[str, object]:
        text = show(repo, f"gitexec/rec:.gitexec/tickets/{tid}.yaml")
        data = YAML(typ="safe").load(text)
        assert isinstance(data["result"], dict)
        return data["result"]

    assert result_of(loser)["conflicts"] == ["shared.txt"]
    c = result_of("C")
    assert (c["attempts"], c["failed_attempts"], c["throttled"]) == (3, 1, 1)
    assert "conflicts" not in c
    winner = "A" if loser == "B" else "B"
    assert not {"conflicts", "failed_attempts", "throttled"} & set(result_of(winner))


def test_status_and_agents_show_the_machines_load_and_free_memory(paid: Path) -> None:
    machine = status(paid, "paid")["machine"]
    assert machine["cores"] >= 1 and machine["load1"] >= 0
    assert 0 < machine["mem_available_mb"] <= machine["mem_total_mb"]
    code, out, _ = gitexec(paid, "agents", "--run", "paid", "--format", "json", "--include-metrics")
    assert code == 0 and json.loads(out)["machine"]["cores"] == machine["cores"]
    code, out, _ = gitexec(paid, "agents", "--run", "paid", "--include-metrics")
    line = out.splitlines()[-1]
    assert line.startswith("machine: load ") and f"on {machine['cores']} core(s)" in line
    assert line.endswith("memory free")
