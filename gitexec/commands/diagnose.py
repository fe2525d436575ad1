"""`git exec diagnose`: predicted conflicts and bottlenecks of a plan, with concrete advice."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from gitexec.config import Config, Strategy
from gitexec.errors import EXIT_OK
from gitexec.fields import format_duration
from gitexec.globs import PathSet, pathsets_may_overlap
from gitexec.history import History
from gitexec.patterns import Patterns, analyze
from gitexec.patterns import advice as history_advice
from gitexec.plan import NOT_MEASURED, Graph, Measured, effective_estimates, pairwise_overlaps
from gitexec.planfile import Plan
from gitexec.project import Project
from gitexec.tickets import Ticket
from gitexec.workspace import Workspace

from .plan import build_plan


@dataclass
class Overlap:
    group: int
    tickets: tuple[str, str]
    globs: list[tuple[str, str]]


@dataclass
class Diagnosis:
    conflicts: list[Overlap] = field(default_factory=list)
    unscoped: list[str] = field(default_factory=list)  # tickets with no declared paths
    bottlenecks: dict[str, Any] = field(default_factory=dict)
    advice: list[str] = field(default_factory=list)
    live: dict[str, Any] = field(default_factory=dict)  # overlaps seen in a running run


def settled_paths(config: Config) -> PathSet:
    """Paths the merge rules settle (a CHANGELOG merged by union): no conflict there."""
    return PathSet(tuple(p for rule in config.merge.rules for p in rule.paths))


def check_conflicts(
    plan: Plan, tickets: dict[str, Ticket], diagnosis: Diagnosis, settled: PathSet
) -> None:
    """Declared scopes that overlap inside one group, leaving out paths merge rules settle
    (as the scheduler does): these tickets could collide."""
    for g in plan.groups:
        members = [tickets[t] for t in g.tickets]
        for a, b, _ in pairwise_overlaps(members):
            pairs = pathsets_may_overlap(tickets[a].paths, tickets[b].paths, settled)
            if pairs:
                diagnosis.conflicts.append(Overlap(g.id, (a, b), pairs))
    diagnosis.unscoped = sorted(t.id for t in tickets.values() if not t.paths)
    for o in diagnosis.conflicts[:5]:
        a, b = o.tickets
        globs = ", ".join(f"{x} ~ {y}" for x, y in o.globs[:3])
        ways = ["narrow their `paths`", f"add `depends_on: [{a}]` to {b}"]
        if plan.strategy is not Strategy.CONSERVATIVE:
            ways.append("plan with --strategy conservative")
        diagnosis.advice.append(
            f"{a} and {b} (group {o.group}) declare overlapping paths ({globs}): "
            f"{', '.join(ways[:-1])}, or {ways[-1]}"
        )
    if diagnosis.unscoped:
        shown = ", ".join(diagnosis.unscoped[:5]) + (" ..." if len(diagnosis.unscoped) > 5 else "")
        diagnosis.advice.append(
            f"{len(diagnosis.unscoped)} ticket(s) declare no `paths` ({shown}); they may touch "
            "anything, so conflicts with them cannot be predicted"
        )


def analyze_bottlenecks(
    plan: Plan,
    project: Project,
    config: Config,
    diagnosis: Diagnosis,
    measured: Measured = NOT_MEASURED,
    patterns: Patterns | None = None,
) -> None:
    """The critical path, group widths and fan-out of the plan (with estimates measured in
    past runs where tickets declare none), and what the run history shows."""
    graph = Graph(project.tickets)
    est = effective_estimates(graph, config.default_estimate_s, measured)
    by_id = {t.id: (t, est[i]) for i, t in enumerate(graph.tickets)}
    cp = list(plan.critical_path)
    cp_len = sum(by_id[t][1] for t in cp)
    total = sum(est)
    sizes = [(len(g.tickets), g.id) for g in plan.groups]
    widest = min(sizes, key=lambda s: (-s[0], s[1]), default=(0, 0))
    narrowest = min(sizes, default=(0, 0))
    heavy = sorted(((by_id[t][1], t) for t in cp), key=lambda x: (-x[0], x[1]))[:3]
    fan_out = sorted(
        ((len(graph.dependents[i]), t.id) for i, t in enumerate(graph.tickets)),
        key=lambda x: (-x[0], x[1]),
    )[:3]
    no_estimate = sum(
        1 for t in project.tickets if t.estimate_s is None and t.id not in measured.seconds
    )
    diagnosis.bottlenecks = {
        "critical_path": cp,
        "critical_path_s": cp_len,
        "makespan_s": plan.makespan_s,
        "total_work_s": total,
        "parallelism": plan.parallelism,
        "jobs": plan.jobs,
        "widest_group": {"id": widest[1], "tickets": widest[0]},
        "narrowest_group": {"id": narrowest[1], "tickets": narrowest[0]},
        "heaviest_on_critical_path": [{"ticket": t, "estimate_s": s} for s, t in heavy],
        "most_dependents": [{"ticket": t, "dependents": n} for n, t in fan_out if n],
        "without_estimate": no_estimate,
        "measured_estimates": sorted(set(plan.measured) | set(plan.agent_average)),
    }
    if patterns is not None and patterns.runs:
        diagnosis.bottlenecks["history"] = patterns.to_json()
    advice = diagnosis.advice
    if plan.makespan_s and cp_len >= 0.8 * plan.makespan_s and len(cp) > 1 and heavy:
        names = ", ".join(f"{t} ({format_duration(s)})" for s, t in heavy)
        advice.append(
            f"the critical path ({format_duration(cp_len)} of {format_duration(plan.makespan_s)}) "
            f"bounds the run: split or speed up {names}; more jobs will not help"
        )
    max_useful = total / cp_len if cp_len else 1.0
    if plan.jobs > max_useful + 1:
        advice.append(
            f"jobs {plan.jobs} exceeds the useful parallelism of this DAG (~{max_useful:.1f}); "
            f"{max(1, round(max_useful))} slots would finish as fast"
        )
    if widest[0] > plan.jobs and plan.strategy is Strategy.MAX_PARALLEL:
        advice.append(
            f"group {widest[1]} has {widest[0]} tickets but only {plan.jobs} slots; "
            f"raise --jobs toward {widest[0]} or use --strategy balanced"
        )
    priorities = sorted((t.priority for t in project.tickets), reverse=True)
    for n, tid in fan_out:
        ticket = by_id[tid][0]
        already_first = ticket.priority == priorities[0] and priorities[1:2] != [ticket.priority]
        if n >= 3 and not already_first:
            advice.append(
                f"{tid} gates {n} dependents: give it `priority: {priorities[0] + 1}` "
                "so it starts first"
            )
            break
    if patterns is not None:
        advice.extend(history_advice(patterns))
    if no_estimate:
        advice.append(
            f"{no_estimate} ticket(s) have no `estimate` and no past runs; the default "
            f"{format_duration(config.default_estimate_s)} was assumed"
        )


def diagnose(
    ws: Workspace,
    *,
    conflicts: bool,
    bottlenecks: bool,
    strategy: Strategy | None,
    jobs: int | None,
    fmt: str,
) -> int:
    if not conflicts and not bottlenecks:
        conflicts = bottlenecks = True
    project = ws.load(check_plan=False)
    config = ws.settings(project.config, {"strategy": strategy, "jobs": jobs})
    past = History.load(ws.state_dir) if bottlenecks else History()
    measured = past.estimates(project.tickets, config.default_agent)
    plan = build_plan(ws, project, strategy, jobs, measured=measured)
    diagnosis = Diagnosis()
    tickets = {t.id: t for t in project.tickets}
    if conflicts:
        settled = settled_paths(config)
        check_conflicts(plan, tickets, diagnosis, settled)
        _live_overlaps(ws, diagnosis, settled)
    if bottlenecks:
        analyze_bottlenecks(plan, project, config, diagnosis, measured, analyze(past))
    if fmt == "json":
        out = asdict(diagnosis)
        if not conflicts:
            del out["conflicts"], out["unscoped"], out["live"]
        if not bottlenecks:
            del out["bottlenecks"]
        print(json.dumps(out, indent=2))
        return EXIT_OK
    _print_text(diagnosis, conflicts=conflicts, bottlenecks=bottlenecks)
    return EXIT_OK


def _live_overlaps(ws: Workspace, diagnosis: Diagnosis, settled: PathSet) -> None:
    """Overlaps a running engine has seen between agents' actual changes (but for paths
    merge rules settle)."""
    from gitexec.journal import lock_holder
    from gitexec.runstate import load_run

    holder = lock_holder(ws.state_dir)
    if not holder or not holder.startswith("run "):
        return
    run_id = holder[4:].split(",", 1)[0]
    state = load_run(ws.state_dir, run_id)
    overlaps = {}
    for pair, paths in state.active_overlaps().items():
        unsettled = [p for p in paths if not settled.matches(p)]
        if unsettled:
            overlaps[pair] = unsettled
    diagnosis.live = {
        "run": run_id,
        "overlaps": [{"tickets": list(p), "paths": paths} for p, paths in sorted(overlaps.items())],
    }
    for (a, b), paths in sorted(overlaps.items()):
        where = "is changing" if b in state.tickets and not state.tickets[b].status.terminal else ""
        diagnosis.advice.append(
            f"run {run_id}: {a} and {b} both change {', '.join(paths[:3])}"
            + (f" ({b} {where} them too)" if where else f" ({b} merged them already)")
            + "; expect a conflict when the later one merges"
        )


def _print_text(d: Diagnosis, *, conflicts: bool, bottlenecks: bool) -> None:
    if conflicts:
        print(f"Predicted conflicts: {len(d.conflicts)}")
        for o in d.conflicts:
            globs = ", ".join(f"{x} ~ {y}" for x, y in o.globs)
            print(f"  group {o.group}: {o.tickets[0]} <-> {o.tickets[1]}  ({globs})")
        if d.unscoped:
            print(f"Tickets without declared paths: {len(d.unscoped)}")
        if d.live:
            print(f"Live overlaps in run {d.live['run']}: {len(d.live['overlaps'])}")
            for o in d.live["overlaps"]:
                print(f"  {o['tickets'][0]} <-> {o['tickets'][1]}: {', '.join(o['paths'][:5])}")
    if bottlenecks and d.bottlenecks:
        b = d.bottlenecks
        print(
            f"Critical path: {' -> '.join(b['critical_path'])} "
            f"({format_duration(b['critical_path_s'])} of est. {format_duration(b['makespan_s'])})"
        )
        print(
            f"Widest group: {b['widest_group']['id']} ({b['widest_group']['tickets']} tickets); "
            f"narrowest: {b['narrowest_group']['id']} ({b['narrowest_group']['tickets']})"
        )
        print(f"Estimated parallelism: {b['parallelism']:g}x with {b['jobs']} jobs")
        if b["measured_estimates"]:
            print(f"Estimates measured in past runs: {len(b['measured_estimates'])} ticket(s)")
        _print_history(b.get("history"))
    if d.advice:
        print("Advice:")
        for line in d.advice:
            print(f"  - {line}")


def _print_history(h: dict[str, Any] | None) -> None:
    if not h:
        return
    print(f"History of {h['runs']} run(s):")
    slow = ", ".join(f"{s['ticket']} ({format_duration(s['median_s'])})" for s in h["slowest"][:5])
    if slow:
        print(f"  slowest: {slow}")
    if h["flaky"]:
        print(f"  flaky: {', '.join(f['ticket'] for f in h['flaky'][:5])}")
    spots = ", ".join(f"{c['path']} ({c['conflicts']}x)" for c in h["conflict_hot_spots"][:5])
    if spots:
        print(f"  conflict hot spots: {spots}")
    for name, a in h["agents"].items():
        mean = format_duration(a["mean_s"]) if a["mean_s"] is not None else "-"
        cost = "-" if a["cost_usd"] is None else f"${a['cost_usd']:.4f}"
        print(
            f"  agent {name}: {a['success_rate']:.0%} of {a['tickets']} ticket(s) completed, "
            f"mean {mean}, cost {cost}"
        )
