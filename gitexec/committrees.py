"""The trees of a few recent commits, read once: a slot's reset and collect ask about many
paths of the same two commits (trees are immutable, so a cached one is never stale).
Directories come from the shared tree cache, so a path question costs a few dictionary
lookups however large the directories on its way are."""

from __future__ import annotations

from collections.abc import Callable

import pygit2

from gitexec.treecache import TREE, Entry, lookup, walk_files


class CommitTrees:
    """Path questions about commits' trees, for one thread (pygit2 objects are not shared)."""

    def __init__(self, objects: Callable[[], pygit2.Repository], keep: int = 4) -> None:
        self._objects = objects
        self._keep = keep
        self._trees: dict[str, pygit2.Tree] = {}

    def tree(self, commit: str) -> pygit2.Tree:
        cached = self._trees.get(commit)
        if cached is None:
            cached = self._objects()[pygit2.Oid(hex=commit)].peel(pygit2.Tree)
            recent = list(self._trees.items())[: self._keep - 1]
            self._trees = {commit: cached, **dict(recent)}
        return cached

    def clear(self) -> None:
        self._trees = {}

    def _entry(self, commit: str, path: str) -> Entry | None:
        return lookup(self._objects(), self.tree(commit).id, path)

    def is_tree(self, commit: str, path: str) -> bool:
        entry = self._entry(commit, path)
        return entry is not None and entry[1] == TREE

    def has_file(self, commit: str, path: str) -> bool:
        """A file (not a directory) at `path` in the commit's tree."""
        entry = self._entry(commit, path)
        return entry is not None and entry[1] != TREE

    def files_under(self, commit: str, rel: str) -> set[str]:
        """Every file below directory `rel` in the commit's tree (none if it is not one)."""
        sub = self._entry(commit, rel)
        if sub is None or sub[1] != TREE:
            return set()
        return set(walk_files(self._objects(), sub[0], rel + "/"))
