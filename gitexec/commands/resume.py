"""`git exec resume`: continue a crashed or stopped run from its journal, after checking
that what the journal says can be continued safely."""

from __future__ import annotations

import time

import pygit2

from gitexec.commands.run import (
    SHALLOW_MESSAGE,
    exit_code,
    load_at,
    publish_reports,
    remember,
    summary,
)
from gitexec.config import Strategy
from gitexec.engine import Engine
from gitexec.enqueue import replayed_tickets
from gitexec.errors import UserError
from gitexec.events import RunStarted
from gitexec.fields import MAX_JOBS, format_duration
from gitexec.journal import JOURNAL, load_events
from gitexec.planfile import Plan
from gitexec.refs import integration_ref
from gitexec.runspec import RunSpec
from gitexec.runstate import RUNS_DIR, RunState, RunStatus
from gitexec.tickets import TicketState
from gitexec.workspace import Workspace


def resume_header(state: RunState, now: float) -> str:
    """What `resume` is about to continue: the run, its state and age, what is left."""
    left = [t for t in state.tickets.values() if not t.status.terminal]
    kinds = {
        "interrupted": sum(
            1
            for t in left
            if t.status in (TicketState.RUNNING, TicketState.VALIDATING, TicketState.MERGING)
            and not t.awaiting_gate
        ),
        "awaiting their gate": sum(1 for t in left if t.awaiting_gate),
    }
    kinds["waiting to start"] = len(left) - sum(kinds.values())
    detail = ", ".join(f"{n} {what}" for what, n in kinds.items() if n)
    return (
        f"resuming run {state.run_id} ({state.status.value}, started {run_age(state, now)} ago): "
        f"{len(left)} of {len(state.tickets)} ticket(s) left" + (f" ({detail})" if detail else "")
    )


def run_age(state: RunState, now: float) -> str:
    return format_duration(max(0.0, now - state.started_at)) if state.started_at else "?"


def resumable(state: RunState) -> bool:
    """Work left, or a crash before the run recorded its end (resume finishes it)."""
    if state.status is RunStatus.CRASHED:
        return True
    return state.status is RunStatus.STOPPED and any(
        not t.status.terminal for t in state.tickets.values()
    )


def _stopped_off_its_branch(repo: pygit2.Repository, state: RunState) -> bool:
    """Stopped with its branch not where the journal left it (someone moved it after the
    last merges): resume settles the branch even when every ticket is done."""
    ref = repo.references.get(integration_ref(state.run_id))
    at = str(ref.target) if ref is not None else None
    return state.status is RunStatus.STOPPED and at != (state.head or state.base)


def _continuable(
    ws: Workspace, repo: pygit2.Repository, run_id: str, state: RunState
) -> RunStarted:
    """The run's first record, if what its journal says can be continued safely: a start
    of this run on its own branch, from a commit this repository has, with a head it has.
    A journal damaged past that is refused, never guessed at."""
    refuse = f"run {run_id} cannot be resumed"
    loaded = load_events(ws.state_dir / RUNS_DIR / run_id / JOURNAL)
    started = next((e for e in loaded.events if isinstance(e, RunStarted)), None)
    if started is None:
        why = f" ({loaded.problems[0]})" if loaded.problems else ""
        raise UserError(
            f"{refuse}: its journal has no usable run-started record{why}; "
            f"remove the run with `git exec clean --run {run_id}`"
        )
    if started.integration != integration_ref(run_id):
        raise UserError(
            f"{refuse}: its journal names the branch {started.integration}, not "
            f"{integration_ref(run_id)}"
        )
    if started.run != run_id:
        raise UserError(f"{refuse}: its journal is the journal of run {started.run!r}")
    for what, commit in (("base commit", state.base), ("last head", state.head)):
        if commit and not _is_commit(repo, commit):
            raise UserError(f"{refuse}: its {what} {commit} is not in this repository")
    if not 1 <= state.jobs <= MAX_JOBS:
        raise UserError(f"{refuse}: its journal says jobs {state.jobs} (1 to {MAX_JOBS})")
    return started


