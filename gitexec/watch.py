"""Which paths changed in a worktree, from Linux inotify, so resets and commits are O(changes).

Without it every ticket pays two full scans of the worktree (`git checkout -f` refreshes
every index entry, `git add -A` lists every directory): on 20,000 files that dominates a
ticket's overhead. The watcher reports touched paths; directory events are reported as
directories, which callers expand. Anything it cannot vouch for (queue overflow, watch
limits, not Linux) makes `changes()` return None, and callers fall back to a full scan.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
import threading
from pathlib import Path

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000

_MASK = (
    IN_MODIFY
    | IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ONLYDIR
    | IN_DONT_FOLLOW
)
_HEADER = struct.Struct("iIII")

_libc: ctypes.CDLL | None = None
_libc_lock = threading.Lock()


def _load_libc() -> ctypes.CDLL | None:
    global _libc
    with _libc_lock:
        if _libc is None:
            try:
                lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
                lib.inotify_init1.argtypes = [ctypes.c_int]
                lib.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
                _libc = lib
            except (OSError, AttributeError):
                return None
        return _libc


def available() -> bool:
    """Whether this system has inotify (Linux)."""
    return os.uname().sysname == "Linux" and _load_libc() is not None


class WatchError(Exception):
    """The watcher cannot be trusted; fall back to scanning."""


class TreeWatcher:
    """Records paths (relative, as bytes) touched under `root` since the last `take()`.

    `skip` holds relative directory paths not to watch: directories git ignores as a whole,
    such as node_modules, where nothing is ever committed (not `build/` under `build/*`
    with `!build/keep.md`: its files are ignored one by one, and one is re-included).
    Created directories are watched as soon as their event is read, and reported as
    directories so that whatever was written into them before the watch existed is found
    by expanding them.
    """

    def __init__(self, root: Path, skip: frozenset[bytes] = frozenset()) -> None:
        lib = _load_libc()
        if lib is None:
            raise WatchError("inotify is not available")
        self._lib = lib
        self.root = os.fsencode(root)
        self.skip = skip
        fd = lib.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise WatchError(f"inotify_init1: {os.strerror(ctypes.get_errno())}")
        self._fd = fd
        self._dirs: dict[int, bytes] = {}  # watch descriptor -> relative dir ("" = root)
        self._files: set[bytes] = set()
        self._touched_dirs: set[bytes] = set()
        self._broken: str | None = None
        self._lock = threading.Lock()  # the slot's worker takes, the engine peeks
        self._watch_tree(b"")

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __del__(self) -> None:  # pragma: no cover - best effort
        self.close()

    # --- watching --------------------------------------------------------------------------

    def _add(self, rel: bytes) -> bool:
        path = os.path.join(self.root, rel) if rel else self.root
        wd = self._lib.inotify_add_watch(self._fd, path, _MASK)
        if wd < 0:
            err = ctypes.get_errno()
            if err in (errno.ENOENT, errno.ENOTDIR):
                return False  # gone already: its parent's event covers it
            self._broken = f"inotify_add_watch({os.fsdecode(path)}): {os.strerror(err)}"
            return False
        self._dirs[wd] = rel
        return True

    def _watch_tree(self, rel: bytes) -> None:
        """Watch `rel` and every directory below it (not .git, not skipped ones)."""
        stack = [rel]
        while stack:
            current = stack.pop()
            if not self._add(current):
                continue
            path = os.path.join(self.root, current) if current else self.root
            try:
                entries = list(os.scandir(path))
            except OSError:
                continue
            for entry in entries:
                if entry.name == b".git":
                    continue
                child = os.path.join(current, entry.name) if current else entry.name
                if entry.is_dir(follow_symlinks=False) and child not in self.skip:
                    stack.append(child)

    # --- reading ---------------------------------------------------------------------------

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                return
            except OSError as exc:
                self._broken = f"inotify read: {exc}"
                return
            offset = 0
            while offset < len(data):
                wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
                offset += _HEADER.size
                name = data[offset : offset + length].rstrip(b"\0")
                offset += length
                self._event(wd, mask, name)

    def _event(self, wd: int, mask: int, name: bytes) -> None:
        if mask & IN_Q_OVERFLOW:
            self._broken = "inotify queue overflowed"
            return
        if mask & IN_IGNORED:
            self._dirs.pop(wd, None)
            return
        parent = self._dirs.get(wd)
        if parent is None:
            return
        if mask & (IN_DELETE_SELF | IN_MOVE_SELF):
            self._touched_dirs.add(parent)
            return
        if not name:
            return
        rel = os.path.join(parent, name) if parent else name
        if rel == b".git" or rel.startswith(b".git/"):
            return
        if mask & IN_ISDIR:
            if rel in self.skip:
                return
            self._touched_dirs.add(rel)
            if mask & (IN_CREATE | IN_MOVED_TO):
                self._watch_tree(rel)
        else:
            self._files.add(rel)

    def take(self) -> tuple[set[bytes], set[bytes]] | None:
        """(touched files, touched directories) since the last call, or None if unknown.

        After None the watcher is useless: close it and start a new one after a full scan.
        """
        with self._lock:
            self._drain()
            if self._broken is not None:
                return None
            files, dirs = self._files, self._touched_dirs
            self._files, self._touched_dirs = set(), set()
            return files, dirs

    def peek(self) -> tuple[set[bytes], set[bytes]] | None:
        """Like take(), without forgetting: what was touched since the last take()."""
        with self._lock:
            if self._fd < 0:
                return None
            self._drain()
            if self._broken is not None:
                return None
            return set(self._files), set(self._touched_dirs)

    @property
    def problem(self) -> str | None:
        return self._broken
