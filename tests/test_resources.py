"""Resource monitoring: agents' CPU and memory in `agents`, `status`, the dashboard and the
reports; the overcommit warning; per-agent limits in the config."""

from __future__ import annotations

import collections
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from lxml import etree
from rich.console import Console

from gitexec import events as ev
from gitexec.agentspec import AgentLimits
from gitexec.config import parse_config
from gitexec.dashboard import render, snapshot
from gitexec.journal import JOURNAL, Journal, load_events, read_records
from gitexec.process import Limits, MachineLoad, Sample
from gitexec.report import RunReport
from gitexec.report.markdown import SUMMARY_LIMIT, render_markdown
from gitexec.resources import OvercommitWatch, SampleGate, process_limits
from gitexec.runstate import RUNS_DIR, replay
from gitexec.secrets import Redactor
from tests.helpers import init_repo, wait_for
from tests.project import gitexec, make_project, run_ok, ticket_yaml
from tests.test_report import synth_state, ticket_table

BURN = "python3 -c 'sum(range(3 * 10**6))'"


def live_journal(repo: Path, run_id: str = "live") -> Path:
    """A run journaled as an engine does it, caught while A's agent runs and B's has ended."""
    path = repo / ".git" / "gitexec" / RUNS_DIR / run_id / JOURNAL
    start = ev.RunStarted(
        run=run_id,
        base="a" * 40,
        integration=f"refs/heads/gitexec/{run_id}",
        head="a" * 40,
        jobs=2,
        tickets={"A": ev.TicketInfo("Busy"), "B": ev.TicketInfo("Done")},
    )
    journal, _ = Journal.create(path, start)
    for tid, slot in (("A", 1), ("B", 2)):
        journal.append(
            ev.TicketDispatched(ticket=tid, attempt=1, agent="shell", slot=slot, base="")
        )
    # A sample older than the attempt it would describe is never shown.
    journal.append(ev.AgentSample(ticket="A", cpu_s=1.0, cpu_percent=5.0, rss_mb=10.0))
    for tid in ("A", "B"):
        journal.append(ev.AgentStarted(ticket=tid, pid=1, pgid=1, slot=1, agent="shell"))
    journal.append(
        ev.AgentSample(ticket="A", cpu_s=4.2, cpu_percent=85.0, rss_mb=312.0, peak_rss_mb=400.0)
    )
    journal.append(ev.AgentSample(ticket="B", cpu_s=1.0, cpu_percent=99.0, rss_mb=50.0))
    journal.append(ev.AgentExited(ticket="B", exit_code=0, duration_s=1.0))
    journal.close()
    return path


def test_running_agents_show_their_latest_sample(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "r")
    path = live_journal(repo)

    code, out, err = gitexec(repo, "status", "--run", "live", "--format", "json")
    assert code == 0, err
    tickets = json.loads(out)["tickets"]
    assert (tickets["A"]["cpu_percent"], tickets["A"]["rss_mb"]) == (85.0, 312.0)
    assert "cpu_percent" not in tickets["B"]  # its agent has exited

    code, out, _ = gitexec(repo, "agents", "--run", "live", "--format", "json")
    rows = {r["ticket"]: r for r in json.loads(out)["agents"]}
    assert (rows["A"]["cpu_percent"], rows["A"]["rss_mb"]) == (85.0, 312.0)
    assert rows["B"]["cpu_percent"] is None
    code, table, _ = gitexec(repo, "agents", "--run", "live")
    assert table.splitlines()[0].endswith("| CPU/RSS")
    assert "| 85% 312M" in table

    state = replay("live", load_events(path).events)
    snap = snapshot(state, jobs=2, progress=lambda _: None, eta_s=None)
    console = Console(file=io.StringIO(), width=140, color_system=None)
    console.print(render(snap, collections.deque()))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "CPU/RSS" in text and "85% 312M" in text


def test_samples_survive_the_journal_and_a_bad_one_is_skipped(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "r")
    path = live_journal(repo)
    with path.open("a") as f:
        f.write(json.dumps({"seq": 99, "t": 1.0, "event": "agent-sample", "ticket": "A"}) + "\n")
    loaded = load_events(path)
    samples = [e for e in loaded.events if isinstance(e, ev.AgentSample)]
    assert [s.cpu_percent for s in samples] == [5.0, 85.0, 99.0]
    assert loaded.problems == [
        f"line {len(loaded.events) + 1}: agent-sample: missing 'cpu_s'; skipped"
    ]


