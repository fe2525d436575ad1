"""The scheduling policy in memory: no repositories, no processes, no sleeps.

Each test builds a Scheduler from ticket values, feeds it outcomes with an explicit
clock, and looks at what it selects and which events it emits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from gitexec import events as ev
from gitexec import replan
from gitexec.globs import PathSet
from gitexec.runstate import RunState
from gitexec.scheduler import AgentPolicy, Phase, Policy, Refused, Scheduler
from gitexec.tickets import ConflictStep, Ticket, TicketState

LADDER = tuple(ConflictStep)


def ticket(tid: str, *deps: str, **fields: Any) -> Ticket:
    return Ticket(id=tid, title=tid, file=f".gitexec/tickets/{tid}.yaml", depends_on=deps, **fields)


@dataclass
class Harness:
    scheduler: Scheduler
    events: list[ev.Event] = field(default_factory=list)
    now: float = 0.0

    def select(self, free: int = 99) -> list[str]:
        return self.scheduler.select(self.now, free)

    def start_all(self, free: int = 99) -> list[str]:
        chosen = self.select(free)
        for n, tid in enumerate(chosen):
            self.scheduler.start(tid, n + 1, "base")
        return chosen

    def merge(self, tid: str) -> None:
        self.scheduler.result_ready(tid)
        self.scheduler.merged(tid, awaiting_gate=False)

    def kinds(self, tid: str | None = None) -> list[str]:
        return [
            e.kind
            for e in self.events
            if tid is None or (isinstance(e, ev.TicketEvent) and e.ticket == tid)
        ]

    def finished(self) -> dict[str, tuple[TicketState, str | None]]:
        return {
            e.ticket: (e.state, e.reason) for e in self.events if isinstance(e, ev.TicketFinished)
        }


def harness(
    tickets: Sequence[Ticket],
    *,
    jobs: int = 2,
    ranks: dict[str, float] | None = None,
    groups: dict[str, int] | None = None,
    **policy: Any,
) -> Harness:
    agents = policy.pop("agents", {"shell": AgentPolicy()})
    events: list[ev.Event] = []
    s = Scheduler(
        tickets,
        Policy(agents=agents, **{"ladder": LADDER, **policy}),
        jobs=jobs,
        emit=events.append,
        default_agent="shell",
        ranks=ranks,
        groups=groups,
    )
    return Harness(s, events)


# --- what may start ----------------------------------------------------------------------------


def test_priority_then_longest_remaining_path_then_id() -> None:
    h = harness(
        [ticket("A"), ticket("B", priority=5), ticket("C"), ticket("D")],
        jobs=10,
        ranks={"A": 1, "B": 1, "C": 9, "D": 9},
    )
    assert h.select() == ["B", "C", "D", "A"]


def test_one_spare_beyond_jobs_and_no_more_than_free_slots() -> None:
    h = harness([ticket(t) for t in "ABCDE"], jobs=2)
    assert h.select() == ["A", "B", "C"]  # jobs + 1: the spare's reset overlaps agents
    assert h.select(free=1) == ["A"]
    h.start_all(free=2)
    assert h.select() == ["C"]


def test_dependents_wait_for_merge_and_gate() -> None:
    h = harness([ticket("A"), ticket("B", "A"), ticket("C", "B")])
    assert h.start_all() == ["A"]
    h.scheduler.result_ready("A")
    h.scheduler.merged("A", awaiting_gate=True)
    assert h.select() == []  # merged but not gated: nothing counts on it yet
    h.scheduler.completed("A")
    assert h.select() == ["B"]


def test_max_parallel_per_agent() -> None:
    h = harness(
        [ticket("A", agent="ai"), ticket("B", agent="ai"), ticket("C")],
        jobs=4,
        agents={"ai": AgentPolicy(max_parallel=1), "shell": AgentPolicy()},
    )
    assert h.select() == ["A", "C"]
    h.start_all()
    assert h.select() == []
    h.merge("A")
    assert h.select() == ["B"]


def test_resource_weights_share_capacity() -> None:
    h = harness(
        [
            ticket("A", resources=(("cpu", 2.0),)),
            ticket("B", resources=(("cpu", 1.0),)),
            ticket("C", resources=(("cpu", 1.0),)),
        ],
        jobs=3,
    )
    assert h.select() == ["A", "B"]  # 2 + 1 fills the capacity of 3
    # A heavier ticket than capacity still runs when alone.
    h = harness([ticket("A", resources=(("gpu", 8.0),)), ticket("B", resources=(("gpu", 1.0),))])
    assert h.select() == ["A"]


def test_overlapping_scopes_never_run_together_except_on_settled_paths() -> None:
    tickets = [
        ticket("A", paths=("src/**",)),
        ticket("B", paths=("src/http/client.py",)),
        ticket("C", paths=("docs/**",)),
    ]
    assert harness(tickets, jobs=4).select() == ["A", "C"]
    assert harness(tickets, jobs=4, allow_overlap=True).select() == ["A", "B", "C"]
    changelog = [ticket("A", paths=("CHANGELOG.md",)), ticket("B", paths=("CHANGELOG.md",))]
    settled = harness(changelog, jobs=4, settled=PathSet(("CHANGELOG.md",)))
    assert settled.select() == ["A", "B"]
    assert harness(changelog, jobs=4).select() == ["A"]


def test_barrier_runs_group_by_group() -> None:
    tickets = [ticket("A"), ticket("B"), ticket("C")]
    groups = {"A": 1, "B": 1, "C": 2}
    assert harness(tickets, jobs=4, groups=groups).select() == ["A", "B", "C"]
    h = harness(tickets, jobs=4, groups=groups, barrier=True)
    assert h.start_all() == ["A", "B"]
    h.merge("A")
    assert h.select() == []  # B of group 1 still runs
    h.merge("B")
    assert h.select() == ["C"]


def test_a_sequential_ticket_runs_alone() -> None:
    h = harness([ticket("A"), ticket("B"), ticket("C")], jobs=4)
    replan.make_sequential(h.scheduler, ["B"])
    assert h.start_all() == ["B"]  # nothing else runs: B starts, and nothing beside it
    assert h.select() == []
    h = harness([ticket("A"), ticket("B"), ticket("C")], jobs=4)
    assert h.start_all(free=1) == ["A"]
    replan.make_sequential(h.scheduler, ["B"])
    assert h.select() == []  # A still runs
    h.merge("A")
    assert h.start_all() == ["B"]
    assert h.select() == []  # nothing beside B
    h.merge("B")
    assert h.select() == ["C"]


# --- failures ----------------------------------------------------------------------------------


def test_retry_with_exponential_backoff_then_fallback_then_failed() -> None:
    h = harness(
        [ticket("A"), ticket("B", "A"), ticket("C", "B")],
        agents={"shell": AgentPolicy(retries=1, fallback="other"), "other": AgentPolicy()},
        retry_backoff_s=2.0,
    )
    h.start_all()
    h.scheduler.failed("A", "exit 1", h.now)
    assert h.kinds("A")[-1] == "ticket-retry"
    assert h.select() == []  # backing off
    h.now = 2.0
    assert h.start_all() == ["A"]
    h.scheduler.failed("A", "exit 1", h.now)
    requeued = h.events[-1]
    assert isinstance(requeued, ev.TicketRequeued)
    assert requeued.agent == "other"
    assert "falling back to agent 'other'" in (requeued.reason or "")
    assert h.start_all() == ["A"]
    assert h.scheduler["A"].agent == "other"
    h.scheduler.failed("A", "exit 1", h.now)
    assert h.finished() == {
        "A": (TicketState.FAILED, "exit 1"),
        "B": (TicketState.BLOCKED, "dependency A failed"),
        "C": (TicketState.BLOCKED, "dependency B blocked"),
    }
    assert h.scheduler.stalled() is False


def test_ticket_retries_win_over_agent_and_config() -> None:
    h = harness([ticket("A", retries=0)], agents={"shell": AgentPolicy(retries=3)}, retries=5)
    h.start_all()
    h.scheduler.failed("A", "boom", 0.0)
    assert h.finished() == {"A": (TicketState.FAILED, "boom")}


def test_no_retry_when_not_retryable_or_stopping() -> None:
    h = harness([ticket("A"), ticket("B")], retries=3)
    h.start_all()
    h.scheduler.failed("A", "setup failed", 0.0, retryable=False)
    h.scheduler.stopping = True
    h.scheduler.failed("B", "exit 1", 0.0)
    assert set(h.finished()) == {"A", "B"}


def test_independent_work_continues_after_a_failure() -> None:
    h = harness([ticket("A"), ticket("B"), ticket("C", "A")], jobs=1)
    assert h.start_all(free=1) == ["A"]
    h.scheduler.failed("A", "exit 1", 0.0)
    assert h.select() == ["B"]


# --- the conflict ladder ------------------------------------------------------------------------


def test_conflict_ladder_rerun_then_sequential_then_fail() -> None:
    h = harness([ticket("A"), ticket("B", "A")], max_reruns=1)
    h.start_all()
    h.scheduler.result_ready("A")
    step = h.scheduler.conflicted("A", ["x.txt"], collided_with=["Z"])
    assert step is ConflictStep.RERUN
    attempt = h.scheduler.start(h.select()[0], 1, "head2")
    assert attempt.conflicts == ("x.txt",)  # the rerun is told what collided
    h.scheduler.result_ready("A")
    assert h.scheduler.conflicted("A", ["x.txt"]) is ConflictStep.SEQUENTIAL
    assert h.scheduler["A"].sequential
    h.start_all()
    h.scheduler.result_ready("A")
    assert h.scheduler.conflicted("A", ["x.txt"], text={"x.txt": "<<<"}) is ConflictStep.FAIL
    conflict = [e for e in h.events if isinstance(e, ev.Conflict)][-1]
    assert conflict.text == {"x.txt": "<<<"}
    assert h.finished()["A"] == (TicketState.CONFLICT, "merge conflict in x.txt")
    assert h.finished()["B"][0] is TicketState.BLOCKED
    # A re-run is not a failed attempt.
    assert h.scheduler["A"].failures == 0


def test_ticket_ladder_overrides_and_offline_skips_reruns() -> None:
    h = harness([ticket("A", on_conflict=(ConflictStep.FAIL,))])
    h.start_all()
    assert h.scheduler.conflicted("A", ["f"]) is ConflictStep.FAIL
    offline = harness([ticket("A")], offline=True)
    offline.scheduler.collected("A", "shell", 1)
    assert offline.scheduler.conflicted("A", ["f"], collided_with=["B"]) is ConflictStep.FAIL
    assert offline.finished()["A"] == (
        TicketState.CONFLICT,
        "merge conflict in f (collided with B)",
    )


# --- live changes ------------------------------------------------------------------------------


def test_retry_requeues_the_ticket_and_what_it_blocked() -> None:
    h = harness([ticket("A"), ticket("B", "A"), ticket("C")])
    h.start_all()
    h.scheduler.failed("A", "exit 1", 0.0)
    with pytest.raises(Refused, match="C is running"):
        replan.retry(h.scheduler, "C")
    assert replan.retry(h.scheduler, "A") == ["A", "B"]
    assert h.scheduler["B"].phase is Phase.PENDING
    assert h.scheduler["B"].deps_left == 1
    assert h.select() == ["A"]
    with pytest.raises(Refused, match="no ticket 'Q'"):
        replan.set_priority(h.scheduler, "Q", 1)


def test_priority_and_jobs_change_live() -> None:
    h = harness([ticket("A"), ticket("B"), ticket("C")], jobs=1)
    replan.set_priority(h.scheduler, "C", 9)
    assert h.select() == ["C", "A"]
    h.scheduler.set_jobs(2)
    assert h.select() == ["C", "A", "B"]


def test_stalled_only_when_nothing_can_ever_start() -> None:
    h = harness([ticket("A"), ticket("B", "A")])
    assert not h.scheduler.stalled()
    h.start_all()
    assert not h.scheduler.stalled()
    h.scheduler.records["A"].phase = Phase.DONE  # a bug: done without completing or failing
    assert h.scheduler.stalled()


# --- restore -----------------------------------------------------------------------------------


def replay_of(h: Harness, tickets: Sequence[Ticket]) -> RunState:
    """The run state a journal of `h`'s events would give."""
    state = RunState("r")
    state.apply(
        ev.RunStarted(
            run="r",
            base="base",
            integration="refs/heads/gitexec/r",
            head="base",
            jobs=2,
            tickets={
                t.id: ev.TicketInfo(title=t.title, agent="shell", depends_on=t.depends_on)
                for t in tickets
            },
        )
    )
    for e in h.events:
        state.apply(e)
    return state


