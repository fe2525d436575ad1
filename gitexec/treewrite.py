"""Writing a few paths into a large tree with libgit2's tree builder.

The status write-back changes one ticket file in `.gitexec/tickets/`, a directory with an
entry per ticket. Rebuilding that tree in Python costs O(tickets) interpreted steps per
ticket; a `TreeBuilder` does the copy, sort and serialization in C. A `TreeWriter` also
keeps the builder of each tree it wrote, so the next update of that tree starts from it
instead of reading the tree back, and hands the new tree's entries to the shared cache
when the old one's were there (a dictionary copy, not a read).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import pygit2

from gitexec.treecache import TREE, TREES, Entry


class TreeWriter:
    """Path updates of trees in one repository (one thread: builders are not shared)."""

    def __init__(self, repo: pygit2.Repository, keep: int = 8) -> None:
        self.repo = repo
        self.keep = keep
        self._builders: OrderedDict[pygit2.Oid, pygit2.TreeBuilder] = OrderedDict()

    def update(
        self, tree: pygit2.Oid | None, changes: Mapping[str, Entry | None]
    ) -> pygit2.Oid | None:
        """`tree` with files set (an entry) or removed (None) at slash-separated paths,
        rewriting only the trees along those paths; None when the result is empty.

        A file replaces whatever is at its path; removing a missing path does nothing, and
        removals below a path that holds a file leave that file alone.
        """
        direct: dict[str, Entry | None] = {}
        nested: dict[str, dict[str, Entry | None]] = {}
        for path, entry in changes.items():
            head, _, rest = path.partition("/")
            if rest:
                nested.setdefault(head, {})[rest] = entry
            else:
                direct[head] = entry
        builder = self._builder(tree)
        known = TREES.get(tree) if tree is not None else {}
        derived = dict(known) if known is not None else None
        for name in direct.keys() | nested.keys():
            new: Entry | None
            if name in direct:
                if name in nested:
                    raise ValueError(f"{name!r} is changed both as a file and as a directory")
                new = direct[name]
            else:
                cur = builder.get(name)
                cur_tree = cur.id if cur is not None and cur.filemode == TREE else None
                sub = self.update(cur_tree, nested[name])
                if sub is None and cur_tree is None:
                    continue  # only removals below a path that holds no directory
                new = (sub, TREE) if sub is not None else None
            key = name.encode("utf-8", "surrogateescape")
            if new is None:
                if builder.get(name) is not None:
                    builder.remove(name)
                if derived is not None:
                    derived.pop(key, None)
            else:
                builder.insert(name, new[0], new[1])
                if derived is not None:
                    derived[key] = new
        if not len(builder):
            return None
        oid = builder.write()
        if derived is not None:
            TREES.put(oid, derived)
        self._builders[oid] = builder
        while len(self._builders) > self.keep:
            self._builders.popitem(last=False)
        return oid

    def _builder(self, tree: pygit2.Oid | None) -> pygit2.TreeBuilder:
        """A builder holding `tree`'s entries: the one that wrote it, else a fresh one."""
        if tree is None:
            return self.repo.TreeBuilder()
        kept = self._builders.pop(tree, None)
        if kept is not None:
            return kept
        obj = self.repo[tree]
        if not isinstance(obj, pygit2.Tree):
            raise ValueError(f"{tree} is not a tree")
        return self.repo.TreeBuilder(obj)
