"""Supervised processes (agents, validation commands, gates): each runs in its own session, with
a token and a cgroup of its own, its output redacted and capped; nothing it started outlives it."""

from __future__ import annotations

from gitexec.process.environ import kill_run, run_processes
from gitexec.process.metrics import MachineLoad, machine_load
from gitexec.process.spawn import Launch
from gitexec.process.supervise import run_process
from gitexec.process.values import (
    DEFAULT_LOG_CAP,
    KILL_GRACE_S,
    PROCESS_VAR,
    RUN_VAR,
    SAMPLE_EVERY_S,
    WORKTREE_VAR,
    Limits,
    ProcessResult,
    Sample,
)

__all__ = [
    "DEFAULT_LOG_CAP",
    "KILL_GRACE_S",
    "PROCESS_VAR",
    "RUN_VAR",
    "SAMPLE_EVERY_S",
    "WORKTREE_VAR",
    "Launch",
    "Limits",
    "MachineLoad",
    "ProcessResult",
    "Sample",
    "kill_run",
    "machine_load",
    "run_process",
    "run_processes",
]
