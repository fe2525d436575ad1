"""Spending limits of a run: when its spend reaches the run's budget nothing new starts,
and a ticket may spend (over all its attempts) at most its own budget.

Spend is what the journal says agents reported (`agent-reported`, and `agent-usage`
while they run), so a crash and `resume` never forget it. A cost nobody knows (tokens
used at no known price) cannot count against a budget: that is said once, loudly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gitexec import events as ev
from gitexec.runmetrics import spend
from gitexec.runstate import RunState
from gitexec.ticketrun import TicketRun

REASON = "budget"


@dataclass
class BudgetWatch:
    """Reads a run's spend from its state (main thread only)."""

    state: RunState
    warned: set[str] = field(default_factory=set)

    @property
    def run_usd(self) -> float | None:
        return self.state.budget_usd

    def spent(self) -> float:
        cost = spend(self.state)["cost_usd"]
        if cost is not None:
            return float(cost)
        return sum(
            c for t in self.state.tickets.values() for c in (t.cost_usd, t.live_cost_usd) if c
        )

    def reached(self) -> ev.BudgetReached | None:
        """The event to journal when the run's spend has reached its budget, else None."""
        limit = self.run_usd
        if limit is None:
            return None
        spent = self.spent()
        if spent < limit:
            return None
        return ev.BudgetReached(
            spent_usd=round(spent, 6), budget_usd=limit, hard=self.state.budget_hard
        )

    def ticket_usd(self, t: TicketRun) -> float | None:
        return t.budget_usd if t.budget_usd is not None else self.state.ticket_budget_usd

    def ticket_left(self, tid: str) -> float | None:
        """What a ticket's next attempt may spend (None: no limit)."""
        t = self.state.tickets[tid]
        limit = self.ticket_usd(t)
        if limit is None:
            return None
        return limit - (t.cost_usd or 0.0)

    def unknown_costs(self) -> list[str]:
        """Once per ticket: a warning that its cost is unknown, while a budget is set."""
        if self.run_usd is None and self.state.ticket_budget_usd is None:
            return []
        out = []
        for t in self.state.tickets.values():
            if t.cost_unknown and t.id not in self.warned:
                self.warned.add(t.id)
                model = f" (model {t.model})" if t.model else ""
                out.append(
                    f"budget: the cost of {t.id}'s agent {t.agent}{model} is unknown and is "
                    "not counted; give its model a price under `pricing:`"
                )
        return out


def notice(reached: ev.BudgetReached) -> str:
    return (
        f"budget reached: ${reached.spent_usd:.4f} of ${reached.budget_usd:.4f} spent; "
        "nothing new starts"
        + (" and running agents are stopped" if reached.hard else ", running tickets finish")
        + "; `git exec resume --budget-usd N` continues with a larger budget"
    )


def over_ticket_budget(spent: float, left: float | None) -> str | None:
    """Why an attempt that has cost `spent` so far must stop, or None."""
    if left is None or spent <= left:
        return None
    return f"{REASON}: the attempt cost ${spent:.4f}, more than the ${max(left, 0):.4f} left"
