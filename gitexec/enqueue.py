"""Tickets added to a run that is going (or stopped, or crashed): read, checked like
`check` against the run's own tickets, and described for the journal.

A new ticket may depend on the run's tickets and on tickets completed before the run;
its id must be new to the repository's tickets. The run's base commit does not have its
file, so the journal carries the file's text, and the file is committed onto the
integration branch, where its status is written like any other ticket's.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from gitexec import events as ev
from gitexec import replan
from gitexec.config import Config
from gitexec.errors import UserError
from gitexec.findings import Finding, Severity
from gitexec.merge_queue import MergeQueue
from gitexec.plan import Graph, effective_estimates
from gitexec.project import cross_check
from gitexec.runstate import RunState
from gitexec.scheduler import Scheduler
from gitexec.tickets import TICKETS_DIR, Ticket, parse_ticket


@dataclass(frozen=True)
class NewTicket:
    ticket: Ticket
    text: str


class _Texts:
    """A project source holding just the given files (for positions in findings)."""

    def __init__(self, files: Mapping[str, str]) -> None:
        self.files = files

    def ticket_names(self) -> list[str] | None:
        return [f.rsplit("/", 1)[-1] for f in self.files]

    def problem(self, rel: str) -> str | None:
        return None

    def file_problem(self, rel: str) -> str | None:
        return None

    def read(self, rel: str) -> bytes | None:
        text = self.files.get(rel)
        return None if text is None else text.encode("utf-8")

    def cache_key(self, rel: str) -> tuple[Hashable, bool] | None:
        return None


def check_new(
    items: Sequence[tuple[str, str]],
    *,
    run_tickets: Iterable[Ticket],
    existing_ids: Iterable[str],
    config: Config,
) -> list[NewTicket]:
    """Parse `(file, text)` items as tickets for the run; UserError lists every problem
    (`path:line:col: error: ...`) when any is wrong."""
    taken = set(existing_ids)
    parsed: list[NewTicket] = []
    problems: list[Finding] = []
    for file, text in items:
        rel = f"{TICKETS_DIR}/{file.rsplit('/', 1)[-1]}"  # where it lands: stem == id
        result = parse_ticket(rel, text)
        problems.extend(f for f in result.findings if f.severity is Severity.ERROR)
        if result.ticket is None:
            continue
        if result.ticket.id in taken:
            raise UserError(f"{rel}: ticket {result.ticket.id!r} is already in the repository")
        taken.add(result.ticket.id)
        parsed.append(NewTicket(result.ticket, text))
    if not problems:
        source = _Texts({n.ticket.file: n.text for n in parsed})
        known = [*run_tickets, *(n.ticket for n in parsed)]
        _, findings = cross_check(source, known, config)
        new_files = {n.ticket.file for n in parsed}
        problems.extend(f for f in findings if f.severity is Severity.ERROR and f.path in new_files)
    if problems:
        shown = "\n".join(str(f) for f in sorted(problems)[:20])
        raise UserError(f"cannot add these tickets to the run:\n{shown}")
    if not parsed:
        raise UserError("no tickets to add")
    return parsed


def enqueued_event(n: NewTicket, config: Config, group: int) -> ev.TicketEnqueued:
    t = n.ticket
    return ev.TicketEnqueued(
        ticket=t.id,
        file=t.file,
        text=n.text,
        info=ev.TicketInfo(
            title=t.title,
            file=t.file,
            agent=t.agent or config.default_agent,
            depends_on=t.depends_on,
            group=group,
            estimate_s=t.estimate_s or config.default_estimate_s,
            priority=t.priority,
            paths=t.paths,
            budget_usd=t.budget_usd,
        ),
    )


def replayed_tickets(enqueued: Mapping[str, tuple[str, str]]) -> list[Ticket]:
    """The tickets a journal's `ticket-enqueued` events carry (for resume)."""
    out = []
    for tid, (file, text) in sorted(enqueued.items()):
        ticket = parse_ticket(file, text).ticket
        if ticket is None or ticket.id != tid:
            raise UserError(f"the journal's copy of enqueued ticket {tid} cannot be read")
        out.append(ticket)
    return out


def add_to_run(
    items: Sequence[tuple[str, str]],
    *,
    state: RunState,
    tickets: dict[str, Ticket],
    groups: dict[str, int],
    skipped: Sequence[str],
    config: Config,
    scheduler: Scheduler,
    merges: MergeQueue,
    emit: Callable[[ev.Event], object],
) -> list[str]:
    """Add tickets to a live run: journaled, their files committed onto the integration
    branch, then scheduled like the others. Returns their ids."""
    done = [Ticket(id=t, title=t, file=f"{TICKETS_DIR}/{t}.yaml") for t in skipped]
    new = check_new(
        items,
        run_tickets=[*tickets.values(), *done],
        existing_ids=[*merges.ticket_ids(), *tickets],
        config=config,
    )
    group = max(groups.values(), default=0) + 1
    ids = [n.ticket.id for n in new]
    for n in new:
        emit(enqueued_event(n, config, group))
    merges.commit_files(
        {n.ticket.file: n.text.encode("utf-8") for n in new}, f"gitexec: enqueue {', '.join(ids)}"
    )
    for n in new:
        tickets[n.ticket.id] = n.ticket
        groups[n.ticket.id] = group
    merges.plan_order.extend(ids)
    ranks = ranks_of(list(tickets.values()), config.default_estimate_s)
    replan.add(scheduler, [n.ticket for n in new], ranks=ranks, group=group, done=skipped)
    return ids


def ranks_of(tickets: Sequence[Ticket], default_estimate_s: float) -> dict[str, float]:
    """Each ticket's longest remaining path by estimate (the dispatch tie-break)."""
    graph = Graph(tickets)
    order = graph.topological_order() or list(range(len(graph)))
    rank = graph.bottom_levels(order, effective_estimates(graph, default_estimate_s))
    return {t.id: rank[i] for i, t in enumerate(graph.tickets)}