def test_agents_include_metrics_shows_cpu_and_memory(tmp_path: Path) -> None:
    repo = make_project(
        tmp_path / "r", {"A": ticket_yaml("A", run=BURN), "B": ticket_yaml("B", run="true")}
    )
    assert run_ok(repo, "--run-id", "m")[0] == 0
    code, out, _ = gitexec(repo, "agents", "--run", "m", "--format", "json", "--include-metrics")
    assert code == 0
    shell = json.loads(out)["metrics"]["shell"]
    assert shell["cpu_s"] > 0 and shell["peak_rss_mb"] > 0
    code, out, _ = gitexec(repo, "agents", "--run", "m", "--include-metrics")
    header = next(line for line in out.splitlines() if line.startswith("agent "))
    assert header.split()[-3:] == ["cpu", "peak", "rss"]


def test_reports_show_what_agents_used(tmp_path: Path) -> None:
    repo = make_project(
        tmp_path / "r", {"A": ticket_yaml("A", run=BURN), "B": ticket_yaml("B", run="exit 1")}
    )
    assert run_ok(repo, "--run-id", "m", "--junit", "j.xml", "--markdown", "r.md")[0] == 1
    text = (repo / "r.md").read_text()
    rows = ticket_table(text)
    assert rows[0][-2:] == ["CPU", "Memory"]
    by_id = {r[0]: r for r in rows[1:]}
    assert by_id["A"][-2].endswith("s") and by_id["A"][-1].endswith("M")
    assert "| Agent resources | " in text
    # B's failure details, a paragraph of their own.
    assert re.search(r"· 1 attempt\(s\) · CPU [0-9.]+s · peak memory [0-9.]+[MG]\n\n", text)
    root = etree.parse(str(repo / "j.xml")).getroot()
    case = next(c for c in root.iter("testcase") if c.get("name", "").startswith("A:"))
    properties = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert float(properties["gitexec.cpu_s"]) > 0
    assert float(properties["gitexec.peak_rss_mb"]) > 0


def test_resource_columns_give_way_before_the_1_mib_limit(tmp_path: Path) -> None:
    state = synth_state(10_000, title_len=90)
    for t in state.tickets.values():
        t.cpu_s, t.peak_rss_mb = 12.5, 2048.0
    text = render_markdown(RunReport(state, tmp_path, redactor=Redactor()))
    assert len(text.encode()) < SUMMARY_LIMIT
    rows = ticket_table(text)
    assert len(rows) == 10_001  # every ticket keeps its row; the extra columns went first
    small = render_markdown(RunReport(synth_state(20), tmp_path, redactor=Redactor()))
    assert ticket_table(small)[0][-1] == "Commit"  # nothing measured: no columns


# --- the overcommit warning ----------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def load(load_1m: float, available_mb: float = 8000.0) -> MachineLoad:
    return MachineLoad(load_1m, load_1m, load_1m, 4, 16000.0, available_mb)


def test_overcommit_is_said_once_when_the_load_stays_high() -> None:
    clock = Clock()
    watch = OvercommitWatch(clock=clock)
    said = []
    for step in range(40):  # every 5s: high for 20s, calm, then high for good
        clock.now = step * 5.0
        high = step < 4 or step >= 6
        said.append(watch.feed(load(9.0 if high else 1.0), jobs=4))
    warnings = [(n, s) for n, s in enumerate(said) if s]
    assert len(warnings) == 1
    step, message = warnings[0]
    assert step == 12  # 30s after it went high again
    assert message.startswith("the machine is overcommitted (load 9.0 on 4 cores for over 30s)")
    assert "lower `jobs` (git exec adjust --jobs 3" in message


def test_memory_pressure_is_said_sooner() -> None:
    clock = Clock()
    watch = OvercommitWatch(clock=clock)
    assert watch.feed(load(1.0, available_mb=900.0), jobs=2) is None
    clock.now = 5.0
    message = watch.feed(load(1.0, available_mb=800.0), jobs=2)
    assert message is not None and "only 800 MiB of 16000 MiB memory available" in message
    clock.now = 60.0
    assert watch.feed(load(1.0, available_mb=800.0), jobs=2) is None  # said once


