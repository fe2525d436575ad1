"""Planning: strategies, critical path, estimates, plan files and staleness."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from gitexec.cli import main
from gitexec.config import Strategy
from gitexec.plan import (
    CycleError,
    Graph,
    load_plan,
    make_plan,
    render_json,
    render_mermaid,
    render_yaml,
    simulate,
)
from gitexec.tickets import Ticket
from tests.project import captured, gitexec, make_project, ticket_yaml


def t(
    tid: str, *deps: str, est: float | None = 60, prio: int = 0, paths: tuple[str, ...] = ()
) -> Ticket:
    return Ticket(
        id=tid,
        title=tid,
        file=f".gitexec/tickets/{tid}.yaml",
        depends_on=deps,
        estimate_s=est,
        priority=prio,
        paths=paths,
    )


def groups(plan_groups: tuple[object, ...]) -> list[list[str]]:
    return [list(g.tickets) for g in plan_groups]  # type: ignore[attr-defined]


def respects_dependencies(tickets: list[Ticket], plan_groups: list[list[str]]) -> bool:
    where = {tid: n for n, g in enumerate(plan_groups) for tid in g}
    return all(where[d] < where[x.id] for x in tickets for d in x.depends_on)


DIAMOND = [t("A"), t("B", "A"), t("C", "A", est=300), t("D", "B", "C"), t("E")]


def test_max_parallel_is_asap_levels() -> None:
    plan = make_plan(DIAMOND, Strategy.MAX_PARALLEL, jobs=1, default_estimate_s=600)
    assert groups(plan.groups) == [["A", "E"], ["B", "C"], ["D"]]


def test_balanced_respects_jobs_and_evens_groups() -> None:
    tickets = [t(f"T{i}") for i in range(5)]
    plan = make_plan(tickets, Strategy.BALANCED, jobs=4, default_estimate_s=600)
    assert [len(g) for g in groups(plan.groups)] == [3, 2]  # not 4 + 1


def test_balanced_prefers_the_critical_path() -> None:
    # With one slot, the ticket heading the long chain goes before the short one.
    tickets = [t("short", est=10), t("long", est=10), t("tail", "long", est=500)]
    plan = make_plan(tickets, Strategy.BALANCED, jobs=1, default_estimate_s=600)
    assert groups(plan.groups)[0] == ["long"]
    assert plan.critical_path == ("long", "tail")


def test_priority_beats_path_length_in_balanced_but_not_critical_path() -> None:
    tickets = [t("urgent", est=10, prio=5), t("long", est=10), t("tail", "long", est=500)]
    balanced = make_plan(tickets, Strategy.BALANCED, jobs=1, default_estimate_s=600)
    critical = make_plan(tickets, Strategy.CRITICAL_PATH, jobs=1, default_estimate_s=600)
    assert groups(balanced.groups)[0] == ["urgent"]
    assert groups(critical.groups)[0] == ["long"]


def test_conservative_separates_overlapping_paths_and_halves_jobs() -> None:
    tickets = [
        t("A", paths=("src/**",)),
        t("B", paths=("src/http/client.py",)),
        t("C", paths=("docs/**",)),
        t("D", paths=("tests/**",)),
        t("E"),
    ]
    plan = make_plan(tickets, Strategy.CONSERVATIVE, jobs=4, default_estimate_s=600)
    gs = groups(plan.groups)
    assert all(len(g) <= 2 for g in gs)
    assert not any({"A", "B"} <= set(g) for g in gs)
    assert sorted(x for g in gs for x in g) == ["A", "B", "C", "D", "E"]


@pytest.mark.parametrize("strategy", list(Strategy))
def test_every_strategy_respects_dependencies_on_random_dags(strategy: Strategy) -> None:
    rng = random.Random(7)
    for _ in range(20):
        n = rng.randint(1, 60)
        tickets = []
        for i in range(n):
            deps = tuple(f"T{j}" for j in rng.sample(range(i), min(i, rng.randint(0, 3))))
            paths = (f"p{rng.randint(0, 5)}/**",) if rng.random() < 0.5 else ()
            tickets.append(t(f"T{i}", *deps, est=rng.randint(1, 100), paths=paths))
        plan = make_plan(tickets, strategy, jobs=rng.randint(1, 6), default_estimate_s=60)
        gs = groups(plan.groups)
        assert sorted(x for g in gs for x in g) == sorted(x.id for x in tickets)
        assert respects_dependencies(tickets, gs)
        if strategy is not Strategy.MAX_PARALLEL:
            cap = max(1, plan.jobs // 2) if strategy is Strategy.CONSERVATIVE else plan.jobs
            assert all(len(g) <= cap for g in gs)


def test_estimates_makespan_and_parallelism() -> None:
    tickets = [t("A", est=100), t("B", est=100), t("C", "A", "B", est=50)]
    plan = make_plan(tickets, Strategy.BALANCED, jobs=2, default_estimate_s=600)
    assert plan.makespan_s == 150
    assert plan.parallelism == round(250 / 150, 2)
    one = make_plan(tickets, Strategy.BALANCED, jobs=1, default_estimate_s=600)
    assert one.makespan_s == 250


def test_default_estimate_applies() -> None:
    plan = make_plan([t("A", est=None)], Strategy.BALANCED, jobs=1, default_estimate_s=42)
    assert plan.makespan_s == 42


def test_cycles_reported_with_full_path() -> None:
    tickets = [t("A", "C"), t("B", "A"), t("C", "B"), t("X", "Y"), t("Y", "X"), t("Z")]
    with pytest.raises(CycleError) as info:
        make_plan(tickets, Strategy.BALANCED, jobs=2, default_estimate_s=60)
    assert info.value.cycles == [["A", "C", "B", "A"], ["X", "Y", "X"]]


def test_simulate_with_done_and_running() -> None:
    graph = Graph([t("A"), t("B", "A"), t("C")])
    durations = [10.0, 20.0, 5.0]
    key = lambda i: (i,)  # noqa: E731
    assert simulate(graph, durations, 1, key=key) == 35
    # A done, C running with 2 s left: B (20 s) after C on one slot.
    assert simulate(graph, durations, 1, key=key, done=[0], running=[(2, 2.0)]) == 22


def test_output_is_deterministic_and_round_trips() -> None:
    shuffled = DIAMOND[::-1]
    a = render_yaml(make_plan(DIAMOND, Strategy.BALANCED, jobs=2, default_estimate_s=60))
    b = render_yaml(make_plan(shuffled, Strategy.BALANCED, jobs=2, default_estimate_s=60))
    assert a == b
    plan, findings = load_plan("plan.yaml", a)
    assert findings == []
    assert plan is not None
    assert render_yaml(plan) == a
    data = json.loads(render_json(plan))
    assert set(data) >= {
        "version",
        "strategy",
        "jobs",
        "fingerprint",
        "critical_path",
        "estimate",
        "groups",
    }
    assert data["groups"][0] == {"id": 1, "tickets": ["A", "E"]}


def test_ids_that_look_like_yaml_scalars_are_quoted() -> None:
    tickets = [t("true"), t("123"), t("1e3"), t("null")]
    text = render_yaml(make_plan(tickets, Strategy.MAX_PARALLEL, jobs=4, default_estimate_s=60))
    plan, findings = load_plan("plan.yaml", text)
    assert findings == []
    assert plan is not None
    assert sorted(plan.groups[0].tickets) == ["123", "1e3", "null", "true"]


def test_mermaid_escapes_titles() -> None:
    ticket = Ticket(id="A", title='Fix "quotes" <b> & co', file="x")
    text = render_mermaid(make_plan([ticket], Strategy.BALANCED, 1, 60), [ticket])
    assert 't0["A: Fix #quot;quotes#quot; #lt;b#gt; #amp; co"]' in text
    assert text.startswith("flowchart LR\n")


def test_scales_to_many_tickets() -> None:
    rng = random.Random(1)
    n = 20_000
    tickets = [
        t(
            f"T{i}",
            *(f"T{j}" for j in ({rng.randrange(i) for _ in range(2)} if i else ())),
            est=rng.randint(1, 60),
        )
        for i in range(n)
    ]
    for strategy in Strategy:
        plan = make_plan(tickets, strategy, jobs=8, default_estimate_s=60)
        assert sum(len(g.tickets) for g in plan.groups) == n


# --- the command and the committed plan ------------------------------------------------------


def test_plan_command_and_stale_detection(tmp_path: Path) -> None:
    repo = make_project(
        tmp_path / "r",
        {"A": ticket_yaml("A", run="true"), "B": ticket_yaml("B", depends_on=["A"], run="true")},
    )
    code, out, _ = gitexec(repo, "plan", "-o", ".gitexec/plan.yaml", "--strategy", "max-parallel")
    assert code == 0
    assert gitexec(repo, "check")[0] == 0
    # Changing a dependency makes the committed plan stale.
    (repo / ".gitexec/tickets/B.yaml").write_text(ticket_yaml("B", run="true"))
    code, out, _ = gitexec(repo, "check")
    assert code == 1
    assert ".gitexec/plan.yaml:5:14: error: plan is stale" in out
    # Status write-back alone does not make it stale.
    gitexec(repo, "plan", "-o", ".gitexec/plan.yaml", "--strategy", "max-parallel")
    (repo / ".gitexec/tickets/B.yaml").write_text(ticket_yaml("B", run="true", status="completed"))
    assert gitexec(repo, "check")[0] == 0


def test_plan_update_is_a_formatter_hook(tmp_path: Path) -> None:
    repo = make_project(tmp_path / "r", {"A": ticket_yaml("A", run="true")})
    assert gitexec(repo, "plan", "--update")[0] == 0  # no committed plan: nothing to do
    assert not (repo / ".gitexec/plan.yaml").exists()
    gitexec(repo, "plan", "-o", ".gitexec/plan.yaml", "--strategy", "conservative", "--jobs", "6")
    assert gitexec(repo, "plan", "--update")[0] == 0  # up to date
    (repo / ".gitexec/tickets/B.yaml").write_text(ticket_yaml("B", run="true"))
    code, out, _ = gitexec(repo, "plan", "--update")
    assert code == 1
    assert "was out of date and has been regenerated" in out
    text = (repo / ".gitexec/plan.yaml").read_text()
    assert "strategy: conservative\njobs: 6\n" in text  # the team's choice is kept
    assert gitexec(repo, "plan", "--update")[0] == 0


# --- estimates and dry runs follow what `run` enforces ----------------------------------------

_SLOW_AGENT = (
    "version: 1\nagents:\n  slow:\n    command: [sh, -c, '{{ ticket.run }}']\n    max_parallel: 1\n"
)
_UNION = "version: 1\nmerge:\n  rules:\n    - {paths: [CHANGELOG.md], strategy: union}\n"


def _ten_minutes(tid: str, **fields: Any) -> str:
    return ticket_yaml(tid, None, **{"run": "true", "estimate": "10m", **fields})


@pytest.mark.parametrize(
    ("tickets", "config", "minutes"),
    [
        pytest.param(  # A and B may touch the same files: never side by side
            {"A": {"paths": ["src/**"]}, "B": {"paths": ["src/x.py"]}, "C": {"paths": ["doc/**"]}},
            None,
            20,
            id="overlapping-scopes",
        ),
        pytest.param(  # ... unless a merge rule settles the file they share
            {"A": {"paths": ["CHANGELOG.md"]}, "B": {"paths": ["CHANGELOG.md"]}},
            _UNION,
            10,
            id="settled-by-a-merge-rule",
        ),
        pytest.param(
            {t: {"agent": "slow"} for t in "ABC"}, _SLOW_AGENT, 30, id="agent-max-parallel"
        ),
        pytest.param(  # jobs 4 is four units of each resource: A and C fit, B waits
            {"A": {"resources": {"cpu": 3}}, "B": {"resources": {"cpu": 3}}, "C": {}},
            None,
            20,
            id="resource-weights",
        ),
        pytest.param(  # a completed ticket takes no time
            {"A": {"status": "completed", "estimate": "2h"}, "B": {}}, None, 10, id="completed"
        ),
    ],
)
def test_estimates_and_dry_runs_follow_the_schedulers_rules(
    tmp_path: Path, tickets: dict[str, dict[str, object]], config: str | None, minutes: int
) -> None:
    repo = make_project(
        tmp_path / "r",
        {tid: _ten_minutes(tid, **fields) for tid, fields in tickets.items()},
        config=config,
    )
    code, out, err = gitexec(repo, "plan", "--format", "json", "--jobs", "4")
    assert code == 0, err
    assert json.loads(out)["estimate"]["makespan_s"] == minutes * 60
    code, _, err = gitexec(repo, "plan", "-o", "plan.yaml", "--jobs", "4")
    assert f"; estimated {minutes}m at " in err
    code, out, err = gitexec(repo, "run", "--dry-run", "--jobs", "4")
    assert code == 0, err
    assert f"estimated wall time {minutes}m; nothing was executed" in out
    starts = {
        line.split()[1]: line.split()[3] for line in out.splitlines() if line[:5].strip().isdigit()
    }
    running = [tid for tid in tickets if tickets[tid].get("status") != "completed"]
    assert sorted(starts) == sorted(running)


def test_dry_run_keeps_overlapping_scopes_apart_unless_allowed(tmp_path: Path) -> None:
    repo = make_project(
        tmp_path / "r",
        {
            "A": _ten_minutes("A", paths=["src/**"], priority=1),
            "B": _ten_minutes("B", paths=["src/api/**"]),
            "C": _ten_minutes("C", paths=["docs/**"]),
        },
    )
    code, out, _ = gitexec(repo, "run", "--dry-run", "--jobs", "3")
    assert code == 0
    assert "    1  A          1       0s      10m  -" in out
    assert "    2  C          2       0s      10m  -" in out
    assert "    3  B          1      10m      20m  -" in out  # after A, in the slot A left
    code, out, _ = gitexec(repo, "run", "--dry-run", "--jobs", "3", "--allow-overlap")
    assert "    2  B          2       0s      10m  -" in out
    assert "estimated wall time 10m" in out


def test_plan_update_ignores_estimates_that_moved_with_status(tmp_path: Path) -> None:
    repo = make_project(tmp_path / "r", {t: _ten_minutes(t) for t in "AB"})
    assert gitexec(repo, "plan", "-o", ".gitexec/plan.yaml", "--jobs", "1")[0] == 0
    before = (repo / ".gitexec/plan.yaml").read_text()
    # Status written back (a run landed): the estimate would shrink, the plan is not stale.
    (repo / ".gitexec/tickets/A.yaml").write_text(_ten_minutes("A", status="completed"))
    assert gitexec(repo, "plan", "--update")[0] == 0
    assert (repo / ".gitexec/plan.yaml").read_text() == before
    assert gitexec(repo, "check")[0] == 0


def test_plan_formats_and_errors(tmp_path: Path) -> None:
    repo = make_project(tmp_path / "r", {"A": ticket_yaml("A", run="true")})
    code, out, _ = gitexec(repo, "plan", "--format", "json")
    assert json.loads(out)["groups"] == [{"id": 1, "tickets": ["A"]}]
    code, out, _ = gitexec(repo, "plan", "--format", "mermaid")
    assert out.startswith("flowchart LR")
    (repo / ".gitexec/tickets/B.yaml").write_text(ticket_yaml("B", depends_on=["B"], run="true"))
    code, _, err = gitexec(repo, "plan")
    assert code == 2
    assert "depends on itself" in err
    with captured() as (_, err_io):
        assert main(["-C", str(repo), "plan", "--strategy", "fastest"]) == 2
    assert "invalid strategy 'fastest'" in err_io.getvalue()


def test_diagnose_reports_overlaps_and_advice(tmp_path: Path) -> None:
    repo = make_project(
        tmp_path / "r",
        {
            "A": ticket_yaml("A", paths=["src/**"], run="true", estimate="1h"),
            "B": ticket_yaml("B", paths=["src/x.py"], run="true", estimate="5m"),
            "C": ticket_yaml("C", depends_on=["A"], run="true", estimate="1h"),
        },
    )
    code, out, _ = gitexec(repo, "diagnose", "--format", "json", "--strategy", "max-parallel")
    assert code == 0
    data = json.loads(out)
    assert data["conflicts"][0]["tickets"] == ["A", "B"]
    assert data["unscoped"] == ["C"]
    assert data["bottlenecks"]["critical_path"] == ["A", "C"]
    assert any("critical path" in a for a in data["advice"])
    code, out, _ = gitexec(repo, "diagnose")
    assert "Predicted conflicts: 1" in out
    assert "Critical path: A -> C" in out


def test_plan_output_never_replaces_special_files(tmp_path: Path) -> None:
    import os
    import stat

    repo = make_project(tmp_path / "r", {"A": ticket_yaml("A", run="true")})
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link_target = tmp_path / "target.yaml"
    link_target.write_text("old\n")
    (tmp_path / "link.yaml").symlink_to(link_target)
    assert gitexec(repo, "plan", "-o", str(tmp_path / "link.yaml"))[0] == 0
    assert (tmp_path / "link.yaml").is_symlink()
    assert link_target.read_text().startswith("# Generated by `git exec plan`")
    assert gitexec(repo, "plan", "-o", "/dev/null")[0] == 0
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert stat.S_ISFIFO(fifo.stat().st_mode)  # untouched by the tests above
    new = repo / "fresh.yaml"
    assert gitexec(repo, "plan", "-o", "fresh.yaml")[0] == 0
    assert stat.S_IMODE(new.stat().st_mode) & 0o044  # readable by others, unlike mkstemp's 0600


def test_barrier_makespan_reflects_the_strategy() -> None:
    # Two long and two short independent tickets: group by group, pairing matters.
    tickets = [t("L1", est=100), t("L2", est=100), t("S1", est=10), t("S2", est=10)]
    balanced = make_plan(tickets, Strategy.BALANCED, jobs=2, default_estimate_s=60)
    conservative = make_plan(tickets, Strategy.CONSERVATIVE, jobs=2, default_estimate_s=60)
    assert balanced.barrier_makespan_s == 110  # {L1, L2} then {S1, S2}
    assert conservative.barrier_makespan_s == 220  # one at a time
    assert balanced.makespan_s == conservative.makespan_s == 110  # the dynamic run is the same
    text = render_yaml(conservative)
    assert "estimate: {makespan_s: 110, parallelism: 2, barrier_makespan_s: 220}" in text


def test_conservative_with_one_shared_scope_stays_linear() -> None:
    tickets = [t(f"T{i}", paths=("src/**",)) for i in range(3000)] + [
        t(f"U{i}") for i in range(3000)
    ]
    plan = make_plan(tickets, Strategy.CONSERVATIVE, jobs=8, default_estimate_s=60)
    for g in plan.groups:
        assert sum(1 for x in g.tickets if x.startswith("T")) <= 1
    assert sum(len(g.tickets) for g in plan.groups) == 6000


def test_pairwise_overlaps_compares_along_prefixes() -> None:
    from gitexec.plan import pairwise_overlaps

    tickets = [
        t("A", paths=("src/**",)),
        t("B", paths=("src/http/client.py",)),
        t("C", paths=("*.md",)),
        t("D", paths=("README.md",)),
        t("E", paths=("docs/**",)),
    ]
    assert pairwise_overlaps(tickets) == [
        ("A", "B", [("src/**", "src/http/client.py")]),
        ("C", "D", [("*.md", "README.md")]),
    ]
    crowd = [t(f"T{i}", paths=("src/**",)) for i in range(3000)]
    assert len(pairwise_overlaps(crowd, limit=50)) == 50


def test_diagnose_respects_merge_rules_and_existing_settings(tmp_path: Path) -> None:
    """A CHANGELOG merged by union is no predicted conflict; a ticket that already has the
    highest priority is not told to raise it."""
    tickets = {
        "HUB": ticket_yaml("HUB", run="true", priority=5, paths=["core/**"]),
        **{
            f"D{i}": ticket_yaml(
                f"D{i}", run="true", depends_on=["HUB"], paths=["CHANGELOG.md", f"d{i}/**"]
            )
            for i in range(3)
        },
    }
    rules = "merge:\n  rules:\n    - {paths: [CHANGELOG.md], strategy: union}\n"
    repo = make_project(tmp_path / "r", tickets, config=rules)
    code, out, _ = gitexec(repo, "diagnose", "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert data["conflicts"] == []
    assert not any("priority" in a or "overlapping" in a for a in data["advice"]), data["advice"]

    # Without the rule the CHANGELOG is a predicted conflict; at priority 0 the hub is
    # told which priority would make it start first.
    tickets["HUB"] = ticket_yaml("HUB", run="true", paths=["core/**"])
    repo = make_project(tmp_path / "r2", tickets)
    data = json.loads(gitexec(repo, "diagnose", "--format", "json")[1])
    assert [c["tickets"] for c in data["conflicts"]] == [["D0", "D1"], ["D0", "D2"], ["D1", "D2"]]
    assert "HUB gates 3 dependents: give it `priority: 1` so it starts first" in data["advice"]
    assert any(a.endswith("or plan with --strategy conservative") for a in data["advice"])
    data = json.loads(
        gitexec(repo, "diagnose", "--format", "json", "--strategy", "conservative")[1]
    )
    assert not any("conservative" in a for a in data["advice"])
