"""`git exec run`: resolve a run from a commit's tickets, execute it, land it `--into` a branch."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pygit2

from gitexec.config import Config, Strategy
from gitexec.engine import Engine
from gitexec.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, CommandError, UserError
from gitexec.fields import format_duration
from gitexec.gitutil import git, run_git
from gitexec.history import CostRange
from gitexec.plan import Constraints, Graph, effective_estimates, fit_rule, make_plan, schedule
from gitexec.planfile import Plan, check_plan_against, load_plan
from gitexec.project import Project, TreeSource, load_config, load_project
from gitexec.refs import branch_name, integration_branch
from gitexec.runmetrics import metrics
from gitexec.runspec import RunSpec, new_run_id, policy_for
from gitexec.runstate import RunState, RunStatus
from gitexec.tickets import TICKETS_DIR, Ticket, TicketState, id_problem
from gitexec.workspace import Workspace

SHALLOW_MESSAGE = (
    "this is a shallow clone: merges need the full history. Fetch it with "
    "`git fetch --unshallow` (in GitHub Actions: actions/checkout with `fetch-depth: 0`)"
)


@dataclass(frozen=True)
class RunRequest:
    """The `run` command line, typed."""

    plan_file: str | None = None
    jobs: int | None = None
    base: str | None = None
    run_id: str | None = None
    only: tuple[str, ...] = ()
    with_deps: bool = False
    dry_run: bool = False
    barrier: bool = False
    allow_overlap: bool = False
    into: str | None = None
    monitor: bool | None = None
    strategy: Strategy | None = None
    junit: str | None = None
    markdown: str | None = None
    validate: bool = False
    budget_usd: float | None = None


def resolve_base(ws: Workspace, repo: pygit2.Repository, requested: str | None) -> tuple[str, str]:
    """(commit id, the revision as given): flag > env > git config > config.yaml > HEAD."""
    # Only the config: the tickets a run reads are those committed at the base.
    rev = ws.settings(load_config(ws.root), {"base": requested}).base
    try:
        obj = repo.revparse_single(rev)
        commit = obj.peel(pygit2.Commit)
    except (KeyError, ValueError, pygit2.GitError):
        hint = " (the repository has no commits yet)" if repo.head_is_unborn else ""
        raise UserError(f"base revision {rev!r} does not name a commit{hint}") from None
    return str(commit.id), rev


def load_at(ws: Workspace, repo: pygit2.Repository, commit: str) -> Project:
    """The project as committed at `commit`: runs execute what is committed."""
    tree = repo[pygit2.Oid(hex=commit)].peel(pygit2.Tree)
    return load_project(
        ws.root,
        cache_path=ws.state_dir / "cache" / "tree-parse.pickle",
        check_plan=False,
        source=TreeSource(repo, tree),
    )


def select(
    project: Project, only: Sequence[str], with_deps: bool
) -> tuple[list[Ticket], list[str]]:
    """The tickets to run and those skipped because they are already completed."""
    by_id = {t.id: t for t in project.tickets}
    chosen = set(by_id)
    if only:
        unknown = [t for t in only if t not in by_id]
        if unknown:
            raise UserError(f"--only: no such ticket(s): {', '.join(unknown)}")
        chosen = set(only)
        if with_deps:
            stack = list(only)
            while stack:
                for dep in by_id[stack.pop()].depends_on:
                    if dep not in chosen:
                        chosen.add(dep)
                        stack.append(dep)
    done = {t.id for t in project.tickets if t.status is TicketState.COMPLETED}
    run = [by_id[t] for t in sorted(chosen) if t not in done]
    skipped = sorted(chosen & done)
    ids = {t.id for t in run}
    for t in run:
        missing = [d for d in t.depends_on if d not in ids and d not in done]
        if missing:
            raise UserError(
                f"{t.id} depends on {', '.join(missing)}, which is neither completed nor selected; "
                "add --with-deps"
            )
    return run, skipped


def build_spec(ws: Workspace, repo: pygit2.Repository, request: RunRequest) -> RunSpec:
    base, base_rev = resolve_base(ws, repo, request.base)
    project = load_at(ws, repo, base)
    if not project.tickets and not project.errors:
        local = ws.load(check_plan=False)
        hint = (
            f"; the work tree has {len(local.tickets)} ticket(s): commit .gitexec/ first"
            if local.tickets
            else "; create some with `git exec new`"
        )
        raise UserError(f"no tickets in {TICKETS_DIR}/ at {base_rev} ({base[:12]}){hint}")
    if project.errors:
        shown = "\n".join(str(f) for f in project.errors[:20])
        raise UserError(f"the tickets at {base_rev} ({base[:12]}) have errors:\n{shown}")
    config = ws.settings(project.config, {"jobs": request.jobs, "strategy": request.strategy})

    run_id = request.run_id or new_run_id()
    problem = id_problem(run_id, "run id")
    if problem:
        raise UserError(f"--run-id: {problem}")

    tickets, skipped = select(project, request.only, request.with_deps)
    plan = _plan_for(ws, project, tickets, request, config)
    from gitexec.commands.plan import measured_estimates

    return RunSpec(
        measured=measured_estimates(ws, tickets, config.default_agent),
        run_id=run_id,
        base=base,
        base_rev=base_rev,
        tickets=tuple(tickets),
        skipped=tuple(skipped),
        plan=plan,
        config=config,
        jobs=config.jobs,
        barrier=request.barrier,
        allow_overlap=request.allow_overlap,
        validate=request.validate,
        budget_usd=request.budget_usd if request.budget_usd is not None else config.budget.run_usd,
    )


def _plan_for(
    ws: Workspace,
    project: Project,
    tickets: Sequence[Ticket],
    request: RunRequest,
    config: Config,
) -> Plan:
    default_s = project.config.default_estimate_s
    if request.plan_file is None:
        # A run uses the plan's groups and critical path. Its makespan estimate is for
        # `plan` to show (a dry run simulates the schedule itself, with slot numbers).
        return make_plan(tickets, config.strategy, config.jobs, default_s, estimate=False)
    path = ws.cwd / request.plan_file
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read plan {request.plan_file}: {exc.strerror}") from None
    plan, findings = load_plan(request.plan_file, text)
    if plan is not None:
        findings += check_plan_against(request.plan_file, text, plan, project.tickets, default_s)
    if plan is None or findings:
        raise UserError("the plan cannot be used:\n" + "\n".join(map(str, findings)))
    return plan


def dry_run(spec: RunSpec, cost: CostRange | None = None) -> int:
    """What would run where and when: the run's own scheduling rule, simulated on the
    estimates (tickets with overlapping scopes apart, max_parallel, resource weights)."""
    measured = spec.measured
    graph = Graph(spec.tickets)
    est = effective_estimates(graph, spec.config.default_estimate_s, measured)
    order = graph.topological_order() or []
    rank = graph.bottom_levels(order, est)
    prio = [t.priority for t in graph.tickets]
    rule = fit_rule(graph, Constraints(policy_for(spec), spec.config.default_agent), spec.jobs)
    slots = schedule(graph, est, spec.jobs, key=lambda i: (-prio[i], -rank[i], i), fits=rule)
    print(
        f"dry run {spec.run_id}: {len(spec.tickets)} ticket(s) from {spec.base_rev} "
        f"({spec.base[:12]}), jobs {spec.jobs}, {spec.plan.strategy.value}"
        + (", group by group" if spec.barrier else "")
    )
    if spec.skipped:
        print(f"already completed, skipped: {', '.join(spec.skipped)}")
    width = max([len(t.id) for t in spec.tickets] + [6])
    print(f"  {'#':>3}  {'ticket':<{width}}  slot  {'start':>7}  {'end':>7}  after")
    by_id = {t.id: t for t in spec.tickets}
    for n, s in enumerate(slots, 1):
        deps = ", ".join(by_id[s.ticket].depends_on) or "-"
        print(
            f"  {n:>3}  {s.ticket:<{width}}  {s.slot:>4}  {format_duration(s.start_s):>7}  "
            f"{format_duration(s.end_s):>7}  {deps}"
        )
    makespan = max((s.end_s for s in slots), default=0.0)
    ids = {t.id for t in spec.tickets if t.estimate_s is None}
    own = sorted(t for t in measured.seconds if t in ids and t not in measured.from_agent)
    agent = sorted(t for t in measured.from_agent if t in ids)
    if own:
        print(f"estimates measured in past runs: {', '.join(own)}")
    if agent:
        print(f"estimates from their agent's past tickets: {', '.join(agent)}")
    if cost is not None:
        print(cost.describe())
    print(f"estimated wall time {format_duration(makespan)}; nothing was executed")
    return EXIT_OK


# --- --into --------------------------------------------------------------------------------


def _checkout_of(ws: Workspace, ref: str) -> Path | None:
    listing = git(["worktree", "list", "--porcelain"], ws.root)
    for block in listing.split("\n\n"):
        lines = block.splitlines()
        path = next((line[9:] for line in lines if line.startswith("worktree ")), None)
        if path and f"branch {ref}" in lines:
            return Path(path)
    return None


@dataclass(frozen=True)
class Into:
    """A checked `--into` target: the branch name as given, and its ref."""

    name: str
    ref: str


def check_into(ws: Workspace, branch: str) -> Into:
    """Validate `--into` before anything runs: a branch name (or refs/heads/...), and, if
    the branch is checked out, a checkout whose uncommitted work would not be at risk."""
    name = branch.removeprefix("refs/heads/")
    if name in ("HEAD", "@") or name.startswith("-"):
        raise UserError(f"--into {branch}: name a branch (e.g. --into main), not {branch!r}")
    proc = run_git(["check-ref-format", "--branch", name], ws.root, check=False)
    if proc.returncode != 0 or proc.stdout.strip() != name:
        raise UserError(
            f"--into {branch}: not a branch name (a revision such as main~1 cannot receive "
            "a merge; name a branch)"
        )
    into = Into(name, f"refs/heads/{name}")
    _clean_checkout(ws, into, integration_branch("<run>"))
    return into


def _clean_checkout(ws: Workspace, into: Into, source: str) -> Path | None:
    """Where the branch is checked out, refusing a checkout with uncommitted changes."""
    checkout = _checkout_of(ws, into.ref)
    if checkout is None:
        return None
    dirty = git(
        ["--no-optional-locks", "status", "--porcelain", "--untracked-files=no"], checkout
    ).strip()
    if dirty:
        raise UserError(
            f"--into {into.name}: it is checked out at {checkout} with uncommitted changes; "
            f"commit or stash them, then run `git -C {checkout} merge {source}`"
        )
    return checkout


def land_into(ws: Workspace, repo: pygit2.Repository, into: Into, head: str, run_id: str) -> str:
    """Bring the integration head into the branch without ever dropping uncommitted work."""
    branch, ref = into.name, into.ref
    source = integration_branch(run_id)
    checkout = _clean_checkout(ws, into, source)
    if checkout is not None:
        try:
            run_git(["merge", "--ff", "--no-edit", "-q", head], checkout)
        except CommandError as exc:
            run_git(["merge", "--abort"], checkout, check=False)
            raise UserError(
                f"--into {branch}: git merge in {checkout} failed; the results stay on {source}:\n"
                f"{exc.stderr.strip()}"
            ) from None
        return f"merged {source} into {branch} (checked out at {checkout})"
    if ref not in repo.references:
        repo.create_reference_direct(ref, pygit2.Oid(hex=head), False, f"gitexec: run {run_id}")
        return f"created {branch} at {head[:12]}"
    tip = str(repo.references[ref].target)
    if tip == head or repo.descendant_of(pygit2.Oid(hex=tip), pygit2.Oid(hex=head)):
        return f"{branch} already contains {source}"
    if repo.descendant_of(pygit2.Oid(hex=head), pygit2.Oid(hex=tip)):
        _cas(repo, ref, tip, head, f"gitexec: fast-forward to run {run_id}")
        return f"fast-forwarded {branch} to {head[:12]}"
    from gitexec.merge import merge_trees

    base = repo.merge_base(pygit2.Oid(hex=tip), pygit2.Oid(hex=head))
    if base is None:
        raise UserError(f"--into {branch}: no common history with {source}")
    commits = [
        repo[x].peel(pygit2.Commit) for x in (base, pygit2.Oid(hex=tip), pygit2.Oid(hex=head))
    ]
    result = merge_trees(repo, commits[0].tree_id, commits[1].tree_id, commits[2].tree_id)
    if not result.clean or result.tree is None:
        paths = ", ".join(c.path for c in result.conflicts[:10])
        raise UserError(f"--into {branch}: merging {source} conflicts in {paths}; merge it by hand")
    from gitexec.gitutil import committer_identity
    from gitexec.integration import Integration

    integration = Integration(repo, ref, committer_identity(ws.root), run_id)
    new = integration.commit(result.tree, [tip, head], f"Merge {source} into {branch}\n")
    _cas(repo, ref, tip, new, f"gitexec: merge run {run_id}")
    return f"merged {source} into {branch} ({new[:12]})"


def _cas(repo: pygit2.Repository, ref: str, old: str, new: str, message: str) -> None:
    reference = repo.references[ref]
    if str(reference.target) != old:
        raise UserError(f"--into: {ref} moved during the update; nothing was changed")
    reference.set_target(pygit2.Oid(hex=new), message)


# --- the command ---------------------------------------------------------------------------


def run(ws: Workspace, request: RunRequest) -> int:
    from gitexec.commands.report import report_targets
    from gitexec.dashboard import choose_reporter

    if ws.repo.shallow:
        raise UserError(SHALLOW_MESSAGE)
    repo = pygit2.Repository(str(ws.repo.common_dir))
    spec = build_spec(ws, repo, request)
    # Everything that could refuse the end of the run is checked before any agent runs.
    report_targets(ws, junit=request.junit, markdown=request.markdown)
    into = check_into(ws, request.into) if request.into else None
    _warn_uncommitted_tickets(ws, spec.base_rev)
    if request.dry_run:
        from gitexec.history import History

        history = History.load(ws.state_dir)
        return dry_run(spec, history.expected_cost(spec.tickets, spec.config.default_agent))
    if not spec.tickets:
        print(f"nothing to run: all {len(spec.skipped)} ticket(s) are completed at {spec.base_rev}")
        return EXIT_OK
    ws.require_writable(ws.run_paths(spec.run_id))
    engine = Engine(ws.repo, spec, choose_reporter(request.monitor))
    state = engine.run()
    remember(ws, state)
    print(summary(state, engine.run_dir))
    landed = True
    if into is not None and state.status in (RunStatus.COMPLETED, RunStatus.FAILED):
        try:
            print(land_into(ws, repo, into, state.head, spec.run_id))
        except UserError as exc:  # the run's own result stands; its reports are written
            print(f"gitexec: error: {exc}", file=sys.stderr)
            landed = False
    reported = publish_reports(ws, spec.run_id, junit=request.junit, markdown=request.markdown)
    return exit_code(state, engine.interrupted, reported and landed)


def remember(ws: Workspace, state: RunState) -> None:
    """Add the run's ticket facts to the run history (plans learn their estimates there)."""
    from gitexec.history import record_run

    problem = record_run(ws.state_dir, state)
    if problem is not None:
        print(f"gitexec: warning: {problem}", file=sys.stderr)


