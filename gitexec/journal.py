"""The run journal (append-only, fsynced JSON lines) and the one-engine-per-repository lock.

The journal is a run's truth: every state change is appended before it is acted on, and
`RunState` (runstate.py) is rebuilt from it by status, reports and resume alike.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gitexec.errors import UserError

JOURNAL = "journal.jsonl"
Event = dict[str, Any]


class JournalClosed(Exception):
    """The engine has stopped writing this journal (a worker outlived an engine error)."""


class Journal:
    """Appends events to `runs/<id>/journal.jsonl`; safe to call from several threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._seq = _last_seq(path)
        self._repair_torn_tail()

    def _repair_torn_tail(self) -> None:
        """A crash mid-write can leave a last line without its newline: end it, so the next
        event starts on a line of its own (readers skip the torn line)."""
        size = os.fstat(self._fd).st_size
        if size == 0:
            return
        with self.path.open("rb") as f:
            f.seek(size - 1)
            if f.read(1) != b"\n":
                os.write(self._fd, b"\n")
                os.fsync(self._fd)

    def append(self, kind: str, **fields: Any) -> Event:
        """Write one event durably and return it (with its sequence number and time)."""
        with self._lock:
            if self._fd < 0:
                raise JournalClosed(kind)
            self._seq += 1
            event: Event = {"seq": self._seq, "t": round(time.time(), 6), "event": kind, **fields}
            line = json.dumps(event, separators=(",", ":"), default=str) + "\n"
            os.write(self._fd, line.encode("utf-8", "surrogateescape"))
            os.fdatasync(self._fd)
            return event

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def read_events(path: Path) -> list[Event]:
    """Every complete event of a journal; a torn or garbled line (crash mid-write) is skipped."""
    events: list[Event] = []
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return events
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            event = json.loads(raw)
        except ValueError:
            continue
        if isinstance(event, dict) and "event" in event:
            events.append(event)
    return events


def _last_seq(path: Path) -> int:
    events = read_events(path)
    return max((int(e.get("seq", 0)) for e in events), default=0)


class EngineLock:
    """An exclusive lock on `<common>/gitexec/lock`, released when the process dies."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "lock"
        self._fd = -1

    def acquire(self, run_id: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _lock(fd, fcntl.LOCK_EX):
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
            os.close(fd)
            raise UserError(
                "another gitexec engine is running in this repository"
                + (f" ({holder})" if holder else "")
                + "; wait for it, or control it with `git exec status|pause|stop`"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"run {run_id}, pid {os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = -1

    @contextlib.contextmanager
    def held(self, run_id: str) -> Iterator[None]:
        self.acquire(run_id)
        try:
            yield
        finally:
            self.release()


def lock_holder(state_dir: Path) -> str | None:
    """Who holds the engine lock ("run X, pid N"), or None when no engine runs."""
    path = state_dir / "lock"
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        if not _lock(fd, fcntl.LOCK_SH):
            return os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


_DEAD_HOLDER_WAIT_S = 3.0


def _lock(fd: int, kind: int) -> bool:
    """Take the lock without blocking on a live engine.

    A killed engine's lock can outlive it for a moment: a child it had just forked
    still shares the lock until it closes its copy of the descriptor. When the pid the
    lock file names is gone, wait a little for that to happen instead of reporting a
    live engine.
    """
    deadline = time.monotonic() + _DEAD_HOLDER_WAIT_S
    while True:
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if _holder_alive(fd) or time.monotonic() >= deadline:
                return False
            time.sleep(0.01)


def _holder_alive(fd: int) -> bool:
    text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
    _, _, pid = text.partition("pid ")
    try:
        os.kill(int(pid.strip()), 0)
    except ProcessLookupError:
        return False
    except (ValueError, PermissionError):
        return True
    return True
