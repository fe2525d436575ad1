"""Reading what an agent CLI printed into an outcome (success, failure or throttled), usage and
cost, as exit codes alone do not tell. Pure: no processes, no files; the caller hands in bytes."""

from __future__ import annotations

from gitexec.dialects.reader import Reader, parse, price_of
from gitexec.dialects.values import REASON_CHARS as REASON_CHARS
from gitexec.dialects.values import SUMMARY_CHARS as SUMMARY_CHARS
from gitexec.dialects.values import Dialect, Price, Report, Status, Usage

__all__ = [
    "Dialect",
    "Price",
    "Reader",
    "Report",
    "Status",
    "Usage",
    "parse",
    "price_of",
]
