"""Running one command to its end: `run_process` starts it, watches timeout and cancel,
samples it, then kills whatever it left and notes in the log what happened."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from gitexec.process.metrics import _Meter
from gitexec.process.output import _CappedLog, _Pump, _SafeRedact
from gitexec.process.spawn import Launch, _cannot_run, _start_error
from gitexec.process.tree import _Tree
from gitexec.process.values import (
    _TICK_S,
    DEFAULT_LOG_CAP,
    KILL_GRACE_S,
    SAMPLE_EVERY_S,
    Limits,
    ProcessResult,
    Sample,
    _MiB,
)

_DRAIN_S = 2.0  # output still read after everything was killed


class _Waiter(threading.Thread):
    """Waits for exactly one child (never any other: others' wait statuses stay theirs)."""

    def __init__(self, pid: int) -> None:
        super().__init__(name="gitexec-wait", daemon=True)
        self.pid = pid
        self.done = threading.Event()
        self.code = 255
        self.cpu_s = 0.0
        self.maxrss = 0
        self.lost = False

    def run(self) -> None:
        try:
            _, status, usage = os.wait4(self.pid, 0)
            self.code = os.waitstatus_to_exitcode(status)
            # Its own time plus that of every descendant it waited for.
            self.cpu_s = usage.ru_utime + usage.ru_stime
            self.maxrss = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
        except ChildProcessError:
            self.lost = True
        finally:
            self.done.set()


def run_process(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    log: Path,
    timeout_s: float | None,
    cancel: threading.Event | None = None,
    on_start: Callable[[int, int], None] | None = None,
    header: str | None = None,
    grace_s: float = KILL_GRACE_S,
    stdin: bytes | None = None,
    redact: Callable[[bytes], bytes] | None = None,
    log_cap: int | None = DEFAULT_LOG_CAP,
    on_output: Callable[[bytes], None] | None = None,
    on_sample: Callable[[Sample], None] | None = None,
    sample_every_s: float = SAMPLE_EVERY_S,
    limits: Limits | None = None,
    launch: Launch | None = None,
) -> ProcessResult:
    """Run `argv` in `cwd` with `env` added to the (GIT_*-scrubbed) environment; its output
    (stdout and stderr) is appended to `log`, after `header`.

    `stdin` is fed to the command (None: /dev/null). `redact` rewrites whole lines before
    they reach the log; `on_output` sees the raw output as it comes; the log keeps at most
    `log_cap` bytes of it (head and tail). `on_sample` gets resource samples every
    `sample_every_s`. On timeout or cancel: SIGTERM to everything the command started,
    SIGKILL after `grace_s`. Whatever it leaves running when it exits is killed.
    Callbacks run on supervising threads and must be quick. `launch`: its start, begun
    earlier with the same cwd, env, limits and stdin (see `Launch`); by default begun here.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    if launch is None:
        launch = Launch(cwd, env, limits, with_stdin=stdin is not None)
    assert launch.with_stdin == (stdin is not None), "the launch was made for other input"
    full_env = launch.env
    with log.open("a+b", buffering=0) as out:
        if header:
            out.write(header.encode("utf-8", "replace"))
        proc: subprocess.Popen[bytes] | None = None
        error = _cannot_run(argv, cwd, full_env)
        if error is None:
            try:
                proc = launch.start(argv)
            except (OSError, ValueError, subprocess.SubprocessError) as exc:
                error = _start_error(exc, argv, cwd, full_env)
        warnings = launch.warnings
        if proc is None:
            launch.abandon()
            _notes(out, [*(f"warning: {w}" for w in warnings), f"cannot start: {error}"])
            duration = time.monotonic() - start
            return ProcessResult(127, False, False, duration, error, warnings=tuple(warnings))
        _notes(out, [f"warning: {w}" for w in warnings])
        watch = _Watch(
            timeout_s=timeout_s,
            cancel=cancel,
            on_start=on_start,
            grace_s=grace_s,
            stdin=stdin,
            redact=redact,
            log_cap=log_cap,
            on_output=on_output,
            on_sample=on_sample,
            sample_every_s=sample_every_s,
        )
        tree = _Tree(proc.pid, launch.token, launch.cgroup)
        return _supervise(proc, tree, out, start, watch, warnings)


def _notes(out: BinaryIO, lines: Iterable[str]) -> None:
    for line in lines:
        out.write(f"gitexec: {line}\n".encode("utf-8", "replace"))


@dataclass(frozen=True)
class _Watch:
    """What run_process was asked to do while the command runs."""

    timeout_s: float | None
    cancel: threading.Event | None
    on_start: Callable[[int, int], None] | None
    grace_s: float
    stdin: bytes | None
    redact: Callable[[bytes], bytes] | None
    log_cap: int | None
    on_output: Callable[[bytes], None] | None
    on_sample: Callable[[Sample], None] | None
    sample_every_s: float


def _supervise(
    proc: subprocess.Popen[bytes],
    tree: _Tree,
    out: BinaryIO,
    start: float,
    watch: _Watch,
    warnings: list[str],
) -> ProcessResult:
    """Watch a started command to its end, then clean up after it."""
    noted = len(warnings)  # logged already
    assert proc.stdout is not None
    # The pump owns the pipe fds from here; the Popen object must not close them again.
    out_fd = os.dup(proc.stdout.fileno())
    proc.stdout.close()
    in_fd = None
    if proc.stdin is not None:
        in_fd = os.dup(proc.stdin.fileno())
        proc.stdin.close()
    capped = _CappedLog(out, watch.log_cap)
    redact = _SafeRedact(watch.redact) if watch.redact is not None else None
    pump = _Pump(out_fd, in_fd, watch.stdin or b"", capped, redact, watch.on_output)
    waiter = _Waiter(proc.pid)
    meter = _Meter(tree, start)
    on_sample = watch.on_sample
    pump.start()
    waiter.start()
    timed_out = cancelled = killed = False
    terminated_at: float | None = None
    try:
        if watch.on_start is not None:
            watch.on_start(proc.pid, proc.pid)
        deadline = start + watch.timeout_s if watch.timeout_s else None
        next_sample = start + watch.sample_every_s
        while not waiter.done.wait(_TICK_S):
            now = time.monotonic()
            if terminated_at is None:
                timed_out = deadline is not None and now >= deadline
                cancelled = not timed_out and watch.cancel is not None and watch.cancel.is_set()
                if timed_out or cancelled:
                    tree.signal(signal.SIGTERM)
                    terminated_at = now
            elif not killed and now - terminated_at >= watch.grace_s:
                tree.signal(signal.SIGKILL)
                killed = True
            if now >= next_sample:
                next_sample = now + watch.sample_every_s
                sample = meter.sample()
                if on_sample is not None:
                    try:
                        on_sample(sample)
                    except Exception as exc:
                        on_sample = None
                        warnings.append(f"sample callback failed: {exc!r}")
    finally:
        # Whatever happened (even an exception here), nothing the command started lives on.
        if not waiter.done.is_set():
            tree.signal(signal.SIGKILL)
            waiter.done.wait()
        tree.root_done = True
        proc.returncode = waiter.code  # reaped by the waiter, not by Popen
        leftovers = tree.kill_all()
        pump.finish(_DRAIN_S)
        dropped = capped.close()
        oom = False
        if tree.cgroup is not None:
            meter.cpu_s = max(meter.cpu_s, tree.cgroup.cpu_s() or 0.0)
            oom = tree.cgroup.oom_killed()
            tree.cgroup.remove()

    warnings.extend(pump.warnings)
    if redact is not None and redact.error is not None:
        warnings.append(f"redaction failed ({redact.error}): the rest of the output was withheld")
    if waiter.lost:
        warnings.append("exit status lost: something else in this process reaped the command")
    if pump.abandoned:
        warnings.append("output still open after everything the command started was killed")
    notes = []
    if timed_out or cancelled:
        how = f"timed out after {watch.timeout_s:g}s" if timed_out else "stopped"
        kill = f"SIGKILL after {watch.grace_s:g}s" if killed else "SIGTERM"
        out.write(b"\n")
        notes.append(f"{how}; killed the command and everything it started ({kill})")
    elif leftovers:
        notes.append(f"killed {leftovers} process(es) the command left running")
    if dropped:
        notes.append(f"{dropped} bytes of output were dropped from this log (log cap)")
    if oom:
        notes.append("killed: memory limit reached")
    _notes(out, [*notes, *(f"warning: {w}" for w in warnings[noted:])])
    return ProcessResult(
        exit_code=waiter.code,
        timed_out=timed_out,
        cancelled=cancelled,
        duration_s=time.monotonic() - start,
        cpu_s=max(meter.cpu_s, waiter.cpu_s),
        peak_rss_mb=max(meter.peak_rss, waiter.maxrss) / _MiB,
        leftovers=leftovers,
        dropped_bytes=dropped,
        oom_killed=oom,
        warnings=tuple(warnings),
    )