def exit_code(state: RunState, interrupted: bool, finished_cleanly: bool = True) -> int:
    """130 when interrupted; else 0 when every ticket completed and what was asked after
    the run (reports, landing) was done, 1 otherwise."""
    if state.status is RunStatus.STOPPED and interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if state.status is RunStatus.COMPLETED and finished_cleanly else EXIT_FAILED


def publish_reports(ws: Workspace, run_id: str, *, junit: str | None, markdown: str | None) -> bool:
    """Reports asked for on the command line, and GitHub's step summary, outputs and
    annotations when running in GitHub Actions. A report that cannot be written is an
    error message, never a reason to lose the run's own result: returns False then, so
    the command can still fail."""
    from gitexec.commands.report import write_reports
    from gitexec.report import github

    if not (junit or markdown or github.enabled()):
        return True
    try:
        written = write_reports(ws, run_id, junit=junit, markdown=markdown)
    except UserError as exc:
        print(f"gitexec: error: {exc}", file=sys.stderr)
        return False
    for path in (written.junit, written.markdown):
        if path is not None:
            print(f"  report:  {path}")
    return True


def _warn_uncommitted_tickets(ws: Workspace, base_rev: str) -> None:
    # --no-optional-locks: looking must not rewrite the user's index (or run its hooks).
    dirty = git(["--no-optional-locks", "status", "--porcelain", "--", ".gitexec"], ws.root)
    dirty = dirty.strip()
    if dirty:
        print(
            f"gitexec: warning: uncommitted changes in .gitexec/ are not part of this run "
            f"(tickets are read from {base_rev}); commit them to include them",
            file=sys.stderr,
        )


