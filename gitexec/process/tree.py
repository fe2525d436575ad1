"""A command and everything it started (process group, cgroup, token), signalled and killed
as one, so nothing it started outlives it."""

from __future__ import annotations

import contextlib
import os
import signal
import time

import psutil

from gitexec.process.cgroups import _Cgroup
from gitexec.process.environ import _TOKENS, _signal_each


class _Tree:
    """A command and everything it started: its process group, its cgroup, its token."""

    def __init__(self, pid: int, token: str, cgroup: _Cgroup | None) -> None:
        self.pid = pid
        self.token = token
        self.cgroup = cgroup
        self.root_done = False

    def members(self, *, fresh: bool = False) -> set[int]:
        # The cgroup holds every descendant from the first instruction on; without one, the
        # token finds those that left the session (their environment went with them).
        if self.cgroup is not None:
            pids = set(self.cgroup.pids())
        else:
            pids = set(_TOKENS.pids(self.token, fresh=fresh))
        if not self.root_done:
            pids.add(self.pid)
            if not os.path.isdir("/proc"):
                with contextlib.suppress(psutil.Error):
                    pids.update(p.pid for p in psutil.Process(self.pid).children(recursive=True))
        pids.discard(os.getpid())
        return pids

    def signal(self, sig: int, members: set[int] | None = None) -> None:
        """Send `sig` to every member."""
        if members is None:
            members = self.members(fresh=True)
        if sig == signal.SIGKILL and self.cgroup is not None:
            self.cgroup.kill()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)
        _signal_each(members, sig)
        if sig == signal.SIGTERM:  # a stopped process acts on SIGTERM only once continued
            _signal_each(members, signal.SIGCONT)

    def kill_all(self) -> int:
        """SIGKILL until nothing is left (a member may fork while we kill); how many."""
        killed: set[int] = set()
        quiet = 0
        for _ in range(100):
            left = self.members(fresh=True)
            if not left:
                # Without a cgroup, members are found by their environment, which a process
                # hides for the moment it execs: only a second empty look, a moment later,
                # means nothing is left.
                quiet += 1
                if self.cgroup is not None or quiet >= 2:
                    break
                time.sleep(0.002)
                continue
            quiet = 0
            killed |= left
            self.signal(signal.SIGKILL, left)
            time.sleep(0.002)
        # A process stops showing its environment when it lets go of its memory, a moment
        # before it is dead: wait for that moment.
        deadline = time.monotonic() + 1.0
        while any(not _dead(p) for p in killed) and time.monotonic() < deadline:
            time.sleep(0.001)
        return len(killed)


def _dead(pid: int) -> bool:
    """Is `pid` gone, or a zombie?"""
    try:
        return psutil.Process(pid).status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False
