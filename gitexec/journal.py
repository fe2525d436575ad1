"""The run journal (append-only JSON lines, synced in groups) and the one-engine lock.

The journal is a run's truth: every state change is appended before it is acted on, and
`RunState` (runstate.py) is rebuilt from it by status, reports and resume alike. What a
line may say is defined in events.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from gitexec.errors import UserError
from gitexec.events import Event, RunStarted, TicketEnqueued, TicketEvent
from gitexec.records import InvalidEvent, Loaded, from_record, to_record

E = TypeVar("E", bound=Event)

JOURNAL = "journal.jsonl"


class JournalClosed(Exception):
    """The engine has stopped writing this journal (a worker outlived an engine error)."""


class JournalUnwritable(UserError):
    """The journal cannot be written (a full disk, a failing file system): the run stops
    where its journal ends, which is where `resume` continues."""

    def __init__(self, path: Path, why: str) -> None:
        run_id = path.parent.name
        super().__init__(
            f"cannot write the journal {path}: {why}. The run stopped there; its journal and "
            f"branch agree. Make room, then continue it with `git exec resume --run {run_id}`"
        )


# A journal on a file system with less room than this stops its run: an almost full disk
# would otherwise fail the run's tickets (their logs and files) for reasons not theirs.
MIN_FREE_BYTES = 256 * 1024


class Journal:
    """Appends events to `runs/<id>/journal.jsonl`; safe to call from several threads.

    When the journal cannot be written, or its disk is (nearly) full, it stays failed:
    the thread that opened it (the engine's) gets JournalUnwritable at its next append,
    so the run stops; events from other threads (workers) are dropped meanwhile, so the
    journal stays a whole prefix of the run, and every worker still reports back.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._owner = threading.get_ident()
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self._seq = _last_seq(path)
        self._failed: str | None = None
        self._sync_lock = threading.Lock()
        try:
            self._repair_torn_tail()
        except OSError as exc:
            os.close(self._fd)
            raise JournalUnwritable(path, _why(exc)) from None
        self._size = os.fstat(self._fd).st_size
        self._synced = self._size

    @classmethod
    def create(cls, path: Path, first: E) -> tuple[Journal, E]:
        """A new journal whose first event is on disk before the file has its name.

        A run killed at any instant is either absent (no journal) or has a first record
        saying everything resume needs: never an empty journal.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        first = dataclasses.replace(first, seq=1, t=round(time.time(), 6))
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".journal-")
        try:
            try:
                _room(fd)
                _write_all(fd, _line(first))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.chmod(tmp, 0o644)
            os.rename(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise JournalUnwritable(path, _why(exc)) from None
        _fsync_dir(path.parent)
        return cls(path), first

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

    def append(self, event: E, durable: bool | None = None) -> E:
        """Write one event; returns it with its sequence number and time (the time it says,
        when the writer chose one to share with what it records elsewhere).

        A durable event (by default, as its type says) is on disk when this returns, and so
        is every line before it. Others (what workers report, intents) are written, so they
        survive the engine being killed, and reach the disk with the next durable one: a
        power cut can lose only a tail of them, which resume treats like a run killed a
        moment earlier. The disk is synced outside the lock, so writers do not queue behind
        each other's syncs, and one sync serves every line written before it.
        """
        with self._lock:
            if self._fd < 0:
                raise JournalClosed(event.kind)
            event = dataclasses.replace(
                event, seq=self._seq + 1, t=event.t or round(time.time(), 6)
            )
            if self._failed is None:
                line = _line(event)
                start = self._size
                try:
                    _room(self._fd)
                    _write_all(self._fd, line)
                except OSError as exc:
                    self._fail(exc, start)
                else:
                    self._seq += 1
                    self._size += len(line)
                    if durable is None:
                        durable = event.durable
                    if not durable or self._sync(start, start + len(line)):
                        return event
            if threading.get_ident() == self._owner:
                raise JournalUnwritable(self.path, self._failed or "")
            return event  # not journaled: the engine stops at its next event

    def sync(self) -> None:
        """Make every line written so far durable (before acting on what they say outside
        the journal, such as moving a branch)."""
        with self._lock:
            if self._fd < 0:
                raise JournalClosed("sync")
            if self._failed is None and self._sync(self._synced, self._size):
                return
            raise JournalUnwritable(self.path, self._failed or "")

    def _sync(self, start: int, end: int) -> bool:
        """Make the journal durable up to `end` (called holding the lock, which it lets go
        while syncing); False when the sync failed."""
        self._lock.release()
        try:
            with self._sync_lock:
                if self._synced < end and self._fd >= 0:  # else another sync covered it
                    upto = self._size
                    os.fdatasync(self._fd)
                    self._synced = upto
            return True
        except OSError as exc:
            error = exc
        finally:
            self._lock.acquire()
        if self._fd >= 0:
            self._fail(error, start)
        return False

    def _fail(self, exc: OSError, start: int) -> None:
        """Stay failed; what did not go in whole (or durably) does not stay in part, nor
        anything written after it."""
        self._failed = self._failed or _why(exc)
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, start)
        self._size = min(self._size, start)
        self._synced = min(self._synced, start)

    def close(self) -> None:
        with self._sync_lock, self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def _write_all(fd: int, data: bytes) -> None:
    """os.write until all of `data` is written (a nearly full disk takes part of it)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _room(fd: int) -> None:
    """Refuse to write on a file system with less than MIN_FREE_BYTES left."""
    try:
        st = os.fstatvfs(fd)
    except OSError:
        return  # cannot tell: let the write say
    if st.f_bavail * st.f_frsize < MIN_FREE_BYTES:
        raise OSError(errno.ENOSPC, f"less than {MIN_FREE_BYTES // 1024} KiB left on the device")


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _line(event: Event) -> bytes:
    text = json.dumps(to_record(event), separators=(",", ":"), default=str)
    return (text + "\n").encode("utf-8", "surrogateescape")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_lines(path: Path) -> list[tuple[int, Any]]:
    """(line number, decoded JSON) of every complete line; a torn or garbled line (a crash
    mid-write) is left out."""
    out: list[tuple[int, Any]] = []
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return out
    for number, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            out.append((number, json.loads(raw)))
        except (ValueError, RecursionError):
            continue
    return out


def read_records(path: Path) -> list[dict[str, Any]]:
    """The journal's lines as plain JSON objects (for tools and tests)."""
    return [r for _, r in read_lines(path) if isinstance(r, dict) and "event" in r]


def load_events(path: Path) -> Loaded:
    """The journal's typed events, and the lines skipped, each named by its line number:
    lines that do not fit their event's schema, a second run-started record, and events
    about a ticket neither the run-started record nor an enqueue named."""
    events: list[Event] = []
    problems: list[str] = []
    tickets: set[str] = set()
    started = False
    for number, record in read_lines(path):
        try:
            event = from_record(record)
        except InvalidEvent as exc:
            problems.append(f"line {number}: {exc}; skipped")
            continue
        if isinstance(event, RunStarted):
            if started:
                problems.append(f"line {number}: a second run-started record; skipped")
                continue
            started, tickets = True, set(event.tickets)
        elif isinstance(event, TicketEnqueued) and started:
            tickets.add(event.ticket)  # a ticket added to the run while it went
        elif isinstance(event, TicketEvent) and event.ticket not in tickets:
            problems.append(
                f"line {number}: {event.kind} names unknown ticket {event.ticket!r}; skipped"
            )
            continue
        events.append(event)
    return Loaded(events, problems)


def _last_seq(path: Path) -> int:
    """The highest sequence number of the journal's valid events (a damaged line's number,
    however large, must not push the next events out of range)."""
    return max((e.seq for e in load_events(path).events), default=0)


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
    except PermissionError:
        raise UserError(
            f"cannot read {path}: permission denied (it says whether a gitexec engine runs "
            "in this repository); make it readable, or run gitexec as the user who owns it"
        ) from None
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
