"""A parse cache for ticket files, so the commit-stage hook stays fast as repositories grow.

Entries are keyed by path and file stat (mtime, size, inode, ctime). A file modified within
the last couple of seconds could change again without its mtime moving (the "racy git"
problem), so such entries also keep a content digest that is checked on use.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from gitexec import __version__

V = TypeVar("V")
_FORMAT = 1
_RACY_NS = 2_000_000_000


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)


@dataclass(frozen=True)
class _Entry(Generic[V]):
    stat: tuple[int, int, int, int]
    digest: bytes | None  # set when the entry was racy when stored
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

    def get(self, name: str, st: os.stat_result, content: Callable[[], bytes]) -> V | None:
        """The cached value for `name` if the file is unchanged; `content` reads it if racy."""
        self._seen.add(name)
        entry = self._entries.get(name)
        if entry is None or entry.stat != _stat_key(st):
            return None
        if entry.digest is not None:
            try:
                if digest(content()) != entry.digest:
                    return None
            except OSError:
                return None
        return entry.value

    def put(self, name: str, st: os.stat_result, data: bytes, value: V) -> None:
        self._seen.add(name)
        racy = time.time_ns() - st.st_mtime_ns < _RACY_NS
        self._entries[name] = _Entry(_stat_key(st), digest(data) if racy else None, value)
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
