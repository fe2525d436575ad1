"""Resource use: samples of a command tree while it runs, and the machine's load for
overcommit warnings."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import psutil

from gitexec.process.tree import _Tree
from gitexec.process.values import Sample, _MiB


@dataclass(frozen=True)
class MachineLoad:
    """Load average, usable cores and memory of this machine, for overcommit warnings."""

    load_1m: float
    load_5m: float
    load_15m: float
    cores: int
    memory_total_mb: float
    memory_available_mb: float

    def overcommitted(self) -> str | None:
        """What is overloaded right now, or None (the caller decides how long is too long)."""
        problems = []
        if self.load_1m > self.cores:
            problems.append(f"load {self.load_1m:.1f} on {self.cores} cores")
        if self.memory_available_mb < self.memory_total_mb / 10:
            problems.append(
                f"{self.memory_available_mb:.0f} MiB of {self.memory_total_mb:.0f} MiB "
                "memory available"
            )
        return "; ".join(problems) or None


def machine_load() -> MachineLoad:
    """This machine's load now."""
    load = os.getloadavg()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        cores = os.cpu_count() or 1
    memory = psutil.virtual_memory()
    return MachineLoad(
        load[0], load[1], load[2], cores, memory.total / _MiB, memory.available / _MiB
    )


class _Meter:
    """Samples the CPU time and resident memory of a tree."""

    def __init__(self, tree: _Tree, start: float) -> None:
        self.tree = tree
        self.start = start
        self.cpu_s = 0.0
        self.peak_rss = 0
        self._last = (start, 0.0)

    def sample(self) -> Sample:
        cpu = 0.0
        rss = 0
        members = self.tree.members()
        count = 0
        for pid in members:
            try:
                proc = psutil.Process(pid)
                with proc.oneshot():
                    times = proc.cpu_times()
                    rss += proc.memory_info().rss
            except (psutil.Error, OSError):
                continue
            count += 1
            # Children already reaped by a member moved their time into it.
            cpu += times.user + times.system + times.children_user + times.children_system
        if self.tree.cgroup is not None:
            cpu = max(cpu, self.tree.cgroup.cpu_s() or 0.0)
        now = time.monotonic()
        self.cpu_s = max(self.cpu_s, cpu)  # an escaped process reaped by init takes its time
        self.peak_rss = max(self.peak_rss, rss)
        last_at, last_cpu = self._last
        percent = 100 * (self.cpu_s - last_cpu) / (now - last_at) if now > last_at else 0.0
        self._last = (now, self.cpu_s)
        return Sample(
            elapsed_s=now - self.start,
            cpu_s=self.cpu_s,
            cpu_percent=percent,
            rss_mb=rss / _MiB,
            peak_rss_mb=self.peak_rss / _MiB,
            processes=count,
        )
