"""What gitexec knows about a slot between its own writes, and keeping that across runs.

While a slot's watcher runs, gitexec knows the slot exactly: HEAD and the index as it
last wrote them, plus the paths touched since. An engine that ends with a healthy watcher
saves that knowledge next to the slot's other bookkeeping, so the next engine resets the
slot in O(changes) instead of scanning it three times. The saved state is trusted only
while HEAD and the index are byte-for-byte where it says (any git command that wrote
them, a user's or a crashed agent's, changes their stat), and it is removed before the
slot is used again, so a run killed mid-attempt leaves none: the next engine then takes
the full reset.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

STATE_VERSION = 1
IndexStat = tuple[int, int, int]


@dataclass
class Known:
    """What the slot looked like after gitexec last wrote it: HEAD, the index's stat and
    the paths touched since. After an in-process commit the index still holds
    `index_base`'s entries for the paths in `dirty` (the next reset or git command of
    ours brings them up to date); None when it holds HEAD's."""

    head: str
    index: IndexStat
    dirty: set[str] = field(default_factory=set)
    index_base: str | None = None


@dataclass(frozen=True)
class Saved:
    """A slot's state as an engine left it: what it knew, and the directories its watcher
    skipped (ignored as a whole)."""

    worktree: str
    known: Known
    skip: tuple[str, ...]


def save(path: Path, saved: Saved) -> None:
    """Write atomically (a torn file would only be distrusted, but costs a full reset)."""
    k = saved.known
    data = {
        "version": STATE_VERSION,
        "worktree": saved.worktree,
        "head": k.head,
        "index": list(k.index),
        "dirty": sorted(k.dirty),
        "index_base": k.index_base,
        "skip": list(saved.skip),
    }
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, path)


def load(path: Path, worktree: Path) -> Saved | None:
    """The saved state of the slot at `worktree`, or None (none, damaged, another place)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") != STATE_VERSION or data["worktree"] != str(worktree):
            return None
        index = tuple(int(n) for n in data["index"])
        base = data["index_base"]
        known = Known(
            head=str(data["head"]),
            index=(index[0], index[1], index[2]),
            dirty={str(p) for p in data["dirty"]},
            index_base=str(base) if base is not None else None,
        )
        return Saved(str(worktree), known, tuple(str(p) for p in data["skip"]))
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None


def forget(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
