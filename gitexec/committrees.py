"""The trees of a few recent commits, read once: a slot's reset and collect ask about many
paths of the same two commits (trees are immutable, so a cached one is never stale)."""

from __future__ import annotations

from collections.abc import Callable

import pygit2


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

    def _entry(self, commit: str, path: str) -> pygit2.Object | None:
        try:
            return self.tree(commit)[path]
        except (KeyError, ValueError):
            return None

    def is_tree(self, commit: str, path: str) -> bool:
        return isinstance(self._entry(commit, path), pygit2.Tree)

    def has_file(self, commit: str, path: str) -> bool:
        """A file (not a directory) at `path` in the commit's tree."""
        entry = self._entry(commit, path)
        return entry is not None and not isinstance(entry, pygit2.Tree)

    def files_under(self, commit: str, rel: str) -> set[str]:
        """Every file below directory `rel` in the commit's tree (none if it is not one)."""
        sub = self._entry(commit, rel)
        if not isinstance(sub, pygit2.Tree):
            return set()
        found: set[str] = set()
        stack: list[tuple[str, pygit2.Tree]] = [(rel, sub)]
        while stack:
            prefix, node = stack.pop()
            for entry in node:
                path = f"{prefix}/{entry.name}"
                if isinstance(entry, pygit2.Tree):
                    stack.append((path, entry))
                else:
                    found.add(path)
        return found