def summary(state: RunState, run_dir: Path) -> str:
    m = metrics(state)
    lines = [
        f"run {state.run_id} {state.status.value}: {m['completed']}/{m['total']} completed"
        + "".join(f", {m[k]} {k}" for k in ("failed", "conflict", "blocked", "cancelled") if m[k])
        + f" in {format_duration(m['wall_s'])} (parallelism {m['parallelism_factor']:g}x"
        + (f"; gates {format_duration(m['gate_s'])}" if m["gate_s"] else "")
        + ")",
        f"  integration branch: {branch_name(state.integration)} at {state.head[:12]}",
        f"  journal: {run_dir / 'journal.jsonl'}",
        f"  logs:    {run_dir / 'logs'}",
    ]
    for tid, t in sorted(state.tickets.items()):
        if t.status.terminal and t.status is not TicketState.COMPLETED:
            lines.append(f"  {t.status.value:>9}  {tid}: {t.reason}")
    if state.validation is not None:
        problems = state.validation["problems"]
        if state.validation["ok"]:
            lines.append(
                "  validation: ok (the ticket files on the branch record every outcome; "
                "the integration gates pass on the result)"
            )
        else:
            lines.append(f"  validation: {len(problems)} problem(s)")
            lines.extend(f"    - {p}" for p in problems)
    return "\n".join(lines)