def test_samples_are_journaled_every_few_seconds_per_agent() -> None:
    clock = Clock()
    gate = SampleGate(every_s=5.0, clock=clock)
    sample = Sample(1.0, 0.5, 50.0, 100.0, 120.0, 3)
    got: list[ev.AgentSample] = []
    for step in range(25):  # the supervisor samples every 0.5s
        clock.now = step * 0.5
        got.extend(e for tid in ("A", "B") if (e := gate.event(tid, sample)) is not None)
    assert [e.ticket for e in got] == ["A", "B"] * 3
    assert got[0] == ev.AgentSample(
        ticket="A", cpu_s=0.5, cpu_percent=50.0, rss_mb=100.0, peak_rss_mb=120.0, processes=3
    )
    gate.forget("A")
    assert gate.event("A", sample) is not None


# --- limits --------------------------------------------------------------------------------


def test_agent_limits_parse_and_convert() -> None:
    config = "agents:\n  big:\n    command: [x]\n    limits: {memory: 4G, cpu: 1.5}\n"
    parsed = parse_config(".gitexec/config.yaml", config)
    assert parsed.findings == ()
    agent = parsed.config.agents["big"]
    assert agent.limits == AgentLimits(memory=4 * 1024**3, cpu=1.5)
    assert process_limits(agent) == Limits(memory=4 * 1024**3, cpu=1.5)
    assert process_limits(parsed.config.agents["shell"]) is None
    claude = parse_config("c", "agents:\n  claude: {limits: {memory: 2G}}\n").config.agents[
        "claude"
    ]
    assert claude.limits == AgentLimits(memory=2 * 1024**3) and claude.command  # preset kept


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        (
            "{memory: lots}",
            "4:22: error: agents.x.limits: memory: expected a size such as 50M or 4G, got 'lots'",
        ),
        ("{memory: 1M}", "4:22: error: agents.x.limits: memory: size '1M' is out of range"),
        ("{cpu: 0}", "4:19: error: agents.x.limits: cpu: must be at least 0.01, got 0"),
        (
            "{mem: 1G}",
            "4:19: error: agents.x.limits: mem: unknown limit 'mem' (did you mean 'memory'?) "
            "(limits: memory, cpu)",
        ),
        ("4G", "4:13: error: agents.x.limits: expected a mapping, got a string"),
        ("{}", "4:13: error: agents.x.limits: name a limit: {memory: 4G, cpu: 2}"),
    ],
)
def test_agent_limit_errors_name_file_line_and_column(
    tmp_path: Path, limits: str, expected: str
) -> None:
    config = f"agents:\n  x:\n    command: [x]\n    limits: {limits}\n"
    repo = init_repo(tmp_path / "r", {".gitexec/config.yaml": config})
    code, out, err = gitexec(repo, "check")
    assert code == 1, out + err
    assert out.splitlines()[0].startswith(f".gitexec/config.yaml:{expected}")


def test_a_run_journals_its_agents_samples(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    repo = make_project(
        tmp_path / "r",
        {"A": ticket_yaml("A", run=f"{BURN}; while [ ! -e {gate} ]; do sleep 0.05; done")},
    )
    journal = repo / ".git" / "gitexec" / RUNS_DIR / "s" / JOURNAL
    proc = subprocess.Popen(
        [sys.executable, "-m", "gitexec", "run", "--no-monitor", "--run-id", "s"], cwd=repo
    )
    try:
        wait_for(lambda: any(r["event"] == "agent-started" for r in read_records(journal)))
        # The first sample is journaled at once, the supervisor takes one every 0.5s.
        wait_for(
            lambda: any(r["event"] == "agent-sample" for r in read_records(journal)), timeout=10
        )
        code, out, _ = gitexec(repo, "status", "--run", "s", "--format", "json")
        assert code == 0 and json.loads(out)["tickets"]["A"]["rss_mb"] > 0
    finally:
        gate.touch()
        assert proc.wait(timeout=60) == 0
