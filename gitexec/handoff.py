"""Context hand-off: what a ticket's prompt says about the tickets it depends on: what
they changed, and what their agent said (bounded: a prompt must stay a prompt)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pygit2

from gitexec.runstate import RunState
from gitexec.tickets import Ticket

MAX_FILES = 30  # per dependency
MAX_SUMMARY = 800  # characters of a dependency's summary


@dataclass(frozen=True)
class Dependency:
    """What the journal says about a dependency that merged in this run."""

    id: str
    title: str
    merge_commit: str | None  # its merge on the integration branch
    previous: str | None  # the head it was merged onto
    summary: str | None  # its agent's final message, when one was recorded


def dependencies_of(ticket: Ticket, state: RunState) -> tuple[Dependency, ...]:
    """What the ticket's dependencies that merged in this run did, as the journal says."""
    out = []
    for dep in ticket.depends_on:
        d = state.tickets.get(dep)
        if d is not None and d.merge_commit:
            out.append(Dependency(dep, d.title, d.merge_commit, d.previous_head, d.summary))
    return tuple(out)


def describe(repo: pygit2.Repository, deps: Sequence[Dependency]) -> list[dict[str, Any]]:
    """The `dependencies` of a prompt's context: id, title, merge commit, the files its
    merge changed with a diffstat, and its agent's summary."""
    out = []
    for d in deps:
        files: list[dict[str, Any]] = []
        more = 0
        if d.merge_commit and d.previous:
            stats = _diffstat(repo, d.previous, d.merge_commit)
            files = stats[:MAX_FILES]
            more = len(stats) - len(files)
        summary = d.summary
        if summary and len(summary) > MAX_SUMMARY:
            summary = summary[: MAX_SUMMARY - 1] + "…"
        out.append(
            {
                "id": d.id,
                "title": d.title,
                "merge_commit": d.merge_commit,
                "files": files,
                "more_files": more,
                "summary": summary,
            }
        )
    return out


def _diffstat(repo: pygit2.Repository, old: str, new: str) -> list[dict[str, Any]]:
    """Files changed from `old` to `new` (engine files left out), with added and removed
    line counts (None for binary files)."""
    try:
        a = repo[pygit2.Oid(hex=old)].peel(pygit2.Tree)
        b = repo[pygit2.Oid(hex=new)].peel(pygit2.Tree)
    except (KeyError, ValueError):
        return []
    files = []
    for patch in a.diff_to_tree(b, context_lines=0):
        if patch is None:
            continue
        delta = patch.delta
        path = delta.new_file.path or delta.old_file.path
        if path == ".gitexec" or path.startswith(".gitexec/"):
            continue
        _, added, removed = patch.line_stats
        binary = delta.is_binary
        files.append(
            {
                "path": path,
                "status": delta.status_char(),
                "added": None if binary else added,
                "removed": None if binary else removed,
            }
        )
    return files