def test_restore_rebuilds_scheduling_from_the_journal() -> None:
    tickets = [ticket("A"), ticket("B", "A"), ticket("C"), ticket("D"), ticket("E", "C")]
    agents = {"shell": AgentPolicy(retries=2), "other": AgentPolicy()}
    h = harness(tickets, jobs=4, agents=agents)
    assert h.start_all() == ["A", "C", "D"]  # B and E wait for their dependencies
    h.merge("A")
    h.events.append(ev.TicketMerged(ticket="A", head="h1"))
    h.scheduler.failed("C", "exit 1", 0.0)  # a retry: one failure counted
    replan.set_priority(h.scheduler, "E", 7)
    h.events.append(ev.Control(action="priority", ticket="E", priority=7))
    changed = replan.make_sequential(h.scheduler, ["E"])
    h.events.append(ev.Control(action="fallback-sequential", group=2, tickets=tuple(changed)))
    state = replay_of(h, tickets)

    again = harness(tickets, jobs=4, agents=agents)
    replan.restore(again.scheduler, state.tickets)
    r = again.scheduler
    assert r["A"].phase is Phase.DONE and r["A"].outcome is TicketState.COMPLETED
    assert r["B"].deps_left == 0  # A's merge counts
    assert r["C"].failures == 1 and r["C"].phase is Phase.PENDING
    assert r["D"].phase is Phase.PENDING  # interrupted: starts over
    assert r["E"].priority == 7  # a live priority change survives resume
    assert r["E"].sequential  # fallback-sequential of a ticket not yet dispatched survives
    assert r["E"].deps_left == 1


