"""`enqueue` and `cancel`: changing a run's plan while it goes, or while it waits to be
resumed.

With a live engine, the request goes to it (control.py). A stopped or crashed run has no
engine: these commands then take the engine lock themselves and journal the change (and
commit enqueued ticket files onto its integration branch), and `resume` takes it from
there, exactly as if the engine had done it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pygit2

from gitexec import events as ev
from gitexec import replan as plan_changes
from gitexec.commands.control import send
from gitexec.commands.resume import resumable
from gitexec.commands.run import load_at
from gitexec.enqueue import check_new, enqueued_event, replayed_tickets
from gitexec.errors import EXIT_OK, UserError
from gitexec.gitutil import committer_identity
from gitexec.integration import Integration
from gitexec.journal import JOURNAL, EngineLock, Journal, lock_holder
from gitexec.merge_queue import MergeQueue
from gitexec.recovery import reconcile_head
from gitexec.refs import integration_ref
from gitexec.runstate import RUNS_DIR, RunState, list_runs, load_run
from gitexec.scheduler import Policy, Refused, Scheduler
from gitexec.tickets import TICKET_SUFFIXES, TICKETS_DIR, Ticket
from gitexec.workspace import Workspace


def enqueue(ws: Workspace, *, run_id: str | None, items: Sequence[str], rev: str | None) -> int:
    """Add tickets (files, or ids of files in .gitexec/tickets/) to a run."""
    texts = [_read_ticket(ws, item, rev) for item in items]
    if _live(ws, run_id):
        send(ws, run_id, "enqueue", tickets=[list(t) for t in texts])
        return EXIT_OK
    rid = run_id or _newest_resumable(ws)
    added = _offline(ws, rid, lambda state, merges, _, emit: _add(ws, state, merges, texts, emit))
    print(f"run {rid}: added {', '.join(added)}; `git exec resume --run {rid}` runs them")
    return EXIT_OK


def cancel(ws: Workspace, *, run_id: str | None, tickets: Sequence[str], force: bool) -> int:
    """Cancel pending tickets of a run (running ones with `force`)."""
    if _live(ws, run_id):
        send(ws, run_id, "cancel", tickets=list(tickets), force=force)
        return EXIT_OK
    rid = run_id or _newest_resumable(ws)

    def cancel_in(
        state: RunState, merges: MergeQueue, run: list[Ticket], emit: Callable[[ev.Event], object]
    ) -> list[str]:
        scheduler = Scheduler(run, Policy(agents={}), jobs=state.jobs, emit=emit, default_agent="")
        plan_changes.restore(scheduler, state.tickets)
        try:
            done, _ = plan_changes.cancel(scheduler, tickets, force=False)
        except Refused as exc:
            raise UserError(str(exc)) from None
        return done

    cancelled = _offline(ws, rid, cancel_in)
    print(f"run {rid}: cancelled {', '.join(cancelled)}")
    return EXIT_OK


# --- without a live engine ---------------------------------------------------------------------


_Change = Callable[[RunState, MergeQueue, list[Ticket], Callable[[ev.Event], object]], list[str]]


def _offline(ws: Workspace, run_id: str, change: _Change) -> list[str]:
    """Make `change` to a run no engine is running, under the engine lock: its events are
    journaled, and the run's branch moves (when it does) after the journal says so."""
    before = load_run(ws.state_dir, run_id)  # (under our own lock it would look live)
    if not before.tickets:
        raise UserError(f"run {run_id} has no usable journal")
    if not resumable(before):
        raise UserError(
            f"run {run_id} is {before.status.value}: nothing to change (start a new run)"
        )
    with EngineLock(ws.state_dir).held(run_id):
        state = load_run(ws.state_dir, run_id)  # what the journal says now
        repo = pygit2.Repository(str(ws.repo.common_dir))
        project = load_at(ws, repo, state.base)
        run = [t for t in project.tickets if t.id in state.tickets]
        run.extend(replayed_tickets(state.enqueued))
        config = ws.settings(project.config)
        integration = Integration(
            repo, integration_ref(run_id), committer_identity(ws.root), run_id
        )
        journal = Journal(ws.state_dir / RUNS_DIR / run_id / JOURNAL)
        try:

            def emit(event: ev.Event) -> ev.Event:
                journaled = journal.append(event)
                state.apply(journaled)
                return journaled

            merges = MergeQueue(
                integration,
                config=config,
                tickets={t.id: t for t in run},
                plan_order=[],
                state=state,
                emit=emit,
                head=reconcile_head(state, integration),
            )
            return change(state, merges, run, emit)
        finally:
            journal.close()


def _add(
    ws: Workspace,
    state: RunState,
    merges: MergeQueue,
    texts: Sequence[tuple[str, str]],
    emit: Callable[[ev.Event], object],
) -> list[str]:
    done = [Ticket(id=t, title=t, file=f"{TICKETS_DIR}/{t}.yaml") for t in state.skipped]
    new = check_new(
        texts,
        run_tickets=[*merges.tickets.values(), *done],
        existing_ids=[*merges.ticket_ids(), *state.tickets],
        config=merges.config,
    )
    group = max((t.group for t in state.tickets.values()), default=0) + 1
    for n in new:
        emit(enqueued_event(n, merges.config, group))
    ids = [n.ticket.id for n in new]
    merges.commit_files(
        {n.ticket.file: n.text.encode("utf-8") for n in new}, f"gitexec: enqueue {', '.join(ids)}"
    )
    return ids


# --- helpers -----------------------------------------------------------------------------------


def _live(ws: Workspace, run_id: str | None) -> bool:
    holder = lock_holder(ws.state_dir)
    live = holder[4:].split(",", 1)[0] if holder and holder.startswith("run ") else None
    return live is not None and run_id in (None, live)


def _newest_resumable(ws: Workspace) -> str:
    for rid in reversed(list_runs(ws.state_dir)):
        if resumable(load_run(ws.state_dir, rid)):
            return rid
    raise UserError("no live or resumable run to change (name one with --run)")


def _read_ticket(ws: Workspace, item: str, rev: str | None) -> tuple[str, str]:
    """(repository-relative file, text) of a ticket given as a file or an id, read from
    the work tree or from revision `rev`."""
    candidates = [item]
    if "/" not in item and not item.endswith(TICKET_SUFFIXES):
        candidates = [f"{TICKETS_DIR}/{item}{suffix}" for suffix in TICKET_SUFFIXES]
    for rel in candidates:
        if rev is not None:
            text = _at_revision(ws, rev, rel)
        else:
            path = Path(item) if rel == item else ws.root / rel
            path = path if path.is_absolute() else ws.cwd / path
            try:
                text = path.read_text(encoding="utf-8") if path.is_file() else None
            except (OSError, UnicodeDecodeError) as exc:
                raise UserError(f"{item}: cannot read it: {exc}") from None
            rel = os.path.relpath(path.resolve(), ws.root.resolve()) if text is not None else rel
        if text is not None:
            return rel, text
    where = f" at {rev}" if rev else ""
    raise UserError(f"{item}: no such ticket file{where}")


def _at_revision(ws: Workspace, rev: str, rel: str) -> str | None:
    repo = pygit2.Repository(str(ws.repo.common_dir))
    try:
        tree = repo.revparse_single(rev).peel(pygit2.Tree)
        blob = tree[rel]
    except (KeyError, ValueError, pygit2.GitError):
        return None
    if not isinstance(blob, pygit2.Blob):
        return None
    try:
        return blob.data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{rel} at {rev} is not UTF-8 text") from None
