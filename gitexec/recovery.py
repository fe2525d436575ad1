"""Picking up after a dead engine: where the branch really is, what was merged, orphans,
and the checks of `resume --validate-state`."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gitexec import events as ev
from gitexec.errors import CommandError, UserError
from gitexec.gitutil import RepoPaths, git, run_git
from gitexec.integration import Integration
from gitexec.journal import JOURNAL
from gitexec.merge_queue import MergeQueue, Verdict
from gitexec.pool import WORKTREES
from gitexec.refs import integration_ref, results_prefix
from gitexec.runstate import RUNS_DIR, RunState
from gitexec.scheduler import Phase, Scheduler
from gitexec.tickets import TicketState


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
    jobs: int,
) -> list[Verdict]:
    """Continue a crashed or stopped run from its replayed journal and the refs.

    Merged tickets stay merged exactly once; orphaned agents of the dead engine are
    killed; merges still waiting for their gate are gated again before anything counts
    them; interrupted tickets start over. Results that were ready to merge are merged as
    they are (agent time is not redone): their verdicts are returned.
    """
    remove_stale_ref_locks(common_dir, state.run_id)
    head = reconcile_head(state, integration)
    merges.head = head
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
    killed = kill_orphans(state, state.run_id)
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
    scheduler.restore(state.tickets)
    merges.restore()
    verdicts: list[Verdict] = []
    for tid in reuse:
        ts = state.tickets[tid]
        if scheduler[tid].phase is Phase.MERGING and ts.commit and ts.base:
            verdicts.extend(merges.submit(tid, ts.base, ts.commit))
    return verdicts


def reconcile_head(state: RunState, integration: Integration) -> str:
    """The head to continue from: where the journal says the engine left the branch.

    A crash between journaling a move and making it is finished here; a branch someone
    else moved is refused, never merged onto.
    """
    journaled = state.head or state.base
    current = integration.current()
    if current is None:  # the engine died before creating it
        integration.create(journaled)
        return journaled
    if current == journaled:
        return journaled
    if integration.own_merges_between(current, journaled):
        return current  # merges made before their journal line (older versions)
    if current != state.head_before or journaled not in integration.repo:
        raise UserError(
            f"{integration.ref} is at {current[:12]}, but run {state.run_id} left it at "
            f"{journaled[:12]}: it was moved by someone else; nothing was changed "
            "(see `git reflog` of the branch)"
        )
    integration.move(current, journaled, "resume: finish a move the crash cut off")
    return journaled


def merged_on_branch(integration: Integration, head: str | None = None) -> dict[str, str]:
    """Ticket id -> merge commit, for every ticket merge on the first-parent chain of `head`
    (the branch's tip by default)."""
    return {tid: commit for commit, tid in integration.first_parent_tickets(head=head)}


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may contain spaces, so split after ')'.
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 2 and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def _belongs_to(pid: int, run_id: str) -> bool:
    """Is `pid` an agent process of this run? (pids are reused; the environment tells.)"""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"GITEXEC_RUN={run_id}".encode() in environ


def kill_orphans(state: RunState, run_id: str, grace_s: float = 2.0) -> list[int]:
    """Terminate the process groups of agents the dead engine left running."""
    if not os.path.isdir("/proc"):
        return []
    groups = [
        t.pgid for t in state.tickets.values() if t.pgid is not None and not t.status.terminal
    ]
    killed: list[int] = []
    for pgid in groups:
        members = [p for p in _group_members(pgid) if _belongs_to(p, run_id)]
        if not members:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and _group_members(pgid):
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        killed.append(pgid)
    return killed


@dataclass
class StateReport:
    """What `resume --validate-state` found, and what it repaired."""

    problems: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def validate_state(repo: RepoPaths, integration: Integration, state: RunState) -> StateReport:
    """Check journal <-> refs <-> worktrees, repairing what is safe to repair."""
    report = StateReport()
    for lock in remove_stale_ref_locks(repo.common_dir, state.run_id):
        report.repaired.append(f"removed {lock}, left behind by the crash")
    journal = repo.state_dir / RUNS_DIR / state.run_id / JOURNAL
    data = journal.read_bytes() if journal.is_file() else b""
    if data and not data.endswith(b"\n"):
        report.repaired.append("the journal's last line was torn by the crash; it is skipped")
    if not integration.exists():
        merged = [t for t, ts in state.tickets.items() if ts.status is TicketState.COMPLETED]
        if merged:
            report.problems.append(
                f"{integration.ref} is missing but {len(merged)} ticket(s) were merged into it"
            )
        else:
            report.repaired.append(f"{integration.ref} was never created; resume creates it")
        return report
    current, journal_head = integration.head, state.head
    if journal_head and current != journal_head:
        if current == state.head_before and journal_head in integration.repo:
            report.repaired.append(
                f"the crash cut off moving {integration.ref} to {journal_head[:12]}; "
                "resume finishes the move"
            )
            current = journal_head
        elif not integration.own_merges_between(current, journal_head):
            report.problems.append(
                f"{integration.ref} is at {current[:12]}, the journal says "
                f"{journal_head[:12]}: moved by someone else?"
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
    repaired: list[str] = []
    base = repo.state_dir / WORKTREES
    if not base.is_dir():
        return repaired
    for slot in sorted(p for p in base.iterdir() if p.is_dir() and p.name.startswith("slot-")):
        if not (slot / ".git").is_file():
            import shutil

            shutil.rmtree(slot, ignore_errors=True)
            repaired.append(f"{slot.name} was not a valid worktree; removed (recreated on use)")
            continue
        try:
            gitdir = git(["rev-parse", "--git-dir"], slot).strip()
        except CommandError:
            import shutil

            shutil.rmtree(slot, ignore_errors=True)
            repaired.append(f"{slot.name} was broken; removed (recreated on use)")
            continue
        for name in ("index.lock", "HEAD.lock", "ORIG_HEAD.lock"):
            lock = slot / gitdir / name
            if lock.exists():
                lock.unlink()
                repaired.append(f"{slot.name}: removed a stale {name}")
    run_git(["worktree", "prune"], repo.root)
    return repaired
