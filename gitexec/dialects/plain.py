"""The `plain` dialect: any command, its exit code decides; the last lines are the summary."""

from __future__ import annotations

from gitexec.dialects.common import _Facts, _tail, _truncate
from gitexec.dialects.values import SUMMARY_CHARS, Report, Status, Usage


class _Plain:
    """Any command: the exit code decides; the last lines of output are the summary."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def line(self, text: str, *, stderr: bool = False) -> None:
        self.lines.append(text)
        del self.lines[:-50]

    def usage(self) -> Usage | None:
        return None

    def cost(self) -> float | None:
        return None

    def model(self) -> str | None:
        return None

    def finish(self, exit_code: int) -> Report:
        facts = _Facts(summary=_truncate(_tail(self.lines, 10), SUMMARY_CHARS))
        if exit_code != 0:
            return facts.exit_failure(exit_code, self.lines)
        return facts.report(Status.SUCCESS)
