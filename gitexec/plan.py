"""The ticket DAG and execution plans: strategies, critical path, estimates, simulated schedules;
O(n log n) or better in tickets and dependencies, so a plan of 100,000 tickets takes seconds."""

from __future__ import annotations

import gc
import heapq
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from gitexec.config import Strategy
from gitexec.globs import literal_prefix, pathsets_may_overlap
from gitexec.planfile import Plan, PlanGroup, fingerprint
from gitexec.quotas import QuotaPools
from gitexec.scheduler import AgentPolicy, Policy, fits
from gitexec.tickets import Ticket, TicketState

# --- the graph -----------------------------------------------------------------------------


class Graph:
    """Tickets as integer nodes, sorted by id; edges only to known, non-self dependencies."""

    def __init__(self, tickets: Iterable[Ticket]) -> None:
        self.tickets: list[Ticket] = sorted(tickets, key=lambda t: t.id)
        self.index: dict[str, int] = {t.id: i for i, t in enumerate(self.tickets)}
        n = len(self.tickets)
        self.deps: list[list[int]] = [[] for _ in range(n)]
        self.dependents: list[list[int]] = [[] for _ in range(n)]
        for i, t in enumerate(self.tickets):
            for dep in t.depends_on:
                j = self.index.get(dep)
                if j is not None and j != i:
                    self.deps[i].append(j)
                    self.dependents[j].append(i)

    def __len__(self) -> int:
        return len(self.tickets)

    def topological_order(self) -> list[int] | None:
        """Kahn's algorithm, smallest id first among ready nodes; None when there is a cycle."""
        indeg = [len(d) for d in self.deps]
        ready = [i for i, d in enumerate(indeg) if d == 0]
        heapq.heapify(ready)
        order: list[int] = []
        while ready:
            i = heapq.heappop(ready)
            order.append(i)
            for j in self.dependents[i]:
                indeg[j] -= 1
                if indeg[j] == 0:
                    heapq.heappush(ready, j)
        return order if len(order) == len(self.tickets) else None

    def cycles(self) -> list[list[str]]:
        """One cycle per strongly connected component, as [A, B, C, A] (A = smallest id)."""
        found: list[list[str]] = []
        for component in self._strong_components():
            if len(component) < 2:
                continue
            members = set(component)
            start = min(component)
            # Walk dependency edges inside the component until we return to a node seen.
            path, seen, node = [start], {start: 0}, start
            while True:
                node = min(j for j in self.deps[node] if j in members)
                if node in seen:
                    cycle = [*path[seen[node] :], node]
                    break
                seen[node] = len(path)
                path.append(node)
            # Rotate so the smallest id leads, for a stable message.
            ring = cycle[:-1]
            k = ring.index(min(ring))
            ring = ring[k:] + ring[:k]
            found.append([self.tickets[i].id for i in [*ring, ring[0]]])
        return sorted(found)

    def _strong_components(self) -> list[list[int]]:
        """Tarjan's algorithm, iterative (no recursion limit at 100,000 tickets)."""
        n = len(self.tickets)
        index = [-1] * n
        low = [0] * n
        on_stack = [False] * n
        stack: list[int] = []
        out: list[list[int]] = []
        counter = 0
        for root in range(n):
            if index[root] != -1:
                continue
            work = [(root, 0)]
            while work:
                v, pos = work.pop()
                if pos == 0:
                    index[v] = low[v] = counter
                    counter += 1
                    stack.append(v)
                    on_stack[v] = True
                edges = self.deps[v]
                if pos < len(edges):
                    work.append((v, pos + 1))
                    w = edges[pos]
                    if index[w] == -1:
                        work.append((w, 0))
                    elif on_stack[w]:
                        low[v] = min(low[v], index[w])
                    continue
                if low[v] == index[v]:
                    component = []
                    while True:
                        w = stack.pop()
                        on_stack[w] = False
                        component.append(w)
                        if w == v:
                            break
                    out.append(component)
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[v])
        return out

    def bottom_levels(self, order: Sequence[int], estimates: Sequence[float]) -> list[float]:
        """Longest remaining path from each ticket to the end, including the ticket itself."""
        rank = list(estimates)
        for i in reversed(order):
            if self.dependents[i]:
                rank[i] = estimates[i] + max(rank[j] for j in self.dependents[i])
        return rank

    def critical_path(self, rank: Sequence[float]) -> list[str]:
        """Follow the largest remaining path from the heaviest root (ties: smallest id)."""
        roots = [i for i, d in enumerate(self.deps) if not d]
        if not roots:
            return []
        node = min(roots, key=lambda i: (-rank[i], i))
        path = [node]
        while self.dependents[node]:
            node = min(self.dependents[node], key=lambda j: (-rank[j], j))
            path.append(node)
        return [self.tickets[i].id for i in path]


