"""Tree objects read once: their entries by raw name, in a bounded cache keyed by tree id.

Trees are immutable and named by their content, so a cached tree is never stale and may be
shared by every thread and every repository handle of one object database. A run asks
about the same few large trees (`.gitexec/tickets/` holds one entry per ticket) for every
ticket; reading each once keeps the per-ticket cost independent of the run's size.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping

import pygit2

# (object id, filemode); None stands for "no entry".
Entry = tuple[pygit2.Oid, int]
# A tree's entries by raw name. Shared between callers: never mutate one.
Entries = Mapping[bytes, Entry]

TREE = 0o040000
BLOB = 0o100644
EXEC = 0o100755
LINK = 0o120000
GITLINK = 0o160000
TYPE_MASK = 0o170000

# Entries held by the shared cache, summed over its trees (a few hundred bytes each):
# two versions of a 100,000-entry directory fit.
MAX_ENTRIES = 250_000

# One tree entry in git's object format: "<octal mode> <name>\0<20-byte id>".
_ENTRY = re.compile(rb"([0-7]+) ([^\0]*)\0(.{20})", re.DOTALL)
_MODES = {
    b"100644": BLOB,
    b"100755": EXEC,
    b"40000": TREE,
    b"120000": LINK,
    b"160000": GITLINK,
}


def _mode(raw: bytes) -> int:
    """A raw mode as libgit2 reports it (old modes like 100664 are normalized)."""
    found = _MODES.get(raw)
    if found is not None:
        return found
    mode = int(raw, 8)
    if mode & TYPE_MASK == 0o100000:
        return EXEC if mode & 0o111 else BLOB
    return mode


def read_entries(repo: pygit2.Repository, oid: pygit2.Oid) -> dict[bytes, Entry]:
    """Parse one tree object (uncached). The raw object is parsed with one regular
    expression: pygit2's entries build a `FileMode` enum each, which costs more than the
    rest of the read."""
    kind, data = repo.odb.read(oid)
    if kind != pygit2.enums.ObjectType.TREE:
        raise ValueError(f"{oid} is not a tree")
    return {name: (pygit2.Oid(raw=raw), _mode(mode)) for mode, name, raw in _ENTRY.findall(data)}


class TreeCache:
    """A least-recently-used map of tree id -> entries, bounded by the entries it holds.

    Thread-safe. A tree larger than the bound is still kept (alone): evicting it at once
    would make every question about it a full read again.
    """

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._trees: OrderedDict[pygit2.Oid, Entries] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._trees)

    @property
    def size(self) -> int:
        """Entries held, over all trees."""
        return self._size

    def get(self, oid: pygit2.Oid) -> Entries | None:
        with self._lock:
            found = self._trees.get(oid)
            if found is not None:
                self._trees.move_to_end(oid)
            return found

    def put(self, oid: pygit2.Oid, entries: Entries) -> None:
        """Remember a tree's entries (the caller gives up the mapping: it must not change)."""
        with self._lock:
            old = self._trees.pop(oid, None)
            if old is not None:
                self._size -= len(old)
            self._trees[oid] = entries
            self._size += len(entries)
            while self._size > self.max_entries and len(self._trees) > 1:
                _, evicted = self._trees.popitem(last=False)
                self._size -= len(evicted)

    def entries(self, repo: pygit2.Repository, oid: pygit2.Oid) -> Entries:
        """The entries of tree `oid`, read on first use."""
        found = self.get(oid)
        if found is None:
            found = read_entries(repo, oid)
            self.put(oid, found)
        return found

    def clear(self) -> None:
        with self._lock:
            self._trees.clear()
            self._size = 0


TREES = TreeCache()


def entries(repo: pygit2.Repository, oid: pygit2.Oid | None) -> Entries:
    """The entries of a tree (none for None), through the shared cache."""
    return {} if oid is None else TREES.entries(repo, oid)


def lookup(repo: pygit2.Repository, tree: pygit2.Oid, path: str) -> Entry | None:
    """The entry at `path` ("a/b/c") below `tree`, or None; every directory on the way is
    read through the shared cache, so asking about many paths of one tree is cheap."""
    node: Entry = (tree, TREE)
    for part in path.split("/"):
        if not part or node[1] != TREE:
            return None
        found = entries(repo, node[0]).get(part.encode("utf-8", "surrogateescape"))
        if found is None:
            return None
        node = found
    return node


def walk_files(repo: pygit2.Repository, tree: pygit2.Oid, prefix: str = "") -> Iterator[str]:
    """Every non-directory path below `tree`, each prefixed with `prefix`."""
    stack = [(prefix, tree)]
    while stack:
        base, oid = stack.pop()
        for name, (child, mode) in entries(repo, oid).items():
            path = base + name.decode("utf-8", "surrogateescape")
            if mode == TREE:
                stack.append((path + "/", child))
            else:
                yield path


def is_blob(entry: Entry) -> bool:
    """A file git stores as a blob: regular, executable or symbolic link."""
    return entry[1] & TYPE_MASK in (0o100000, LINK)