def _is_commit(repo: pygit2.Repository, rev: str) -> bool:
    try:
        obj = repo.get(pygit2.Oid(hex=rev))
    except (ValueError, TypeError):
        return False
    return obj is not None and obj.type == pygit2.enums.ObjectType.COMMIT


def resume_run(
    ws: Workspace,
    run_id: str,
    *,
    validate_state: bool,
    monitor: bool | None,
    junit: str | None = None,
    markdown: str | None = None,
    onto: str | None = None,
    budget_usd: float | None = None,
) -> int:
    """Restart a crashed or stopped run from its journal."""
    from gitexec.commands.report import report_targets
    from gitexec.commands.status import journal_warnings
    from gitexec.dashboard import choose_reporter
    from gitexec.integration import Integration
    from gitexec.planfile import PlanGroup
    from gitexec.recovery import validate_state as check_state
    from gitexec.runstate import load_run

    report_targets(ws, junit=junit, markdown=markdown)
    state = load_run(ws.state_dir, run_id)
    journal_warnings(ws, run_id, state.problems)
    repo = pygit2.Repository(str(ws.repo.common_dir))
    started = _continuable(ws, repo, run_id, state)
    if not resumable(state) and not _stopped_off_its_branch(repo, state):
        raise UserError(
            f"run {run_id} is {state.status.value}: nothing left to resume "
            "(a new `git exec run` picks up tickets that are not completed)"
        )
    if ws.repo.shallow:
        raise UserError(SHALLOW_MESSAGE)
    project = load_at(ws, repo, state.base)
    wanted = set(state.tickets)
    tickets = tuple(t for t in project.tickets if t.id in wanted and t.id not in state.enqueued)
    tickets += tuple(replayed_tickets(state.enqueued))
    missing = wanted - {t.id for t in tickets}
    if missing:
        raise UserError(
            f"run {run_id} cannot be resumed: its journal names ticket(s) "
            f"{', '.join(sorted(missing))}, which its base commit {state.base[:12]} does not have"
        )
    config = ws.settings(project.config, {"jobs": state.jobs})
    plan = Plan(
        strategy=Strategy(started.strategy or "balanced"),
        jobs=state.jobs,
        fingerprint="",
        critical_path=tuple(state.critical_path),
        makespan_s=0.0,
        parallelism=1.0,
        groups=tuple(PlanGroup(n + 1, tuple(g)) for n, g in enumerate(state.groups)),
    )
    spec = RunSpec(
        run_id=run_id,
        base=state.base,
        base_rev=state.base_rev,
        tickets=tickets,
        skipped=tuple(state.skipped),
        plan=plan,
        config=config,
        jobs=state.jobs,
        barrier=started.barrier,
        allow_overlap=started.allow_overlap,
    )
    ws.require_writable(ws.run_paths(run_id))
    print(resume_header(state, time.time()), flush=True)
    if validate_state:
        from gitexec.gitutil import committer_identity

        integration = Integration(repo, state.integration, committer_identity(ws.root), run_id)
        report = check_state(ws.repo, integration, state, onto=onto)
        for line in report.repaired:
            print(f"repaired: {line}")
        for line in report.problems:
            print(f"problem:  {line}")
        if not report.ok:
            raise UserError(f"run {run_id} cannot be resumed safely (see the problems above)")
        print(f"state of run {run_id} is consistent")
    engine = Engine(
        ws.repo, spec, choose_reporter(monitor), resume=state, onto=onto, budget_usd=budget_usd
    )
    final = engine.run()
    remember(ws, final)
    print(summary(final, engine.run_dir))
    reported = publish_reports(ws, run_id, junit=junit, markdown=markdown)
    return exit_code(final, engine.interrupted, reported)