def test_restore_keeps_results_and_ungated_merges_with_the_merge_queue() -> None:
    tickets = [ticket("A"), ticket("B"), ticket("C", "A")]
    h = harness(tickets, jobs=4)
    h.start_all()
    h.scheduler.result_ready("A")
    h.events.append(ev.TicketCommitted(ticket="A", commit="c1"))
    h.events.append(ev.WorkDone(ticket="A", ok=True))
    h.events.append(ev.TicketCommitted(ticket="B", commit="c2"))
    h.events.append(ev.WorkDone(ticket="B", ok=True))
    h.events.append(ev.TicketMerged(ticket="B", head="h1", awaiting_gate=True))
    again = harness(tickets, jobs=4)
    replan.restore(again.scheduler, replay_of(h, tickets).tickets)
    assert again.scheduler["B"].phase is Phase.MERGING  # gated again before it counts
    assert again.scheduler["C"].deps_left == 1
    assert again.select() == []  # A's result is merged as it is: its agent does not rerun
    assert again.scheduler.take_kept() == [("A", "base", "c1")]
    assert again.scheduler["A"].phase is Phase.MERGING


def test_kept_results_wait_for_their_dependencies() -> None:
    """Both results were cut off from the branch (resume --onto current): A merges first."""
    h = harness([ticket("A"), ticket("B", "A")])
    h.start_all()
    h.scheduler.stopped_kept("A", "base", "c1", "stopped")
    h.scheduler["B"].kept = ("h1", "c2")
    assert h.select() == []  # neither reruns its agent
    assert h.scheduler.take_kept() == [("A", "base", "c1")]
    assert h.scheduler.take_kept() == []  # B waits for A's merge
    h.scheduler.merged("A", awaiting_gate=False)
    assert h.scheduler.take_kept() == [("B", "h1", "c2")]
