"""What running a command takes and gives: its limits, its resource samples, its result, and
the settings and environment variables the supervisor shares."""

from __future__ import annotations

from dataclasses import dataclass

KILL_GRACE_S = 5.0
DEFAULT_LOG_CAP = 50 * 1024 * 1024
SAMPLE_EVERY_S = 0.5
PROCESS_VAR = "GITEXEC_PROCESS"
RUN_VAR = "GITEXEC_RUN"
WORKTREE_VAR = "GITEXEC_WORKTREE"

_TICK_S = 0.05  # how often timeouts and cancel are checked
_MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Resource limits for one command: bytes of memory, CPU cores (cgroup v2 only)."""

    memory: int | None = None
    cpu: float | None = None


@dataclass(frozen=True)
class Sample:
    """Resource use of a command and everything it started, at one moment."""

    elapsed_s: float
    cpu_s: float  # user + system, cumulative
    cpu_percent: float  # since the previous sample; 100 = one core
    rss_mb: float
    peak_rss_mb: float
    processes: int


@dataclass(frozen=True)
class ProcessResult:
    """How a supervised command ended, and what it used."""

    exit_code: int
    timed_out: bool
    cancelled: bool
    duration_s: float
    start_error: str | None = None  # it never ran: why ("command not found: x")
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    leftovers: int = 0  # processes still running when it exited, then killed
    dropped_bytes: int = 0  # output left out of the log by the cap
    oom_killed: bool = False  # its memory limit was reached
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.cancelled
