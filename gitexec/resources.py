"""Watching what agents use: their CPU and memory samples (journaled now and then, not at
the supervisor's pace), the machine's load (a warning once it stays overcommitted), and
the per-agent limits handed to the process supervisor."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from gitexec import events as ev
from gitexec.agentspec import AgentSpec
from gitexec.fields import format_duration
from gitexec.process import Limits, MachineLoad, Sample
from gitexec.runstate import RunState
from gitexec.ticketrun import TicketRun

SAMPLE_EVERY_S = 5.0  # at most one journaled sample per agent this often
LOAD_EVERY_S = 5.0  # how often the engine looks at the machine's load
SUSTAINED_LOAD_S = 30.0  # load above the cores this long is overcommitted
SUSTAINED_MEMORY_S = 5.0  # memory short this long too (it ends in the OOM killer)


def process_limits(agent: AgentSpec) -> Limits | None:
    """The agent's `limits` as the supervisor takes them (None: no limits)."""
    if agent.limits is None:
        return None
    return Limits(memory=agent.limits.memory, cpu=agent.limits.cpu)


class SampleGate:
    """Turns the supervisor's samples (every half second) into AgentSample events at most
    every `every_s` per ticket: the journal is fsynced, a dashboard needs no more."""

    def __init__(
        self, every_s: float = SAMPLE_EVERY_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.every_s = every_s
        self.clock = clock
        self._last: dict[str, float] = {}

    def event(self, ticket: str, sample: Sample) -> ev.AgentSample | None:
        """The event to journal for this sample, or None when one was journaled lately."""
        now = self.clock()
        last = self._last.get(ticket)
        if last is not None and now - last < self.every_s:
            return None
        self._last[ticket] = now
        return ev.AgentSample(
            ticket=ticket,
            cpu_s=round(sample.cpu_s, 3),
            cpu_percent=round(sample.cpu_percent, 1),
            rss_mb=round(sample.rss_mb, 1),
            peak_rss_mb=round(sample.peak_rss_mb, 1),
            processes=sample.processes,
        )

    def forget(self, ticket: str) -> None:
        """The attempt ended: its next attempt's first sample goes through at once."""
        self._last.pop(ticket, None)


class OvercommitWatch:
    """Fed the machine's load every few seconds; says once when the load has stayed above
    the cores for `sustained_s` (or memory has stayed short), with what to do about it."""

    def __init__(
        self,
        sustained_s: float = SUSTAINED_LOAD_S,
        memory_sustained_s: float = SUSTAINED_MEMORY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sustained_s = sustained_s
        self.memory_sustained_s = memory_sustained_s
        self.clock = clock
        self._since: dict[str, float] = {}
        self._said: set[str] = set()

    def feed(self, load: MachineLoad, jobs: int) -> str | None:
        """A warning to show (once per kind of trouble), or None."""
        now = self.clock()
        busy = load.load_1m > load.cores
        short = load.memory_available_mb < load.memory_total_mb / 10
        said = []
        for kind, bad, wait in (
            ("load", busy, self.sustained_s),
            ("memory", short, self.memory_sustained_s),
        ):
            if not bad:
                self._since.pop(kind, None)
                continue
            since = self._since.setdefault(kind, now)
            if now - since >= wait and kind not in self._said:
                self._said.add(kind)
                said.append(kind)
        if not said:
            return None
        what = []
        if "load" in said:
            what.append(
                f"load {load.load_1m:.1f} on {load.cores} cores for over {self.sustained_s:g}s"
            )
        if "memory" in said:
            what.append(
                f"only {load.memory_available_mb:.0f} MiB of {load.memory_total_mb:.0f} MiB "
                "memory available"
            )
        fewer = max(1, jobs - 1)
        return (
            f"the machine is overcommitted ({'; '.join(what)}): agents slow each other down; "
            f"lower `jobs` (git exec adjust --jobs {fewer}, or jobs: in the config)"
        )


# --- showing samples -------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """What a running agent uses now, for the dashboard and `agents`."""

    cpu_percent: float
    rss_mb: float
    processes: int

    def text(self) -> str:
        return f"{self.cpu_percent:.0f}% {_mb(self.rss_mb)}"


def live_usage(state: RunState, t: TicketRun) -> Usage | None:
    """The latest sample of a running agent (None: no agent running, or none sampled yet)."""
    sample = state.samples.get(t.id)
    if sample is None or t.agent_started_at is None or sample.t < t.agent_started_at:
        return None
    return Usage(sample.cpu_percent, sample.rss_mb, sample.processes)


def _mb(mb: float) -> str:
    return f"{mb / 1024:.1f}G" if mb >= 1024 else f"{mb:.0f}M"


def memory_text(mb: float | None) -> str:
    return "-" if mb is None else _mb(mb)


def cpu_text(seconds: float) -> str:
    if seconds <= 0:
        return "-"
    return f"{seconds:.2f}s" if seconds < 10 else format_duration(seconds)


def resource_summary(tickets: Iterable[TicketRun]) -> str | None:
    """The agents' CPU time and the most memory one took ("12.5s CPU; peak memory 2.0G (A)"),
    or None when nothing was measured."""
    ts = list(tickets)
    cpu = sum(t.cpu_s for t in ts)
    peak = max(ts, key=lambda t: t.peak_rss_mb or 0.0, default=None)
    if cpu <= 0 and (peak is None or not peak.peak_rss_mb):
        return None
    text = f"{cpu_text(cpu)} CPU"
    if peak is not None and peak.peak_rss_mb:
        text += f"; peak memory {memory_text(peak.peak_rss_mb)} ({peak.id})"
    return text
