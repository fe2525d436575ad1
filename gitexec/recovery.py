"""Picking up after a dead engine: what the refs say was merged, orphans, state checks."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from gitexec.errors import CommandError
from gitexec.gitutil import RepoPaths, git
from gitexec.integration import Integration
from gitexec.journal import JOURNAL
from gitexec.pool import SLOT_PREFIX, force_remove, forget_worktrees, pool_dirs
from gitexec.runstate import RUNS_DIR, RunState
from gitexec.tickets import TicketState


def remove_stale_ref_locks(common_dir: Path, run_id: str) -> list[str]:
    """Lock files a killed engine left on this run's refs (it held the engine lock, so no
    one else was writing them)."""
    removed: list[str] = []
    candidates = [common_dir / "refs" / "heads" / "gitexec" / f"{run_id}.lock"]
    results = common_dir / "refs" / "gitexec" / run_id
    if results.is_dir():
        candidates.extend(results.glob("*.lock"))
    for lock in candidates:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
            removed.append(str(lock.relative_to(common_dir)))
    return removed


def merged_on_branch(integration: Integration) -> dict[str, str]:
    """Ticket id -> merge commit, for every ticket merge on the branch's first-parent chain."""
    return {tid: commit for commit, tid in integration.first_parent_tickets()}


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
    on_branch = merged_on_branch(integration)
    for tid, ts in sorted(state.tickets.items()):
        if ts.status is TicketState.COMPLETED and tid not in on_branch:
            report.problems.append(
                f"{tid} is completed in the journal but has no merge on {integration.ref}"
            )
        if tid in on_branch and ts.status is not TicketState.COMPLETED:
            report.repaired.append(f"{tid} was merged before the crash; recorded as completed")
    journal_head = state.head
    if journal_head and journal_head != integration.head:
        known = set(on_branch.values())
        if integration.head not in known and journal_head not in known:
            report.problems.append(
                f"{integration.ref} is at {integration.head[:12]}, the journal says "
                f"{journal_head[:12]}: moved by someone else?"
            )
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
