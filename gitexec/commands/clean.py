"""`git exec clean`: remove pooled worktrees, ticket result refs and old runs."""

from __future__ import annotations

import shutil

import pygit2

from gitexec.errors import EXIT_OK, UserError
from gitexec.journal import lock_holder
from gitexec.pool import remove_pools
from gitexec.runstate import RUNS_DIR, RunStatus, list_runs, load_run
from gitexec.workspace import Workspace

KEEP_RUNS = 10


def clean(ws: Workspace, *, run_id: str | None, everything: bool, keep: int = KEEP_RUNS) -> int:
    """Default: the worktree pool, plus refs and directories of finished runs beyond the
    newest `keep`. `--run ID` removes that run entirely (its integration branch too);
    `--all` removes every run. Resumable runs are kept unless named or `--all`."""
    holder = lock_holder(ws.state_dir)
    if holder is not None:
        raise UserError(f"a gitexec engine is running ({holder}); stop it before cleaning")
    runs = list_runs(ws.state_dir)
    if run_id is not None and run_id not in runs:
        raise UserError(f"no run {run_id!r}")
    removed_worktrees = list(remove_pools(ws.repo).removed)
    if removed_worktrees:
        print(f"removed worktrees: {', '.join(removed_worktrees)}")

    repo = pygit2.Repository(str(ws.repo.common_dir))
    if everything:
        targets = runs
    elif run_id is not None:
        targets = [run_id]
    else:
        finished = [
            r
            for r in runs
            if load_run(ws.state_dir, r).status in (RunStatus.COMPLETED, RunStatus.FAILED)
        ]
        targets = finished[: max(0, len(finished) - keep)]
    whole = everything or run_id is not None
    for rid in targets:
        refs = [name for name in repo.references if name.startswith(f"refs/gitexec/{rid}/")]
        if whole:
            refs.append(f"refs/heads/gitexec/{rid}")
        for name in refs:
            if name in repo.references:
                repo.references.delete(name)
        shutil.rmtree(ws.state_dir / RUNS_DIR / rid, ignore_errors=True)
        kept = "" if whole else f" (branch gitexec/{rid} kept)"
        print(f"removed run {rid}{kept}")
    if not targets and not removed_worktrees:
        print("nothing to clean")
    return EXIT_OK