# --- plans ---------------------------------------------------------------------------------


class CycleError(Exception):
    def __init__(self, cycles: list[list[str]]) -> None:
        super().__init__("; ".join(" -> ".join(c) for c in cycles))
        self.cycles = cycles


def positions(n: int, key: Callable[[int], tuple[float, ...]]) -> tuple[list[int], list[int]]:
    """(position of each ticket in `key` order, ticket at each position).

    Heaps of plain ints compare far faster than heaps of key tuples; this is the one sort.
    """
    order = sorted(range(n), key=key)
    pos = [0] * n
    for p, i in enumerate(order):
        pos[i] = p
    return pos, order


@dataclass(frozen=True)
class Measured:
    """Estimates learned from past runs (history.py) for tickets that declare none, by
    ticket id; `from_agent` names those that only have their agent's average."""

    seconds: Mapping[str, float] = field(default_factory=dict)
    from_agent: frozenset[str] = frozenset()


NOT_MEASURED = Measured()


def effective_estimates(
    graph: Graph, default_estimate_s: float, measured: Measured = NOT_MEASURED
) -> list[float]:
    """Each ticket's estimate: its own, else what past runs measured, else the default."""
    known = measured.seconds
    return [
        t.estimate_s if t.estimate_s is not None else known.get(t.id, default_estimate_s)
        for t in graph.tickets
    ]


def make_plan(
    tickets: Iterable[Ticket],
    strategy: Strategy,
    jobs: int,
    default_estimate_s: float,
    measured: Measured = NOT_MEASURED,
    constraints: Constraints | None = None,
    *,
    estimate: bool = True,
) -> Plan:
    """Group tickets for parallel execution; raise CycleError when the DAG has a cycle.

    `measured` estimates stand in for missing ones in the estimate and the critical path,
    never in the groups or the fingerprint: the groups a run merges in (`merge.order:
    plan`) depend on the tickets alone, not on what this clone happened to run before.
    The estimate simulates the run: with `constraints`, under the scheduler's own rule of
    what may run side by side; tickets already completed take no time. Without `estimate`
    (a run needs only groups and critical path) nothing is simulated: makespan 0."""
    # Planning allocates millions of small lists and tuples that all stay alive until the
    # end: the cyclic garbage collector would only rescan them (a third of the time at
    # 100,000 tickets).
    paused = gc.isenabled()
    gc.disable()
    try:
        return _make_plan(
            tickets, strategy, jobs, default_estimate_s, measured, constraints, estimate
        )
    finally:
        if paused:
            gc.enable()


