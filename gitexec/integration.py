"""The integration branch: in-memory merges of ticket results, status write-back, CAS moves.

Every ticket lands as one merge commit `Merge ID: title` whose first parent is the previous
integration head, so `git log --first-parent` of the branch is the run's ledger, and the
ticket's status update is part of that same commit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pygit2

from gitexec.gitutil import Identity
from gitexec.merge import MergeResult, MergeRule, changed_paths, merge_trees, update_tree
from gitexec.treecache import is_blob, lookup
from gitexec.treewrite import TreeWriter

TRAILER_RUN = "Gitexec-Run"
TRAILER_TICKET = "Gitexec-Ticket"


class RefMoved(Exception):
    """The integration ref is not where the engine left it (someone else moved it)."""


def trailers(run_id: str, ticket_id: str | None = None) -> str:
    lines = [f"{TRAILER_RUN}: {run_id}"]
    if ticket_id is not None:
        lines.append(f"{TRAILER_TICKET}: {ticket_id}")
    return "\n".join(lines) + "\n"


def ticket_message(ticket_id: str, title: str, run_id: str) -> str:
    return f"{ticket_id}: {title}\n\n{trailers(run_id, ticket_id)}"


def parse_trailers(message: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in message.splitlines():
        key, sep, value = line.partition(": ")
        if sep and key in (TRAILER_RUN, TRAILER_TICKET):
            found[key] = value.strip()
    return found


class Integration:
    """One run's integration ref in a repository (used from one thread only)."""

    def __init__(self, repo: pygit2.Repository, ref: str, identity: Identity, run_id: str) -> None:
        self.repo = repo
        self.ref = ref
        self.identity = identity
        self.run_id = run_id
        # Keeps the builder of the last status write-back: the next one starts from it.
        self.writer = TreeWriter(repo)

    # --- refs ------------------------------------------------------------------------------

    @property
    def head(self) -> str:
        return str(self.repo.references[self.ref].target)

    def current(self) -> str | None:
        """Where the ref points now, or None when it does not exist."""
        ref = self.repo.references.get(self.ref)
        return None if ref is None else str(ref.target)

    def exists(self) -> bool:
        return self.ref in self.repo.references

    def create(self, base: str) -> None:
        self.repo.create_reference_direct(
            self.ref, pygit2.Oid(hex=base), False, message=f"gitexec: start run {self.run_id}"
        )

    def moved_here_by_gitexec(self, commit: str, towards: str | None = None) -> bool | None:
        """Whether the branch's newest reflog entry is gitexec moving it to `commit`, or from
        `commit` to `towards` (a write cut short: libgit2 appends the reflog entry before it
        renames the ref's lock into place); None when the branch keeps no reflog."""
        ref = self.repo.references.get(self.ref)
        for entry in ref.log() if ref is not None else ():
            # A move without a message (`git update-ref` alone) has None for one.
            new, old = str(entry.oid_new), str(entry.oid_old)
            here = new == commit or (towards is not None and (old, new) == (commit, towards))
            return here and (entry.message or "").startswith("gitexec:")
        return None

    def move(self, old: str, new: str, reason: str) -> None:
        """Compare-and-swap the ref from `old` to `new`, with a reflog message."""
        ref = self.repo.references.get(self.ref)
        if ref is None:
            raise RefMoved(f"{self.ref} was deleted")
        if str(ref.target) != old:
            raise RefMoved(f"{self.ref} is at {ref.target}, expected {old}")
        try:
            ref.set_target(pygit2.Oid(hex=new), f"gitexec: {reason}")
        except pygit2.GitError as exc:
            raise RefMoved(f"{self.ref} moved while updating it: {exc}") from exc

    # --- objects ---------------------------------------------------------------------------

    def signature(self) -> pygit2.Signature:
        return self.identity.signature()

    def tree_of(self, commit: str) -> pygit2.Oid:
        obj = self.repo[pygit2.Oid(hex=commit)]
        assert isinstance(obj, pygit2.Commit)
        return obj.tree_id

    def read(self, tree: pygit2.Oid, path: str) -> bytes | None:
        """The file at `path` in `tree` (directories on the way come from the tree cache)."""
        entry = lookup(self.repo, tree, path)
        if entry is None or not is_blob(entry):
            return None
        blob = self.repo[entry[0]]
        return blob.data if isinstance(blob, pygit2.Blob) else None

    def changed(self, base: str, commit: str) -> list[str]:
        return changed_paths(self.repo, self.tree_of(base), self.tree_of(commit))

    def merge(
        self,
        base: str,
        head: str,
        result: str,
        *,
        rules: Sequence[MergeRule],
        labels: tuple[str, str, str],
    ) -> MergeResult:
        """3-way merge of a ticket result into the integration head, in memory."""
        return merge_trees(
            self.repo,
            self.tree_of(base),
            self.tree_of(head),
            self.tree_of(result),
            rules=rules,
            labels=labels,
        )

    def with_files(self, tree: pygit2.Oid, files: Mapping[str, bytes]) -> pygit2.Oid:
        """`tree` with some regular files replaced (the ticket status write-back)."""
        return update_tree(
            self.repo,
            tree,
            {path: (data, pygit2.enums.FileMode.BLOB) for path, data in files.items()},
            writer=self.writer,
        )

    def commit(self, tree: pygit2.Oid, parents: Sequence[str], message: str) -> str:
        sig = self.signature()
        oid = self.repo.create_commit(
            None, sig, sig, message, tree, [pygit2.Oid(hex=p) for p in parents]
        )
        return str(oid)

    def commit_merge(
        self,
        *,
        head: str,
        result: str,
        tree: pygit2.Oid,
        ticket_id: str,
        title: str,
    ) -> str:
        """The ticket's merge commit on `head` (the ref is moved separately, after the
        journal says so)."""
        message = f"Merge {ticket_id}: {title}\n\n{trailers(self.run_id, ticket_id)}"
        return self.commit(tree, [head, result], message)

    def commit_files(self, head: str, files: Mapping[str, bytes], summary: str) -> str:
        """A single-parent commit on `head` updating `files` (the ref is not moved)."""
        tree = self.with_files(self.tree_of(head), files)
        return self.commit(tree, [head], f"{summary}\n\n{trailers(self.run_id)}")

    def first_parent_tickets(
        self, stop: str | None = None, *, head: str | None = None
    ) -> list[tuple[str, str]]:
        """(commit, ticket id) of ticket merges on the first-parent chain of `head` (the
        branch's tip by default), newest first."""
        out: list[tuple[str, str]] = []
        walker = self.repo.walk(pygit2.Oid(hex=head or self.head), pygit2.enums.SortMode.NONE)
        walker.simplify_first_parent()
        for commit in walker:
            if stop is not None and str(commit.id) == stop:
                break
            found = parse_trailers(commit.message)
            if found.get(TRAILER_RUN) == self.run_id and TRAILER_TICKET in found:
                out.append((str(commit.id), found[TRAILER_TICKET]))
        return out

    def own_merges_between(self, head: str, older: str, limit: int = 10_000) -> bool:
        """Is `older` on `head`'s first-parent chain with only this run's ticket merges
        between them?"""
        commit = self.repo.get(pygit2.Oid(hex=head))
        for _ in range(limit):
            if not isinstance(commit, pygit2.Commit):
                return False
            if str(commit.id) == older:
                return True
            found = parse_trailers(commit.message)
            if found.get(TRAILER_RUN) != self.run_id or TRAILER_TICKET not in found:
                return False
            if not commit.parents:
                return False
            commit = commit.parents[0]
        return False
