"""Picking up after a dead engine: where the branch really is, what was merged, orphans,
and the checks of `resume --validate-state`."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pygit2

from gitexec import events as ev
from gitexec import process, replan
from gitexec.errors import CommandError, UserError
from gitexec.gitutil import RepoPaths, git
from gitexec.integration import Integration
from gitexec.journal import JOURNAL
from gitexec.merge_queue import MergeQueue
from gitexec.pool import pool_dirs
from gitexec.refs import displaced_ref, integration_ref, results_prefix
from gitexec.runstate import RUNS_DIR, RunState
from gitexec.scheduler import Scheduler
from gitexec.slot import SLOT_PREFIX
from gitexec.tickets import TicketState
from gitexec.worktrees import force_remove, forget_worktrees


def remove_stale_ref_locks(common_dir: Path, run_id: str) -> list[str]:
    """Lock files a killed engine left on this run's refs (it held the engine lock, so no
    one else was writing them)."""
    removed: list[str] = []
    candidates = [common_dir / f"{integration_ref(run_id)}.lock"]
    results = common_dir / results_prefix(run_id)
    if results.is_dir():
        candidates.extend(results.glob("*.lock"))
    for lock in candidates:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
            removed.append(str(lock.relative_to(common_dir)))
    return removed


def take_over(
    state: RunState,
    integration: Integration,
    scheduler: Scheduler,
    merges: MergeQueue,
    emit: Callable[[ev.Event], object],
    *,
    common_dir: Path,
    worktrees: Path,
    jobs: int,
    onto: str | None = None,
) -> None:
    """Continue a crashed or stopped run from its replayed journal and the refs.

    Merged tickets stay merged exactly once; orphaned agents of the dead engine are
    killed; merges still waiting for their gate are gated again before anything counts
    them; interrupted tickets start over; results that were ready to merge are merged as
    they are once their dependencies have (agent time is not redone).
    """
    remove_stale_ref_locks(common_dir, state.run_id)
    head = reconcile_head(state, integration, onto)
    merges.head = merges.published = head
    if head != (state.head or state.base):  # continuing from a branch someone else moved
        on_branch = merged_on_branch(integration, head)
        for tid, run in sorted(state.tickets.items()):
            merged = run.status is TicketState.COMPLETED or run.awaiting_gate
            if merged and tid not in on_branch:
                emit(
                    ev.TicketRequeued(
                        ticket=tid,
                        reason="missing from the moved branch: merged again from its result",
                        keep_result=True,
                    )
                )
    gated = bool(merges.config.gates.integration)
    for tid, commit in merged_on_branch(integration, head).items():
        ts = state.tickets.get(tid)
        if ts is not None and ts.status is not TicketState.COMPLETED and not ts.awaiting_gate:
            # Merged by an older version that moved the ref before journaling it.
            emit(
                ev.TicketMerged(
                    ticket=tid, head=commit, commit=ts.commit, recovered=True, awaiting_gate=gated
                )
            )
    killed = kill_orphans(state.run_id, worktrees)
    reset = [
        tid
        for tid, ts in sorted(state.tickets.items())
        if not ts.status.terminal and not ts.awaiting_gate
    ]
    reuse = [tid for tid in reset if state.tickets[tid].result_ready]
    emit(
        ev.RunResumed(
            pid=os.getpid(),
            jobs=jobs,
            head=head,
            reset=tuple(reset),
            reuse=tuple(reuse),
            killed=tuple(killed),
        )
    )
    replan.restore(scheduler, state.tickets)
    replan.limits(scheduler, resources=state.resources, agents=state.agent_limits)
    for name, limit in state.quota_limits.items():  # `adjust --quota` outlives the crash
        scheduler.quotas.set_max_parallel(name, limit)
    now, wall = time.monotonic(), time.time()
    for name, q in state.quotas.items():  # a pause still in force is honoured
        remaining = None if q.until is None else q.until - wall
        scheduler.quotas.restore(name, q.state, remaining, now)
    merges.restore()


def reconcile_head(state: RunState, integration: Integration, onto: str | None = None) -> str:
    """The head to continue from: where the journal says the engine left the branch.

    A crash between journaling a move and making it is finished here. A branch someone
    else moved is refused, never merged onto, unless `onto` says how: "journal" puts the
    branch back (keeping what it pointed at under refs/gitexec-displaced/), "current"
    continues from it.
    """
    journaled = state.head or state.base
    current = integration.current()
    if current is None:  # never created, or deleted by someone: the journal knows the head
        integration.create(journaled)
        return journaled
    if current == journaled:
        return journaled
    if integration.own_merges_between(current, journaled):
        return current  # merges made before their journal line (older versions)
    if cut_off(state, integration, current) and journaled in integration.repo:
        integration.move(current, journaled, "resume: finish a move the crash cut off")
        return journaled
    if onto == "current":
        return current
    if onto == "journal":
        kept = _keep_displaced(integration, state.run_id, current)
        integration.move(current, journaled, f"resume: put back where run {state.run_id} left it")
        print(f"gitexec: {integration.ref} was at {current[:12]}; that commit is kept as {kept}")
        return journaled
    raise UserError(
        f"{integration.ref} is at {current[:12]}, but run {state.run_id} left it at "
        f"{journaled[:12]}: someone else moved it; nothing was changed. Resume with "
        "`--onto journal` to put it back (what it points at now is kept under "
        "refs/gitexec-displaced/), or `--onto current` to continue from it (tickets missing "
        "from it merge again from their kept results)"
    )


def cut_off(state: RunState, integration: Integration, current: str) -> bool:
    """The branch is where the engine left it, behind moves its journal made: at a head the
    journal named earlier, put there by gitexec or left there by its move to the journal's
    head that the crash cut short (as its reflog says; without one, only the start of the
    last move counts). Someone who moved it back there is not mistaken for it."""
    if current not in state.earlier_heads:
        return False
    by_gitexec = integration.moved_here_by_gitexec(current, towards=state.head)
    return by_gitexec if by_gitexec is not None else current == state.head_before


def _keep_displaced(integration: Integration, run_id: str, commit: str) -> str:
    refs = integration.repo.references
    n = 1
    while displaced_ref(run_id, n) in refs:
        n += 1
    name = displaced_ref(run_id, n)
    refs.create(name, pygit2.Oid(hex=commit))
    return name


def merged_on_branch(integration: Integration, head: str | None = None) -> dict[str, str]:
    """Ticket id -> merge commit, for every ticket merge on the first-parent chain of `head`
    (the branch's tip by default)."""
    return {tid: commit for commit, tid in integration.first_parent_tickets(head=head)}


def kill_orphans(run_id: str, worktrees: Path, grace_s: float = 2.0) -> list[int]:
    """Terminate what a dead engine of this run left running: agents, validation and gate
    commands, and whatever they started (their environment names the run and a worktree
    of this repository's pool)."""
    return process.kill_run(run_id, grace_s, within=worktrees)


@dataclass
class StateReport:
    """What `resume --validate-state` found, and what it repaired."""

    problems: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def validate_state(
    repo: RepoPaths, integration: Integration, state: RunState, *, onto: str | None = None
) -> StateReport:
    """Check journal <-> refs <-> worktrees, repairing what is safe to repair."""
    report = StateReport()
    for lock in remove_stale_ref_locks(repo.common_dir, state.run_id):
        report.repaired.append(f"removed {lock}, left behind by the crash")
    journal = repo.state_dir / RUNS_DIR / state.run_id / JOURNAL
    data = journal.read_bytes() if journal.is_file() else b""
    if data and not data.endswith(b"\n"):
        report.repaired.append("the journal's last line was torn by the crash; it is skipped")
    if not integration.exists():
        head = state.head or state.base
        if head in integration.repo:
            report.repaired.append(
                f"{integration.ref} is missing; resume creates it at {head[:12]}"
            )
        else:
            report.problems.append(f"{integration.ref} is missing and {head[:12]} is not known")
        return report
    current, journal_head = integration.head, state.head
    if journal_head and current != journal_head:
        if cut_off(state, integration, current) and journal_head in integration.repo:
            report.repaired.append(
                f"the crash cut off moving {integration.ref} to {journal_head[:12]}; "
                "resume finishes the move"
            )
            current = journal_head
        elif onto == "journal":
            report.repaired.append(
                f"{integration.ref} was moved by someone else; resume puts it back at "
                f"{journal_head[:12]}"
            )
            current = journal_head
        elif onto == "current":
            report.repaired.append(
                f"{integration.ref} was moved by someone else; resume continues from "
                f"{current[:12]} and merges again what it lacks"
            )
            current = journal_head  # what the journal says was merged is still there
        elif not integration.own_merges_between(current, journal_head):
            report.problems.append(
                f"{integration.ref} is at {current[:12]}, the journal says "
                f"{journal_head[:12]}: moved by someone else (resume --onto journal|current)"
            )
    on_branch = merged_on_branch(integration, current)
    for tid, ts in sorted(state.tickets.items()):
        if ts.status is TicketState.COMPLETED and tid not in on_branch:
            report.problems.append(
                f"{tid} is completed in the journal but has no merge on {integration.ref}"
            )
        if tid in on_branch and ts.status is not TicketState.COMPLETED and not ts.awaiting_gate:
            report.repaired.append(f"{tid} was merged before the crash; recorded as completed")
    report.repaired.extend(_check_worktrees(repo))
    return report


def _check_worktrees(repo: RepoPaths) -> list[str]:
    """Pooled worktrees (wherever the pool is) that a crash left unusable are removed (they
    are recreated on use); stale git locks in them are removed."""
    repaired: list[str] = []
    for root in pool_dirs(repo):
        for slot in sorted(
            p for p in root.iterdir() if p.is_dir() and p.name.startswith(SLOT_PREFIX)
        ):
            gitdir = None
            if (slot / ".git").is_file():
                with contextlib.suppress(CommandError):
                    gitdir = git(["rev-parse", "--absolute-git-dir"], slot).strip()
            if gitdir is None:
                why = "was broken" if (slot / ".git").is_file() else "was not a valid worktree"
                problem = force_remove(slot)
                forget_worktrees(repo.common_dir, [slot])
                if problem is None:
                    repaired.append(f"{slot.name} {why}; removed (recreated on use)")
                continue
            for name in ("index.lock", "HEAD.lock", "ORIG_HEAD.lock"):
                lock = Path(gitdir) / name
                if lock.exists():
                    lock.unlink()
                    repaired.append(f"{slot.name}: removed a stale {name}")
    return repaired
