"""Integration gates: commands run on the integrated result before merged work counts.

Several merges can be gated together (`gates.every`); when such a batch fails, the batch
is bisected to the first merge whose head fails (merge-queue style), so while gates pass
the cost stays near one gate run per `every` merges.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from gitexec import agents
from gitexec.gitutil import RepoPaths
from gitexec.secrets import Redactor
from gitexec.slot import Slot

OUTPUT_TAIL = 4000


@dataclass(frozen=True)
class GateOutcome:
    ok: bool
    runs: int  # gate runs this took (1 when the batch passes)
    culprit: int | None  # index into the batch of the first failing merge
    output: str  # tail of the failing run's output ("" when it passed)
    cancelled: bool = False


def _tail(path: Path, start: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(start)
            data = f.read()
    except OSError:
        return ""
    return data[-OUTPUT_TAIL:].decode("utf-8", "replace")


class GateRunner:
    """Runs `gates.integration` in a dedicated pooled worktree."""

    def __init__(
        self,
        repo: RepoPaths,
        slot: Slot,
        commands: Sequence[str],
        *,
        log: Path,
        env: Mapping[str, str],
        timeout_s: float | None,
        cancel: threading.Event,
        log_cap: int | None = None,
    ) -> None:
        self.repo = repo
        self.slot = slot
        self.commands = tuple(commands)
        self.log = log
        self.env = dict(env)
        self.timeout_s = timeout_s
        self.cancel = cancel
        self.log_cap = log_cap
        # Gate output lands in logs and reports: secrets are taken out as it is written.
        self.redact = Redactor.from_environ({**os.environ, **self.env}).redact_bytes

    def check(self, head: str) -> tuple[bool, str]:
        """Run every gate command on `head`: (passed, output tail of the failing one)."""
        self.slot.prepare(self.repo, head)
        env = {**self.env, "GITEXEC_GATE_HEAD": head, "GITEXEC_WORKTREE": str(self.slot.path)}
        for command in self.commands:
            start = self.log.stat().st_size if self.log.exists() else 0
            result = agents.run_process(
                ["sh", "-c", command],
                cwd=self.slot.path,
                env=env,
                log=self.log,
                timeout_s=self.timeout_s,
                cancel=self.cancel,
                redact=self.redact,
                log_cap=self.log_cap,
                header=f"=== gate on {head[:12]}: {command}\n",
            )
            if not result.ok:
                why = result.start_error or (
                    "timed out" if result.timed_out else f"exited {result.exit_code}"
                )
                return False, f"gate {command!r} {why}\n{_tail(self.log, start)}"
        return True, ""

    def batch_in_background(
        self,
        heads: Sequence[str],
        *,
        on_run: Callable[[str, bool], None],
        done: Callable[[GateOutcome], None],
    ) -> None:
        """`batch` on a thread of its own; `done` always gets an outcome (an error is a
        failed gate, never lost)."""

        def gate() -> None:
            try:
                outcome = self.batch(heads, on_run)
            except Exception as exc:
                outcome = GateOutcome(False, 1, len(heads) - 1, f"gate error: {exc}")
            done(outcome)

        threading.Thread(target=gate, name="gitexec-gate", daemon=True).start()

    def batch(self, heads: Sequence[str], on_run: Callable[[str, bool], None]) -> GateOutcome:
        """Gate the last head; if it fails, bisect `heads` to the first failing one.

        Assumes what came before heads[0] passed (it was gated already).
        """
        runs = 1
        ok, output = self.check(heads[-1])
        on_run(heads[-1], ok)
        if ok:
            return GateOutcome(True, runs, None, "")
        if self.cancel.is_set():
            return GateOutcome(False, runs, None, output, cancelled=True)
        lo, hi = 0, len(heads) - 1  # heads[hi] fails; everything before lo passes
        failing_output = output
        while lo < hi:
            mid = (lo + hi) // 2
            runs += 1
            ok, output = self.check(heads[mid])
            on_run(heads[mid], ok)
            if self.cancel.is_set():
                return GateOutcome(False, runs, None, output, cancelled=True)
            if ok:
                lo = mid + 1
            else:
                hi, failing_output = mid, output
        return GateOutcome(False, runs, lo, failing_output)