def _make_plan(
    tickets: Iterable[Ticket],
    strategy: Strategy,
    jobs: int,
    default_estimate_s: float,
    measured: Measured,
    constraints: Constraints | None,
    estimate: bool,
) -> Plan:
    graph = Graph(tickets)
    order = graph.topological_order()
    if order is None:
        raise CycleError(graph.cycles())
    est = effective_estimates(graph, default_estimate_s)
    rank = graph.bottom_levels(order, est)
    used = [t.id for t in graph.tickets if t.estimate_s is None and t.id in measured.seconds]
    if used:
        est = effective_estimates(graph, default_estimate_s, measured)
        learned_rank = graph.bottom_levels(order, est)
    else:
        learned_rank = rank
    prio = [t.priority for t in graph.tickets]

    if strategy is Strategy.MAX_PARALLEL:
        groups = _levels(graph, order)
    else:

        def key(i: int) -> tuple[float, ...]:
            if strategy is Strategy.CRITICAL_PATH:
                return (-rank[i], -prio[i], i)
            return (-prio[i], -rank[i], i)

        cap = max(1, jobs // 2) if strategy is Strategy.CONSERVATIVE else jobs
        groups = _list_groups(
            graph,
            key,
            cap,
            even=strategy in (Strategy.BALANCED, Strategy.CONSERVATIVE),
            separate_overlaps=strategy is Strategy.CONSERVATIVE,
        )

    done = [i for i, t in enumerate(graph.tickets) if t.status is TicketState.COMPLETED]
    left = list(est)
    for i in done:
        left[i] = 0.0
    total = sum(left)
    makespan, barrier = 0.0, None
    if estimate:
        rule = fit_rule(graph, constraints, jobs)
        makespan = simulate(
            graph, est, jobs, key=lambda i: (-prio[i], -learned_rank[i], i), done=done, fits=rule
        )
        barrier = round(barrier_makespan(groups, left, jobs), 1)
    return Plan(
        barrier_makespan_s=barrier,
        strategy=strategy,
        jobs=jobs,
        fingerprint=fingerprint(graph.tickets, default_estimate_s),
        critical_path=tuple(graph.critical_path(learned_rank)),
        makespan_s=round(makespan, 1),
        parallelism=round(total / makespan, 2) if makespan > 0 else 1.0,
        groups=tuple(
            PlanGroup(n + 1, tuple(sorted(graph.tickets[i].id for i in g)))
            for n, g in enumerate(groups)
        ),
        measured=tuple(t for t in used if t not in measured.from_agent),
        agent_average=tuple(t for t in used if t in measured.from_agent),
    )


def _levels(graph: Graph, order: Sequence[int]) -> list[list[int]]:
    """ASAP levels: every ticket in the first group after all of its dependencies."""
    level = [0] * len(graph)
    for i in order:
        if graph.deps[i]:
            level[i] = 1 + max(level[j] for j in graph.deps[i])
    groups: list[list[int]] = [[] for _ in range(max(level, default=-1) + 1)]
    for i in order:
        groups[level[i]].append(i)
    return groups


# How far down the ready list the conservative strategy looks for a ticket that does not
# overlap the group being built; bounds the work per group so planning stays near-linear.
_OVERLAP_LOOKAHEAD = 64
_KNOWN_CONFLICT_STREAK = 8


def _list_groups(
    graph: Graph,
    key: Callable[[int], tuple[float, ...]],
    cap: int,
    *,
    even: bool,
    separate_overlaps: bool,
) -> list[list[int]]:
    pos, at = positions(len(graph), key)
    indeg = [len(d) for d in graph.deps]
    ready = [pos[i] for i, d in enumerate(indeg) if d == 0]
    heapq.heapify(ready)
    overlaps: dict[tuple[tuple[str, ...], tuple[str, ...]], bool] = {}

    def collide(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
        found = overlaps.get((a, b))
        if found is None:
            found = overlaps[(a, b)] = bool(pathsets_may_overlap(a, b))
        return found

    groups: list[list[int]] = []
    while ready:
        size = cap
        if even:
            # Spread what is ready now evenly over the groups it needs: 5 ready with 4 slots
            # gives 3 + 2, not 4 + 1.
            size = math.ceil(len(ready) / math.ceil(len(ready) / cap))
        chosen: list[int] = []
        skipped: list[int] = []
        blocked_scopes: set[tuple[str, ...]] = set()
        streak = 0
        while ready and len(chosen) < size and len(skipped) < _OVERLAP_LOOKAHEAD:
            p = heapq.heappop(ready)
            i = at[p]
            paths = graph.tickets[i].paths
            if separate_overlaps and paths:
                if paths in blocked_scopes:
                    skipped.append(p)
                    streak += 1
                    if streak >= _KNOWN_CONFLICT_STREAK:
                        break  # the ready list is full of scopes that cannot join: stop looking
                    continue
                if any(collide(paths, graph.tickets[c].paths) for c in chosen):
                    blocked_scopes.add(paths)
                    skipped.append(p)
                    continue
            streak = 0
            chosen.append(i)
        for p in skipped:
            heapq.heappush(ready, p)
        groups.append(chosen)
        for i in chosen:
            for j in graph.dependents[i]:
                indeg[j] -= 1
                if indeg[j] == 0:
                    heapq.heappush(ready, pos[j])
    return groups


def simulate(
    graph: Graph,
    durations: Sequence[float],
    jobs: int,
    *,
    key: Callable[[int], tuple[float, ...]],
    done: Iterable[int] = (),
    running: Iterable[tuple[int, float]] = (),
    fits: FitRule | None = None,
) -> float:
    """Makespan of a list schedule on `jobs` slots (the dynamic scheduler's model).

    `done` tickets are finished; `running` are (ticket, remaining seconds) already on slots;
    `fits` is what may run side by side (see `fit_rule`). Used for plan estimates and for
    the live ETA.
    """
    return _list_schedule(graph, durations, jobs, key, fits, done, running, record=False)[0]


def barrier_makespan(
    groups: Sequence[Sequence[int]], durations: Sequence[float], jobs: int
) -> float:
    """Wall time when groups run one after another (`run --barrier`), each on `jobs` slots."""
    total = 0.0
    for group in groups:
        slots = [0.0] * max(1, min(jobs, len(group)))
        for d in sorted((durations[i] for i in group), reverse=True):
            heapq.heapreplace(slots, slots[0] + d)
        total += max(slots, default=0.0)
    return total


def pairwise_overlaps(
    tickets: Sequence[Ticket], limit: int = 1000, budget: int = 2_000_000
) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """Pairs of tickets whose declared `paths` may touch a common file, with the globs.

    Two globs can only meet when one's literal prefix (`src/http` of `src/http/**`) is the
    other's or an ancestor of it, so each ticket is compared only with tickets filed under
    its prefix or the directories above it. At most `limit` pairs are returned and at
    most `budget` comparisons made: a 15,000-wide group must not take minutes.
    """
    by_prefix: dict[str, list[int]] = {}
    for i, t in enumerate(tickets):
        for pattern in t.paths:
            by_prefix.setdefault(literal_prefix(pattern), []).append(i)

    def lineage(prefix: str) -> list[str]:
        parts = prefix.split("/") if prefix else []
        return ["/".join(parts[:k]) for k in range(len(parts), -1, -1)]

    out: list[tuple[str, str, list[tuple[str, str]]]] = []
    seen: set[tuple[int, int]] = set()
    compared = 0
    for a, ticket in enumerate(tickets):
        for pattern in ticket.paths:
            for ancestor in lineage(literal_prefix(pattern)):
                for b in by_prefix.get(ancestor, ()):
                    pair = (min(a, b), max(a, b))
                    if b == a or pair in seen:
                        continue
                    seen.add(pair)
                    compared += 1
                    if compared > budget or len(out) >= limit:
                        return sorted(out)
                    found = pathsets_may_overlap(tickets[pair[0]].paths, tickets[pair[1]].paths)
                    if found:
                        out.append((tickets[pair[0]].id, tickets[pair[1]].id, found))
    return sorted(out)


@dataclass(frozen=True)
class Slotted:
    ticket: str
    slot: int
    start_s: float
    end_s: float


def schedule(
    graph: Graph,
    durations: Sequence[float],
    jobs: int,
    key: Callable[[int], tuple[float, ...]],
    *,
    fits: FitRule | None = None,
) -> list[Slotted]:
    """A list schedule with slot numbers: what `run --dry-run` shows."""
    return _list_schedule(graph, durations, jobs, key, fits, (), (), record=True)[1]


# --- what may run side by side, as the scheduler decides it ----------------------------------

FitRule = Callable[[int, Sequence[int]], bool]  # (ticket, tickets running) -> may it start?


@dataclass(frozen=True)
class Constraints:
    """What a run's scheduler enforces (its policy: agents' max_parallel, merge rules,
    --allow-overlap), and the agent of tickets that name none."""

    policy: Policy
    default_agent: str


@dataclass(frozen=True)
class _Placed:
    agent: str
    ticket: Ticket


def fit_rule(graph: Graph, constraints: Constraints | None, jobs: int) -> FitRule | None:
    """The scheduler's rule (scheduler.fits) over the graph's tickets, path overlaps
    remembered per pair of scopes; None when nothing in these tickets is constrained."""
    if constraints is None:
        return None
    policy = constraints.policy
    placed = [_Placed(t.agent or constraints.default_agent, t) for t in graph.tickets]
    limited = any(
        policy.agents.get(p.agent, AgentPolicy()).max_parallel is not None for p in placed
    ) or any(pool.max_parallel is not None for pool in policy.pools.values())
    # Quota pools as they stand before anything was throttled: only their max_parallel.
    pools = QuotaPools(policy.pools, lambda _: None)
    scoped = not policy.allow_overlap and any(t.paths for t in graph.tickets)
    weighted = any(t.resources for t in graph.tickets)
    if not (limited or scoped or weighted):
        return None
    memo: dict[tuple[tuple[str, ...], tuple[str, ...]], bool] = {}
    prefixes: dict[tuple[str, ...], tuple[str, ...]] = {}

    def prefixes_of(scope: tuple[str, ...]) -> tuple[str, ...]:
        found = prefixes.get(scope)
        if found is None:
            found = prefixes[scope] = tuple(literal_prefix(p) for p in scope)
        return found

    def overlap(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
        """pathsets_may_overlap's answer, remembered; scopes under unrelated literal
        directories (`src/api` and `docs`) cannot meet, which is most pairs, cheaply."""
        found = memo.get((a, b))
        if found is None:
            found = any(_related(x, y) for x in prefixes_of(a) for y in prefixes_of(b)) and bool(
                pathsets_may_overlap(a, b, policy.settled)
            )
            memo[(a, b)] = found
        return found

    def check(i: int, busy: Sequence[int]) -> bool:
        return fits(
            placed[i], [placed[j] for j in busy], policy, jobs, room=pools.room, overlap=overlap
        )

    return check


def _related(a: str, b: str) -> bool:
    """Whether one literal directory is the other or below it (where two globs may meet)."""
    return not a or not b or a == b or a.startswith(b + "/") or b.startswith(a + "/")


# A simulated dispatch passes over at most this many ready tickets that may not start, and
# stops after this many in a row whose scope is already known not to fit: the scheduler
# looks at every ready ticket, a simulation of 100,000 cannot.
_FIT_LOOKAHEAD = 64
_KNOWN_MISFIT_STREAK = 8


def _list_schedule(
    graph: Graph,
    durations: Sequence[float],
    jobs: int,
    key: Callable[[int], tuple[float, ...]],
    fits: FitRule | None,
    done: Iterable[int],
    running: Iterable[tuple[int, float]],
    *,
    record: bool,
) -> tuple[float, list[Slotted]]:
    """Greedy list scheduling in `key` order on `jobs` slots, as the scheduler dispatches:
    whenever a slot is free, the first ready tickets that `fits` allows beside those
    running. Returns the makespan, and each start when `record`."""
    pos, at = positions(len(graph), key)
    jobs = max(jobs, 1)
    finished = set(done)
    indeg = [sum(1 for d in deps if d not in finished) for deps in graph.deps]
    free = list(range(1, jobs + 1))  # slot numbers, lowest first
    busy: list[tuple[float, int, int]] = []  # (end, slot, ticket)
    active: list[int] = []
    started = set(finished)
    out: list[Slotted] = []
    for i, remaining in running:
        slot = heapq.heappop(free) if free else 0
        heapq.heappush(busy, (max(0.0, remaining), slot, i))
        active.append(i)
        started.add(i)
    ready = [pos[i] for i, d in enumerate(indeg) if d == 0 and i not in started]
    heapq.heapify(ready)
    tickets = graph.tickets
    now = 0.0
    while ready or busy:
        if ready and len(active) < jobs:
            aside: list[int] = []
            misfits: set[tuple[object, ...]] = set()
            streak = 0
            while ready and len(active) < jobs and len(aside) < _FIT_LOOKAHEAD:
                p = heapq.heappop(ready)
                i = at[p]
                if fits is not None and active:  # (more running never lets more fit)
                    t = tickets[i]
                    shape = (t.agent, t.paths, t.resources)
                    if shape in misfits or not fits(i, active):
                        aside.append(p)
                        streak = streak + 1 if shape in misfits else 0
                        misfits.add(shape)
                        if streak >= _KNOWN_MISFIT_STREAK:
                            break
                        continue
                slot = heapq.heappop(free)
                heapq.heappush(busy, (now + durations[i], slot, i))
                active.append(i)
                if record:
                    out.append(Slotted(tickets[i].id, slot, now, now + durations[i]))
            for p in aside:
                heapq.heappush(ready, p)
        now, slot, i = heapq.heappop(busy)
        active.remove(i)
        if slot:
            heapq.heappush(free, slot)
        for j in graph.dependents[i]:
            indeg[j] -= 1
            if indeg[j] == 0 and j not in started:
                heapq.heappush(ready, pos[j])
    return now, out
