"""`pause`, `resume`, `stop`, `adjust`, `retry`, `reassign`, `fallback-sequential`
(`enqueue` and `cancel` are in replan.py).

Each sends one request to the live engine of a run (see gitexec/control.py) and prints its
answer; `resume` of a run whose engine is gone restarts it from the journal instead.
"""

from __future__ import annotations

import time
from typing import Any

from gitexec import control
from gitexec.errors import EXIT_OK, UserError
from gitexec.journal import lock_holder
from gitexec.runstate import RUNS_DIR, RunState, list_runs, load_run
from gitexec.tickets import TicketState
from gitexec.workspace import Workspace


def live_run(ws: Workspace, run_id: str | None) -> str:
    """The run whose engine is alive (and matches `run_id` when given)."""
    holder = lock_holder(ws.state_dir)
    live = holder[4:].split(",", 1)[0] if holder and holder.startswith("run ") else None
    if live is None:
        which = f"run {run_id} has" if run_id else "there is"
        raise UserError(f"{which} no live engine in this repository (see `git exec status`)")
    if run_id is not None and run_id != live:
        raise UserError(f"run {run_id} has no live engine (the live run is {live})")
    return live


def send(ws: Workspace, run_id: str | None, action: str, **args: Any) -> control.Response:
    rid = live_run(ws, run_id)
    response = control.send(ws.state_dir / RUNS_DIR / rid, action, **args)
    if not response.ok:
        raise UserError(response.message)
    print(f"run {rid}: {response.message}")
    return response


def pause(ws: Workspace, *, run_id: str | None, wait: bool) -> int:
    response = send(ws, run_id, "pause")
    if wait and response.data.get("running"):
        rid = live_run(ws, run_id)
        print(f"waiting for {', '.join(response.data['running'])} to finish ...")
        while True:
            state = load_run(ws.state_dir, rid)
            if not any(
                t.status.value in ("running", "validating", "merging")
                for t in state.tickets.values()
            ):
                break
            time.sleep(0.1)
        print("no ticket is running")
    return EXIT_OK


def stop(ws: Workspace, *, run_id: str | None, force: bool, preserve_state: bool) -> int:
    send(ws, run_id, "stop", force=force, preserve_state=preserve_state)
    return EXIT_OK


def adjust(
    ws: Workspace,
    *,
    run_id: str | None,
    jobs: int | None,
    delta: int,
    priorities: dict[str, int],
    quotas: dict[str, int] | None = None,
    resources: dict[str, float] | None = None,
    agents: dict[str, int] | None = None,
) -> int:
    if jobs is None and not delta and not (priorities or quotas or resources or agents):
        raise UserError(
            "nothing to adjust: give --jobs N, --increase-parallelism, "
            "--decrease-parallelism, --priority ID=N, --quota POOL=N, --resource NAME=N "
            "or --agent NAME=N"
        )
    send(
        ws,
        run_id,
        "adjust",
        jobs=jobs,
        delta=delta,
        priority=priorities,
        quota=quotas or {},
        resource=resources or {},
        agent=agents or {},
    )
    return EXIT_OK


def retry(ws: Workspace, *, run_id: str | None, ticket: str, keep_worktree: bool = False) -> int:
    send(ws, run_id, "retry", ticket=ticket, keep_worktree=keep_worktree)
    return EXIT_OK


def reassign(ws: Workspace, *, run_id: str | None, ticket: str, agent: str) -> int:
    send(ws, run_id, "reassign", ticket=ticket, agent=agent)
    return EXIT_OK


def fallback_sequential(ws: Workspace, *, run_id: str | None, group: int) -> int:
    send(ws, run_id, "fallback-sequential", group=group)
    return EXIT_OK


def resume(
    ws: Workspace,
    *,
    run_id: str | None,
    validate_state: bool,
    monitor: bool | None,
    junit: str | None = None,
    markdown: str | None = None,
    onto: str | None = None,
    budget_usd: float | None = None,
) -> int:
    """Resume a paused live run, or restart a crashed or stopped one from its journal."""
    holder = lock_holder(ws.state_dir)
    if holder is not None:
        send(ws, run_id, "resume")
        return EXIT_OK
    rid = run_id or _resumable(ws)
    from gitexec.commands.run import resume_run

    return resume_run(
        ws,
        rid,
        validate_state=validate_state,
        monitor=monitor,
        junit=junit,
        markdown=markdown,
        onto=onto,
        budget_usd=budget_usd,
    )


RESUME_UNASKED_S = 86400.0  # older runs are only resumed when named with --run


def _resumable(ws: Workspace) -> str:
    """The run `resume` continues when none is named: the newest run, if it can be
    resumed and is less than a day old. Anything else is asked for with --run."""
    from gitexec.commands.run import resumable, run_age

    runs = list_runs(ws.state_dir)
    states = {rid: load_run(ws.state_dir, rid) for rid in runs}
    candidates = [rid for rid in reversed(runs) if resumable(states[rid])]
    if not candidates:
        raise UserError("no run to resume: none crashed or was stopped with work left")
    now = time.time()
    picked = states[candidates[0]]
    newest = states[runs[-1]]
    why = None
    if picked is not newest:
        why = (
            f"the newest run is {newest.run_id} ({newest.status.value}, started "
            f"{run_age(newest, now)} ago)"
        )
    elif not picked.started_at or now - picked.started_at > RESUME_UNASKED_S:
        why = f"run {picked.run_id} was started {run_age(picked, now)} ago"
    if why is None:
        return picked.run_id
    listing = "\n".join(
        f"  {rid}  {states[rid].status.value}, started {run_age(states[rid], now)} ago, "
        f"{_done(states[rid])} of {len(states[rid].tickets)} ticket(s) completed"
        for rid in candidates[:10]
    )
    raise UserError(
        f"{why}: say which run to resume with `git exec resume --run ID`; runs that can be "
        f"resumed:\n{listing}"
    )


def _done(state: RunState) -> int:
    return sum(1 for t in state.tickets.values() if t.status is TicketState.COMPLETED)
