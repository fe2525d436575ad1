"""A run, resolved before anything executes: the tickets, the plan, the settings, and
what the scheduler decides by; and the journal's first record, which says all of it."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

from gitexec import events as ev
from gitexec.config import Config
from gitexec.globs import PathSet
from gitexec.plan import NOT_MEASURED, Graph, Measured, effective_estimates
from gitexec.planfile import Plan
from gitexec.quotas import PoolPolicy
from gitexec.refs import integration_ref
from gitexec.scheduler import AgentPolicy, Policy
from gitexec.tickets import Ticket


@dataclass(frozen=True)
class RunSpec:
    """Everything a run needs, resolved and validated before anything is executed."""

    run_id: str
    base: str  # commit id
    base_rev: str
    tickets: tuple[Ticket, ...]  # the tickets to run
    skipped: tuple[str, ...]  # already completed at base
    plan: Plan
    config: Config
    jobs: int
    barrier: bool = False
    allow_overlap: bool = False
    validate: bool = False  # check the final result: registry in sync, gates pass
    measured: Measured = NOT_MEASURED  # estimates from past runs, for tickets without one
    budget_usd: float | None = None  # the run's budget (config budget.run_usd, or --budget-usd)

    def agent_of(self, ticket: Ticket) -> str:
        return ticket.agent or self.config.default_agent

    def ranks(self) -> dict[str, float]:
        """Each ticket's longest remaining path by estimate (the dispatch tie-break)."""
        graph = Graph(self.tickets)
        order = graph.topological_order() or list(range(len(graph)))
        estimates = effective_estimates(graph, self.config.default_estimate_s, self.measured)
        rank = graph.bottom_levels(order, estimates)
        return {t.id: rank[i] for i, t in enumerate(graph.tickets)}


def new_run_id() -> str:
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y%m%d-%H%M%S-") + os.urandom(2).hex()


def policy_for(spec: RunSpec, *, offline: bool = False) -> Policy:
    """What the scheduler decides by, from the configuration and the run's flags."""
    cfg = spec.config
    return Policy(
        agents={
            name: AgentPolicy(a.max_parallel, a.retries, a.fallback)
            for name, a in cfg.agents.items()
        },
        retries=cfg.retries,
        retry_backoff_s=cfg.retry_backoff_s,
        ladder=cfg.merge.on_conflict,
        max_reruns=cfg.merge.max_reruns,
        settled=PathSet(tuple(p for r in cfg.merge.rules for p in r.paths)),
        barrier=spec.barrier,
        allow_overlap=spec.allow_overlap,
        offline=offline,
        pool_of={name: a.quota or name for name, a in cfg.agents.items()},
        pools={name: PoolPolicy(q.max_parallel, q.max_wait_s) for name, q in cfg.quotas.items()},
    )


def start_event(spec: RunSpec, pid: int) -> ev.RunStarted:
    """The journal's first record: everything `resume` needs to take the run over."""
    cfg = spec.config
    groups = spec.plan.group_of()
    ids = {t.id for t in spec.tickets}
    return ev.RunStarted(
        run=spec.run_id,
        pid=pid,
        base=spec.base,
        base_rev=spec.base_rev,
        integration=integration_ref(spec.run_id),
        head=spec.base,
        jobs=spec.jobs,
        strategy=spec.plan.strategy.value,
        merge_order=cfg.merge.order.value,
        barrier=spec.barrier,
        allow_overlap=spec.allow_overlap,
        skipped=spec.skipped,
        groups=tuple(tuple(t for t in g.tickets if t in ids) for g in spec.plan.groups),
        critical_path=spec.plan.critical_path,
        budget_usd=spec.budget_usd,
        ticket_budget_usd=cfg.budget.ticket_usd,
        budget_hard=cfg.budget.hard,
        tickets={
            t.id: ev.TicketInfo(
                title=t.title,
                file=t.file,
                agent=spec.agent_of(t),
                depends_on=t.depends_on,
                group=groups.get(t.id, 0),
                estimate_s=t.estimate_s
                or spec.measured.seconds.get(t.id)
                or cfg.default_estimate_s,
                priority=t.priority,
                paths=t.paths,
                budget_usd=t.budget_usd,
            )
            for t in spec.tickets
        },
    )
