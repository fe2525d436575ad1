"""Finding processes by a variable in their environment, which survives a double fork: what a
run left behind (`kill_run`), and the token index that finds what a command started."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import psutil

from gitexec.process.values import _TICK_S, PROCESS_VAR, RUN_VAR, WORKTREE_VAR

_SCAN_MAX_AGE_S = 0.4  # one /proc pass serves every supervisor sampling within this


def _env_value(environ: bytes, prefix: bytes) -> bytes | None:
    """The value of `prefix` (b"NAME=") in a NUL-separated environment block."""
    if environ.startswith(prefix):
        start = len(prefix)
    else:
        at = environ.find(b"\0" + prefix)
        if at < 0:
            return None
        start = at + 1 + len(prefix)
    end = environ.find(b"\0", start)
    return environ[start:] if end < 0 else environ[start:end]


def _scan_environ(name: str) -> dict[str, list[int]]:
    """Every process whose environment sets `name`, by value (except this process)."""
    found: dict[str, list[int]] = {}
    me = os.getpid()
    if os.path.isdir("/proc"):
        prefix = f"{name}=".encode()
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == me:
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    value = _env_value(f.read(), prefix)
            except OSError:  # gone, or not ours to read
                continue
            if value is not None:
                found.setdefault(value.decode("utf-8", "replace"), []).append(int(entry))
        return found
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            value_s = proc.environ().get(name)
            if value_s is not None and proc.pid != me:
                found.setdefault(value_s, []).append(proc.pid)
    return found


class _TokenIndex:
    """Processes by GITEXEC_PROCESS token: one /proc pass shared by every supervisor that
    samples within a short while (reading each process's environment is the costly part)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._at = -1.0
        self._index: dict[str, list[int]] = {}

    def pids(self, token: str, *, fresh: bool = False) -> list[int]:
        if fresh:
            return _scan_environ(PROCESS_VAR).get(token, [])
        with self._lock:
            if time.monotonic() - self._at > _SCAN_MAX_AGE_S:
                self._index = _scan_environ(PROCESS_VAR)
                self._at = time.monotonic()
            return list(self._index.get(token, []))


_TOKENS = _TokenIndex()


def _protected() -> set[int]:
    """This process and its ancestors: never signalled, whatever their environment says."""
    pids = {os.getpid()}
    with contextlib.suppress(psutil.Error):
        pids.update(p.pid for p in psutil.Process().parents())
    return pids


def run_processes(run_id: str, *, within: Path | None = None) -> list[int]:
    """Live processes started for run `run_id` (GITEXEC_RUN in their environment); with
    `within`, only those whose GITEXEC_WORKTREE lies under it (run ids are per
    repository: another repository's run of the same name is not ours)."""
    protected = _protected()
    found = [p for p in _scan_environ(RUN_VAR).get(run_id, []) if p not in protected]
    if within is None:
        return sorted(found)
    prefix = f"{WORKTREE_VAR}={within}/".encode()
    return sorted(p for p in found if _environ_has(p, prefix))


def _environ_has(pid: int, entry_prefix: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read()
    except OSError:
        return False
    return environ.startswith(entry_prefix) or b"\0" + entry_prefix in environ


def kill_run(run_id: str, grace_s: float = 2.0, *, within: Path | None = None) -> list[int]:
    """Kill what is left of run `run_id`'s processes (see run_processes for `within`): at
    the end of a run, and on resume (orphans of a killed engine). SIGTERM, then SIGKILL
    after `grace_s`; the pids found."""
    found = run_processes(run_id, within=within)
    if not found:
        return []
    _signal_each(found, signal.SIGTERM)
    _signal_each(found, signal.SIGCONT)  # a stopped process acts on SIGTERM once continued
    deadline = time.monotonic() + grace_s
    left = found
    while left and time.monotonic() < deadline:
        time.sleep(_TICK_S)
        left = run_processes(run_id, within=within)
    for _ in range(50):  # a process forking while we kill: catch its children too
        if not left:
            break
        _signal_each(left, signal.SIGKILL)
        time.sleep(0.01)
        left = run_processes(run_id, within=within)
    return found


def _signal_each(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
