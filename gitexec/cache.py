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
_FORMAT = 4  # 4: conflict ladders are ConflictStep values; findings changed
_RACY_NS = 2_000_000_000


def stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)


def is_racy(st: os.stat_result) -> bool:
    """Modified so recently that a further change might not move the mtime."""
    return time.time_ns() - st.st_mtime_ns < _RACY_NS


@dataclass(frozen=True)
class _Entry(Generic[V]):
    key: Hashable  # file stat, or a blob id
    digest: bytes  # content digest: a stat change with the same content is still a hit
    racy: bool  # stored while the file could still change without its stat moving
    value: V


def digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


class ParseCache(Generic[V]):
    """Maps a file path to a value derived from its content, revalidated by stat.

    A matching stat key is a hit without reading the file (unless the entry was racy);
    otherwise the content digest decides, so a checkout or `touch` that leaves content
    unchanged costs a read, not a parse.
    """

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

    def lookup(
        self, name: str, key: Hashable, racy: bool, read: Callable[[], bytes | None]
    ) -> tuple[V | None, bytes | None]:
        """(cached value or None, the content if it had to be read)."""
        self._seen.add(name)
        entry = self._entries.get(name)
        if entry is not None and entry.key == key and not entry.racy:
            return entry.value, None
        data = read()
        if data is None:
            return None, None
        if entry is not None and entry.digest == digest(data):
            if entry.key != key or entry.racy != racy:
                # Same content: refresh the stat key, and stop re-checking once settled.
                self._entries[name] = _Entry(key, entry.digest, racy, entry.value)
                self._dirty = True
            return entry.value, data
        return None, data

    def put(self, name: str, key: Hashable, racy: bool, data: bytes, value: V) -> None:
        self._seen.add(name)
        self._entries[name] = _Entry(key, digest(data), racy, value)
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


class SummaryCache(Generic[V]):
    """One value for a whole directory state (e.g. all findings of `check`), keyed by a
    digest of every file's stat: an unchanged project costs a directory scan."""

    def __init__(self, path: Path | None, namespace: str) -> None:
        self.path = path
        self._tag = (namespace, __version__, _FORMAT)

    def get(self, key: bytes) -> V | None:
        if self.path is None:
            return None
        with contextlib.suppress(OSError, pickle.UnpicklingError, EOFError, ValueError):
            with self.path.open("rb") as f:
                tag, stored_key, value = pickle.load(f)  # noqa: S301 - our own file
            if tag == self._tag and stored_key == key:
                return value  # type: ignore[no-any-return]
        return None

    def put(self, key: bytes, value: V) -> None:
        if self.path is None:
            return
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".summary-")
            try:
                with os.fdopen(fd, "wb") as f:
                    pickle.dump((self._tag, key, value), f, protocol=pickle.HIGHEST_PROTOCOL)
                os.replace(tmp, self.path)
            except BaseException:
                os.unlink(tmp)
                raise
