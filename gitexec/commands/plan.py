"""`git exec plan`: turn the ticket DAG into parallel groups; `--update` is the pre-commit hook."""

from __future__ import annotations

import dataclasses
import os
import stat
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from gitexec.config import Config, Strategy
from gitexec.errors import EXIT_FAILED, EXIT_OK
from gitexec.fields import format_duration
from gitexec.plan import (
    NOT_MEASURED,
    PLAN_FILE,
    Constraints,
    Measured,
    Plan,
    load_plan,
    make_plan,
    render_json,
    render_mermaid,
    render_yaml,
)
from gitexec.project import Project
from gitexec.runspec import RunSpec, policy_for
from gitexec.tickets import Ticket
from gitexec.workspace import Workspace


def build_plan(
    ws: Workspace,
    project: Project,
    strategy: Strategy | None = None,
    jobs: int | None = None,
    *,
    measured: Measured | None = None,
) -> Plan:
    """A fresh plan of a valid project with flag/env/git-config/config settings applied;
    tickets without an `estimate` are estimated from `measured` (default: past runs); the
    estimate follows what a run's scheduler would enforce, and skips completed tickets."""
    project.require_valid()
    config = ws.settings(project.config, {"strategy": strategy, "jobs": jobs})
    if measured is None:
        measured = measured_estimates(ws, project.tickets, config.default_agent)
    return make_plan(
        project.tickets,
        config.strategy,
        config.jobs,
        config.default_estimate_s,
        measured,
        constraints_for(config),
    )


def constraints_for(config: Config, *, allow_overlap: bool = False) -> Constraints:
    """What the scheduler of a run with these settings enforces: the run's own policy
    (runspec.policy_for), so plans and runs cannot disagree about it."""
    probe = RunSpec(
        run_id="plan",
        base="",
        base_rev="",
        tickets=(),
        skipped=(),
        plan=Plan(config.strategy, config.jobs, "", (), 0.0, 1.0, ()),
        config=config,
        jobs=config.jobs,
        allow_overlap=allow_overlap,
    )
    return Constraints(policy_for(probe), config.default_agent)


def measured_estimates(ws: Workspace, tickets: Sequence[Ticket], default_agent: str) -> Measured:
    """Estimates this repository's run history gives the tickets that declare none."""
    from gitexec.history import History

    if all(t.estimate_s is not None for t in tickets):
        return NOT_MEASURED
    return History.load(ws.state_dir).estimates(tickets, default_agent)


def render(plan: Plan, project: Project, fmt: str) -> str:
    if fmt == "json":
        return render_json(plan)
    if fmt == "mermaid":
        return render_mermaid(plan, project.tickets)
    return render_yaml(plan)


def write_atomic(path: Path, text: str) -> None:
    """Replace a regular file atomically (keeping its mode); write through anything else.

    `-o /dev/null`, a FIFO or a symlink must not be replaced by a regular file.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        st = None
    if path.is_symlink() or (st is not None and not stat.S_ISREG(st.st_mode)):
        with path.open("w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        if st is not None:
            os.chmod(tmp, stat.S_IMODE(st.st_mode))
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def summary(plan: Plan) -> str:
    n = sum(len(g.tickets) for g in plan.groups)
    path = " -> ".join(plan.critical_path[:6]) + (" -> ..." if len(plan.critical_path) > 6 else "")
    learned = len(plan.measured) + len(plan.agent_average)
    return (
        f"{n} ticket(s) in {len(plan.groups)} group(s) ({plan.strategy.value}, jobs {plan.jobs}); "
        f"estimated {format_duration(plan.makespan_s)} at {plan.parallelism:g}x parallelism"
        + (f" ({learned} estimate(s) measured in past runs)" if learned else "")
        + f"; critical path {path}"
    )


def plan(
    ws: Workspace,
    *,
    strategy: Strategy | None,
    jobs: int | None,
    output: str | None,
    fmt: str | None,
    history: bool = True,
) -> int:
    """Print or write a plan. The committed plan (.gitexec/plan.yaml) never takes estimates
    from this clone's history: it must come out the same wherever it is regenerated."""
    project = ws.load(check_plan=False)
    committed = output not in (None, "-") and _is_committed_plan(ws, str(output))
    measured = None if history and not committed else NOT_MEASURED
    result = build_plan(ws, project, strategy, jobs, measured=measured)
    if fmt is None:
        fmt = "json" if output and output.endswith(".json") else "yaml"
    text = render(result, project, fmt)
    if output is None or output == "-":
        sys.stdout.write(text)
    else:
        write_atomic(ws.cwd / output, text)
        print(f"wrote {output}: {summary(result)}", file=sys.stderr)
    return EXIT_OK


def _same_but_estimates(a: Plan, b: Plan) -> bool:
    """Whether two plans differ at most in their estimates, which move with ticket status
    (completed tickets take no time): no reason for the hook to rewrite a committed plan."""
    return (
        dataclasses.replace(
            a,
            makespan_s=b.makespan_s,
            parallelism=b.parallelism,
            barrier_makespan_s=b.barrier_makespan_s,
        )
        == b
    )


def _is_committed_plan(ws: Workspace, output: str) -> bool:
    try:
        return (ws.cwd / output).resolve() == (ws.root / PLAN_FILE).resolve()
    except OSError:
        return False


def update(ws: Workspace, *, strategy: Strategy | None, jobs: int | None) -> int:
    """Regenerate the committed plan if there is one; exit 1 when that changed it.

    Like a formatter hook: the strategy and jobs recorded in the plan are kept unless
    overridden, so the hook never changes a team's choice.
    """
    path = ws.root / PLAN_FILE
    if not path.is_file():
        return EXIT_OK
    old = path.read_text(encoding="utf-8", errors="replace")
    committed, _ = load_plan(PLAN_FILE, old)
    if committed is not None:
        strategy = strategy or committed.strategy
        jobs = jobs or committed.jobs
    project = ws.load(check_plan=False)
    fresh = build_plan(ws, project, strategy, jobs, measured=NOT_MEASURED)
    new = render_yaml(fresh)
    if new == old or (committed is not None and _same_but_estimates(committed, fresh)):
        return EXIT_OK
    write_atomic(path, new)
    print(f"gitexec: {PLAN_FILE} was out of date and has been regenerated; add it to the commit")
    return EXIT_FAILED
