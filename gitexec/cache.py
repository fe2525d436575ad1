"""A parse cache for ticket files, so the commit-stage hook stays fast as repositories grow.

Entries are keyed by path and either the file's stat (mtime, size, inode, ctime) or a git
blob id. A file modified within the last couple of seconds could change again without its
mtime moving (the "racy git" problem), so such entries also keep a content digest that is
checked on use.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import tempfile
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from gitexec import __version__

V = TypeVar("V")
_FORMAT = 1
_RACY_NS = 2_000_000_000


def stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)


def is_racy(st: os.stat_result) -> bool:
    """Modified so recently that a further change might not move the mtime."""
    return time.time_ns() - st.st_mtime_ns < _RACY_NS


@dataclass(frozen=True)
class _Entry(Generic[V]):
    key: Hashable  # file stat, or a blob id
    digest: bytes | None  # content digest, kept for entries that were racy when stored
    value: V


def digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


class ParseCache(Generic[V]):
    """Maps a file path to a value derived from its content, revalidated by stat."""

    def __init__(self, path: Path | None, namespace: str) -> None:
        self.path = path
        self._tag = (namespace, __version__, _FORMAT)
        self._entries: dict[str, _Entry[V]] = {}
        self._dirty = False
        self._seen: set[str] = set()
        if path is not None:
            with contextlib.suppress(OSError, pickle.UnpicklingError, EOFError, ValueError):
                with path.open("rb") as f:
                    tag, entries = pickle.load(f)  # noqa: S301 - our own file under .git
                if tag == self._tag and isinstance(entries, dict):
                    self._entries = entries

    def get(self, name: str, key: Hashable, content: Callable[[], bytes]) -> V | None:
        """The cached value if `key` still matches; `content` is read only for racy entries."""
        self._seen.add(name)
        entry = self._entries.get(name)
        if entry is None or entry.key != key:
            return None
        if entry.digest is not None:
            try:
                if digest(content()) != entry.digest:
                    return None
            except OSError:
                return None
        return entry.value

    def put(self, name: str, key: Hashable, value: V, racy_content: bytes | None = None) -> None:
        """Store a value; pass the content when the file might still change unnoticed."""
        self._seen.add(name)
        self._entries[name] = _Entry(key, digest(racy_content) if racy_content else None, value)
        self._dirty = True

    def save(self) -> None:
        """Write the cache (dropping entries for files not seen this time) if it changed."""
        stale = set(self._entries) - self._seen
        if stale:
            for name in stale:
                del self._entries[name]
            self._dirty = True
        if not self._dirty or self.path is None:
            return
        self._dirty = False
        # A read-only .git (or a full disk) costs speed, never correctness.
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".cache-")
            try:
                with os.fdopen(fd, "wb") as f:
                    pickle.dump((self._tag, self._entries), f, protocol=pickle.HIGHEST_PROTOCOL)
                os.replace(tmp, self.path)
            except BaseException:
                os.unlink(tmp)
                raise
