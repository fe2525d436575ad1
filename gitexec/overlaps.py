"""Live overlap detection: what running agents have changed so far, compared with each other
and with what merged since each started, so collisions show before they become conflicts.

Paths a merge rule settles (a CHANGELOG merged by `union`) never count: they merge
cleanly whoever touches them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from gitexec import events as ev
from gitexec.errors import CommandError
from gitexec.globs import PathSet
from gitexec.tickets import Ticket

ENGINE_DIR = ".gitexec"


class Worktree(Protocol):
    def touched_now(self) -> set[str]: ...


class Running(Protocol):
    """An attempt in flight (worker.Job)."""

    @property
    def ticket(self) -> Ticket: ...
    @property
    def slot(self) -> Worktree: ...
    @property
    def base(self) -> str: ...


def overlapping(a: set[str], b: set[str]) -> set[str]:
    """Paths in both sets, a directory counting for everything below it."""
    common = a & b
    for x, others in ((a, b), (b, a)):
        for path in x:
            prefix = path + "/"
            common.update(p for p in others if p.startswith(prefix))
    return common


@dataclass
class OverlapWatch:
    settled: PathSet
    _reported: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)

    def check_slots(
        self,
        running: Iterable[Running],
        merged_since: Callable[[str], list[tuple[str, frozenset[str]]]],
    ) -> list[ev.Overlap]:
        """Ask each running attempt's worktree what it changed so far, then `check`."""
        touched: dict[str, set[str]] = {}
        bases: dict[str, str] = {}
        for r in running:
            try:
                paths = r.slot.touched_now()
            except (CommandError, OSError):
                continue  # a worktree mid-change: ask again next time
            touched[r.ticket.id] = {p for p in paths if not p.startswith(ENGINE_DIR)}
            bases[r.ticket.id] = r.base
        return self.check(touched, bases, merged_since)

    def check(
        self,
        touched: Mapping[str, set[str]],
        bases: Mapping[str, str],
        merged_since: Callable[[str], list[tuple[str, frozenset[str]]]],
    ) -> list[ev.Overlap]:
        """New overlaps among running tickets (`touched`: their changed paths so far;
        `bases`: the head each started from)."""
        touched = {
            tid: {p for p in paths if not self.settled.matches(p)} for tid, paths in touched.items()
        }
        found: dict[tuple[str, str], set[str]] = {}
        ids = sorted(touched)
        for n, a in enumerate(ids):
            for b in ids[n + 1 :]:
                common = overlapping(touched[a], touched[b])
                if common:
                    found[(a, b)] = common
            for landed, changed in merged_since(bases[a]):
                common = overlapping(touched[a], set(changed))
                if common:
                    found.setdefault((a, landed), set()).update(common)
        new: list[ev.Overlap] = []
        for pair, paths in sorted(found.items()):
            frozen = frozenset(paths)
            if self._reported.get(pair) == frozen:
                continue
            self._reported[pair] = frozen
            new.append(
                ev.Overlap(
                    tickets=pair,
                    paths=tuple(sorted(paths)[:50]),
                    against="running" if pair[1] in touched else "merged",
                )
            )
        return new
