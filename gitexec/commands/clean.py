"""`git exec clean`: remove pooled worktrees, ticket result refs and old runs.

Nothing of the user's goes: an integration branch that is checked out, or whose tip is
not a commit gitexec wrote (someone committed on it), is kept and named. What cannot be
removed is named too, and makes the command fail.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import pygit2

from gitexec.errors import EXIT_FAILED, EXIT_OK, UserError
from gitexec.gitutil import run_git
from gitexec.journal import lock_holder
from gitexec.pool import remove_pools
from gitexec.refs import (
    INTEGRATION_PREFIX,
    RESULTS_PREFIX,
    integration_branch,
    integration_ref,
    results_prefix,
)
from gitexec.runstate import RUNS_DIR, RunStatus, list_runs, load_run
from gitexec.tickets import id_problem
from gitexec.workspace import Workspace
from gitexec.worktrees import force_remove

KEEP_RUNS = 10
REFLOG_PREFIX = "gitexec:"  # the engine's reflog messages


@dataclass
class _Outcome:
    failed: list[str] = field(default_factory=list)

    def say(self, line: str) -> None:
        print(line)

    def fail(self, problem: str) -> None:
        self.failed.append(problem)
        print(f"gitexec: error: could not remove {problem}", file=sys.stderr)


def clean(ws: Workspace, *, run_id: str | None, everything: bool, keep: int = KEEP_RUNS) -> int:
    """Default: the worktree pool, plus refs and directories of finished runs beyond the
    newest `keep`. `--run ID` removes that run entirely (its integration branch too);
    `--all` removes every run. Resumable runs are kept unless named or `--all`."""
    ws.require_readable(ws.state_dir / RUNS_DIR)
    holder = lock_holder(ws.state_dir)
    if holder is not None:
        raise UserError(f"a gitexec engine is running ({holder}); stop it before cleaning")
    repo = pygit2.Repository(str(ws.repo.common_dir))
    runs = list_runs(ws.state_dir)
    if run_id is not None:
        problem = id_problem(run_id)
        if problem is not None:
            raise UserError(f"--run: {problem}")
        if run_id not in runs and not _traces(ws, repo, run_id):
            raise UserError(f"no run {run_id!r}")
    out = _Outcome()
    if everything:
        targets = [*runs, *(r for r in _leftover_runs(repo) if r not in runs)]
    elif run_id is not None:
        targets = [run_id]
    else:
        targets = _old_runs(ws, runs, keep, out)
    whole = everything or run_id is not None
    ws.require_writable(_removed_paths(ws, targets, whole=whole))

    pools = remove_pools(ws.repo)
    if pools.removed:
        out.say(f"removed worktrees: {', '.join(pools.removed)}")
    for problem in pools.failed:
        out.fail(problem)

    for rid in targets:
        _remove_run(ws, repo, rid, whole=whole, out=out)
    if not targets and not pools.removed and not pools.failed:
        out.say("nothing to clean")
    return EXIT_FAILED if out.failed else EXIT_OK


def _removed_paths(ws: Workspace, targets: list[str], *, whole: bool) -> list[Path]:
    """The directories removing these runs writes in (those that exist): nothing is
    removed unless all of them can be written."""
    common = ws.repo.common_dir
    paths = [ws.state_dir / RUNS_DIR]
    for rid in targets:
        paths += [ws.state_dir / RUNS_DIR / rid, common / results_prefix(rid)]
    if whole:
        paths.append(common / INTEGRATION_PREFIX)
    return [p for p in paths if p.is_dir()] if targets else []


def _old_runs(ws: Workspace, runs: list[str], keep: int, out: _Outcome) -> list[str]:
    """Finished runs beyond the newest `keep`; says which runs stay, and why."""
    states = {r: load_run(ws.state_dir, r).status for r in runs}
    finished = [r for r in runs if states[r] in (RunStatus.COMPLETED, RunStatus.FAILED)]
    old = finished[: max(0, len(finished) - keep)]
    kept = finished[len(old) :]
    if kept:
        names = ", ".join(kept) if len(kept) <= 3 else f"{kept[0]} … {kept[-1]}"
        if old:
            what = f"the newest {keep} finished runs ({names})"
        else:
            plural = "s" if len(kept) != 1 else ""
            what = f"{len(kept)} finished run{plural} ({names}): clean keeps the newest {keep}"
        out.say(f"kept {what}; `git exec clean --all` removes them")
    for r in runs:
        if r not in finished:
            out.say(
                f"kept {states[r].value} run {r}: `git exec resume --run {r}` continues it, "
                f"`git exec clean --run {r}` removes it"
            )
    return old


def _traces(ws: Workspace, repo: pygit2.Repository, rid: str) -> bool:
    """Whether anything of run `rid` is left: its directory, branch or result refs."""
    if (ws.state_dir / RUNS_DIR / rid).exists() or integration_ref(rid) in repo.references:
        return True
    return any(name.startswith(results_prefix(rid)) for name in repo.references)


def _leftover_runs(repo: pygit2.Repository) -> list[str]:
    """Runs whose directory is gone but whose branch or result refs remain."""
    found: dict[str, None] = {}
    for name in repo.references:
        for prefix in (INTEGRATION_PREFIX, RESULTS_PREFIX):
            if name.startswith(prefix):
                rid = name[len(prefix) :].split("/", 1)[0]
                if (prefix == RESULTS_PREFIX or "/" not in name[len(prefix) :]) and not id_problem(
                    rid
                ):
                    found[rid] = None
    return sorted(found)


def _remove_run(
    ws: Workspace, repo: pygit2.Repository, rid: str, *, whole: bool, out: _Outcome
) -> None:
    for name in [n for n in repo.references if n.startswith(results_prefix(rid))]:
        repo.references.delete(name)
    kept = ""
    if whole:
        reason = _remove_branch(ws, repo, rid)
        if reason is not None:
            out.say(f"kept branch {integration_branch(rid)}: {reason}")
    else:
        kept = f" (branch {integration_branch(rid)} kept)"
    problem = force_remove(ws.state_dir / RUNS_DIR / rid)
    if problem is not None:
        out.fail(problem)
        return
    out.say(f"removed run {rid}{kept}")


def _remove_branch(ws: Workspace, repo: pygit2.Repository, rid: str) -> str | None:
    """Delete the run's integration branch unless it is someone's: None, or why it stays."""
    name = integration_ref(rid)
    if name not in repo.references:
        return None
    ref = repo.references[name]
    tip = str(ref.target)
    where = run_git(
        ["for-each-ref", "--format=%(worktreepath)", name], ws.root, check=False
    ).stdout.strip()
    if where:
        return f"checked out in {where}"
    if not _written_by_gitexec(ws, ref, rid, tip):
        return (
            f"its tip {tip[:12]} is not a commit gitexec wrote "
            f"(`git branch -D {integration_branch(rid)}` deletes it)"
        )
    # git's own check also refuses a branch being rebased or bisected somewhere.
    proc = run_git(["branch", "-D", "-q", integration_branch(rid)], ws.root, check=False)
    if proc.returncode != 0:
        return proc.stderr.strip().removeprefix("error: ") or "git refused to delete it"
    return None


def _written_by_gitexec(ws: Workspace, ref: pygit2.Reference, rid: str, tip: str) -> bool:
    """Whether the tip is a head the engine gave the branch: one its journal records, or
    one its reflog shows the engine moving the branch to."""
    if (ws.state_dir / RUNS_DIR / rid).is_dir():
        state = load_run(ws.state_dir, rid)
        heads = {state.head, state.base, *(t.merge_commit for t in state.tickets.values())}
        if tip in heads:
            return True
    return any(
        str(entry.oid_new) == tip and (entry.message or "").startswith(REFLOG_PREFIX)
        for entry in ref.log()
    )
