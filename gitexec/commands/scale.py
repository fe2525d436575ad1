"""Scale-out over CI runners: `matrix`, `run-ticket`, `collect`, `workflow`.

A plan's groups become waves. Each wave's tickets run as a GitHub Actions matrix, one
ticket per job (`run-ticket`: a git bundle of the result plus a result file); a collect
job merges the wave's results in plan order, with merge rules, gates and status
write-back, into the run's integration branch, and passes that branch on (a bundle and
the journal) so the next wave starts from its head.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pygit2

from gitexec.errors import EXIT_FAILED, EXIT_OK, UserError
from gitexec.gitutil import git, run_git
from gitexec.journal import JOURNAL
from gitexec.plan import PLAN_FILE, Plan, check_plan_against, load_plan, make_plan
from gitexec.refs import integration_ref, ticket_ref
from gitexec.runstate import RUNS_DIR, RunStatus, load_run
from gitexec.tickets import TicketState, id_problem
from gitexec.workspace import Workspace

RESULT_VERSION = 1
STATE_MARKER = "gitexec-state.json"
INTEGRATION_BUNDLE = "integration.bundle"


# --- matrix --------------------------------------------------------------------------------


def wave_plan(ws: Workspace) -> tuple[Plan, set[str]]:
    """The plan whose groups are the waves (the committed one when it is fresh), and the
    tickets already completed (they are left out of every wave)."""
    project = ws.load(check_plan=False)
    project.require_valid()
    config = ws.settings(project.config)
    plan: Plan | None = None
    path = ws.root / PLAN_FILE
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        plan, findings = load_plan(PLAN_FILE, text)
        if plan is not None:
            findings += check_plan_against(
                PLAN_FILE, text, plan, project.tickets, config.default_estimate_s
            )
        if findings:
            raise UserError("the committed plan cannot be used:\n" + "\n".join(map(str, findings)))
    if plan is None:
        plan = make_plan(project.tickets, config.strategy, config.jobs, config.default_estimate_s)
    done = {t.id for t in project.tickets if t.status is TicketState.COMPLETED}
    return plan, done


def matrix(ws: Workspace, *, wave: int | None, count: bool) -> int:
    """Print a wave as a GitHub Actions matrix: {"include": [{"ticket": "A"}, ...]}."""
    plan, done = wave_plan(ws)
    if count:
        print(len(plan.groups))
        return EXIT_OK
    if wave is None or not 1 <= wave <= len(plan.groups):
        raise UserError(f"--wave must be between 1 and {len(plan.groups)}")
    tickets = [t for t in plan.groups[wave - 1].tickets if t not in done]
    print(json.dumps({"include": [{"ticket": t} for t in tickets]}))
    return EXIT_OK


# --- run-ticket ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ResultFile:
    """`<ID>.json` next to `<ID>.bundle`: what a runner did with one ticket."""

    data: dict[str, Any]
    bundle: Path | None

    @classmethod
    def read(cls, path: Path) -> ResultFile:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"{path}: not a gitexec result file ({exc})") from None
        if not isinstance(data, dict) or data.get("gitexec_result") != RESULT_VERSION:
            raise UserError(f"{path}: not a gitexec result file (version {RESULT_VERSION})")
        problem = id_problem(str(data.get("ticket", "")))
        if problem:
            raise UserError(f"{path}: {problem}")
        bundle = path.with_suffix(".bundle")
        return cls(data, bundle if bundle.is_file() else None)


def run_ticket(
    ws: Workspace,
    ticket_id: str,
    *,
    base: str | None,
    out: str,
    run_id: str | None,
    state: str | None = None,
) -> int:
    """Run one ticket in this checkout and write `<out>/<ID>.json|.bundle|.log`.

    With `--state DIR` (what the previous wave's collect exported) the ticket starts from
    that run's integration branch, where its dependencies are merged.
    """
    from gitexec.commands.run import RunRequest, build_spec, load_at, resolve_base
    from gitexec.dashboard import PlainReporter
    from gitexec.engine import Engine

    problem = id_problem(ticket_id)
    if problem:
        raise UserError(problem)
    repo = pygit2.Repository(str(ws.repo.common_dir))
    if state is not None:
        marker = _marker(ws.cwd / state)
        run_id = run_id or str(marker["run"])
        head = _fetch_integration(ws, ws.cwd / state, str(marker["run"]))
        base = base or head
    base_commit, base_rev = resolve_base(ws, repo, base)
    project = load_at(ws, repo, base_commit)
    ticket = project.ticket(ticket_id)
    out_dir = ws.cwd / out
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "gitexec_result": RESULT_VERSION,
        "run": run_id,
        "ticket": ticket_id,
        "base": base_commit,
        "commit": None,
        "agent": ticket.agent or project.config.default_agent,
        "attempts": 0,
        "duration_s": 0.0,
        "reason": None,
    }
    by_id = {t.id: t for t in project.tickets}
    waiting = [d for d in ticket.depends_on if by_id[d].status is not TicketState.COMPLETED]
    if ticket.status is TicketState.COMPLETED:
        result.update(status="completed", commit=base_commit, reason="completed already")
    elif waiting:
        result.update(
            status="blocked",
            reason=f"not completed at {base_rev}: {', '.join(waiting)}",
        )
    else:
        local_id = f"{run_id or 'ticket'}-{ticket_id}"[:64].rstrip(".")
        request = RunRequest(base=base_commit, run_id=local_id, only=(ticket_id,), monitor=False)
        spec = build_spec(ws, repo, request)
        engine = Engine(ws.repo, spec, PlainReporter(sys.stderr))
        ts = engine.run().tickets[ticket_id]
        result.update(
            status=ts.status.value,
            commit=ts.commit if ts.status is TicketState.COMPLETED else None,
            agent=ts.agent,
            attempts=ts.attempts,
            duration_s=round(ts.agent_s, 3),
            reason=ts.reason,
        )
        log = engine.run_dir / "logs" / f"{ticket_id}.log"
        if log.is_file():
            shutil.copyfile(log, out_dir / f"{ticket_id}.log")
        commit = result["commit"]
        if commit and commit != base_commit:
            ref = ticket_ref(local_id, ticket_id)
            run_git(
                [
                    "bundle",
                    "create",
                    "-q",
                    str(out_dir / f"{ticket_id}.bundle"),
                    ref,
                    f"^{base_commit}",
                ],
                ws.root,
            )
    (out_dir / f"{ticket_id}.json").write_text(
        json.dumps(result, indent=2) + "\n", encoding="utf-8"
    )
    print(
        f"{ticket_id}: {result['status']}" + (f" ({result['reason']})" if result["reason"] else "")
    )
    return EXIT_OK if result["status"] in ("completed", "blocked") else EXIT_FAILED


# --- collect -------------------------------------------------------------------------------


def collect(
    ws: Workspace,
    dirs: list[str],
    *,
    run_id: str,
    base: str | None,
    out: str | None,
    junit: str | None,
    markdown: str | None,
    keep_going: bool = False,
) -> int:
    """Merge results from `run-ticket` into the run's integration branch, in plan order.

    Exit 1 when a ticket failed, conflicted or was blocked, unless `keep_going` (a wave
    in the middle of a workflow: later waves still run what they can)."""
    from gitexec.collect import RemoteResult
    from gitexec.collect import collect as collect_results
    from gitexec.commands.run import RunRequest, build_spec, publish_reports, remember, summary
    from gitexec.dashboard import PlainReporter
    from gitexec.engine import Engine

    problem = id_problem(run_id, "run id")
    if problem:
        raise UserError(f"--run-id: {problem}")
    repo = pygit2.Repository(str(ws.repo.common_dir))
    run_dir = ws.state_dir / RUNS_DIR / run_id
    results: list[ResultFile] = []
    for name in dirs:
        directory = ws.cwd / name
        if not directory.is_dir():
            raise UserError(f"{name}: no such directory")
        if (directory / STATE_MARKER).is_file():
            _import_state(ws, directory, run_id, run_dir)
        results.extend(
            ResultFile.read(p) for p in sorted(directory.glob("*.json")) if p.name != STATE_MARKER
        )

    journal = run_dir / JOURNAL
    state = load_run(ws.state_dir, run_id) if journal.is_file() else None
    if state is not None and state.tickets:
        spec_base = state.base
    else:
        state = None
        bases = {str(r.data["base"]) for r in results}
        if base is None and len(bases) != 1:
            raise UserError(
                "the first collect of a run needs --base REV (results start from "
                + (", ".join(sorted(b[:12] for b in bases)) or "nothing")
                + ")"
            )
        spec_base = base or bases.pop()
    spec = build_spec(ws, repo, RunRequest(base=spec_base, run_id=run_id, monitor=False))
    remote: list[RemoteResult] = []
    for r in results:
        commit = r.data.get("commit")
        if r.bundle is not None and commit:
            ref = ticket_ref(run_id, str(r.data["ticket"]))
            heads = git(["bundle", "list-heads", str(r.bundle)], ws.root).split()
            run_git(["fetch", "-q", str(r.bundle), f"+{heads[1]}:{ref}"], ws.root)
        remote.append(
            RemoteResult(
                ticket=str(r.data["ticket"]),
                status=TicketState(str(r.data.get("status", "failed"))),
                base=str(r.data["base"]),
                commit=str(commit) if commit else None,
                attempts=int(r.data.get("attempts") or 1),
                agent=r.data.get("agent"),
                duration_s=float(r.data.get("duration_s") or 0.0),
                reason=r.data.get("reason"),
            )
        )
    engine = Engine(ws.repo, spec, PlainReporter(sys.stderr), resume=state, offline=True)
    final = collect_results(engine, remote)
    remember(ws, final)
    print(summary(final, engine.run_dir))
    if out is not None:
        _export_state(ws, ws.cwd / out, run_id, final.base)
    reported = publish_reports(ws, run_id, junit=junit, markdown=markdown)
    failed = [
        t for t, ts in final.tickets.items() if ts.status.terminal and not ts.status.succeeded
    ]
    if final.status is RunStatus.STOPPED:
        left = [t for t, ts in final.tickets.items() if not ts.status.terminal]
        print(f"  waiting for: {', '.join(left)}")
    return EXIT_FAILED if (failed and not keep_going) or not reported else EXIT_OK


def _export_state(ws: Workspace, directory: Path, run_id: str, base: str) -> None:
    """The integration branch (a bundle) and the journal, for the next wave's collect."""
    directory.mkdir(parents=True, exist_ok=True)
    ref = integration_ref(run_id)
    head = git(["rev-parse", ref], ws.root).strip()
    bundle = directory / INTEGRATION_BUNDLE
    if head != base:
        run_git(["bundle", "create", "-q", str(bundle), ref, f"^{base}"], ws.root)
    shutil.copyfile(ws.state_dir / RUNS_DIR / run_id / JOURNAL, directory / JOURNAL)
    (directory / STATE_MARKER).write_text(
        json.dumps({"run": run_id, "base": base, "head": head}, indent=2) + "\n", encoding="utf-8"
    )
    print(f"  state for the next wave: {directory}")


def _marker(directory: Path) -> dict[str, Any]:
    try:
        marker = json.loads((directory / STATE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(
            f"{directory}: not a state exported by `git exec collect --out` ({exc})"
        ) from None
    if not isinstance(marker, dict) or id_problem(str(marker.get("run", ""))):
        raise UserError(f"{directory}/{STATE_MARKER}: malformed")
    return marker


def _fetch_integration(ws: Workspace, directory: Path, run_id: str) -> str:
    """Bring the exported integration branch into this repository; return its head."""
    marker = _marker(directory)
    ref = integration_ref(run_id)
    bundle = directory / INTEGRATION_BUNDLE
    if bundle.is_file():
        run_git(["fetch", "-q", str(bundle), f"+{ref}:{ref}"], ws.root)
    else:
        run_git(["update-ref", ref, str(marker["base"])], ws.root)
    return git(["rev-parse", ref], ws.root).strip()


def _import_state(ws: Workspace, directory: Path, run_id: str, run_dir: Path) -> None:
    marker = _marker(directory)
    if marker.get("run") != run_id:
        raise UserError(f"{directory}: state of run {marker.get('run')!r}, not {run_id!r}")
    _fetch_integration(ws, directory, run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    local = run_dir / JOURNAL
    if not local.is_file() or local.stat().st_size < (directory / JOURNAL).stat().st_size:
        shutil.copyfile(directory / JOURNAL, local)


# --- workflow ------------------------------------------------------------------------------


def workflow(ws: Workspace, *, output: str | None, install: str, runs_on: str) -> int:
    """Write a GitHub Actions workflow running the plan wave by wave (templates/workflow.yml.j2)."""
    from gitexec.commands.plan import write_atomic
    from gitexec.templating import render

    if not runs_on.replace("-", "").replace(".", "").isalnum():
        raise UserError(f"--runs-on: not a runner label: {runs_on!r}")
    plan, _ = wave_plan(ws)
    text = render(
        "workflow.yml.j2",
        waves=list(range(1, len(plan.groups) + 1)),
        install=install,
        runs_on=runs_on,
    )
    if output is None or output == "-":
        sys.stdout.write(text)
    else:
        write_atomic(ws.cwd / output, text)
        print(f"wrote {output}: {len(plan.groups)} wave(s)", file=sys.stderr)
    return EXIT_OK
