"""Quota pools: agents that draw on one provider account share one pool, and a throttle
seen by any of them pauses the pool for all (pure state, like the scheduler that holds it).

When an attempt is throttled, nothing of its pool starts until the wait the provider
named (or 2 s). Then one ticket goes first (a probe); the pool opens up again only once
the provider answers it. A probe throttled again doubles the wait (capped), whatever the
provider names, so a provider that keeps refusing is not asked every second. A pool
throttled longer than its `max_wait` in one stretch gives up: its waiting tickets fail
with the reason.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from gitexec import events as ev


class QuotaState(enum.Enum):
    OPEN = "open"
    PAUSED = "paused"
    PROBING = "probing"


@dataclass(frozen=True)
class PoolPolicy:
    max_parallel: int | None = None
    max_wait_s: float = 3600.0


@dataclass
class Pool:
    name: str
    policy: PoolPolicy
    state: QuotaState = QuotaState.OPEN
    until: float = 0.0  # while paused (the driver's monotonic clock)
    in_a_row: int = 0  # throttles since the provider last answered: the backoff doubles
    since: float | None = None  # when this stretch of throttling began


@dataclass
class QuotaPools:
    """The pools of a run, by name; a pool nobody configured gets the default policy."""

    policies: Mapping[str, PoolPolicy]
    emit: Callable[[ev.Event], object]
    backoff_s: float = 2.0
    max_backoff_s: float = 300.0
    default: PoolPolicy = field(default_factory=PoolPolicy)
    pools: dict[str, Pool] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Pool:
        pool = self.pools.get(name)
        if pool is None:
            pool = self.pools[name] = Pool(name, self.policies.get(name, self.default))
        return pool

    def tick(self, now: float) -> None:
        """Pauses that are over turn into probes."""
        for pool in self.pools.values():
            if pool.state is QuotaState.PAUSED and now >= pool.until:
                pool.state = QuotaState.PROBING
                self.emit(ev.QuotaProbing(pool=pool.name))

    def room(self, name: str, running: int) -> bool:
        """May one more ticket of the pool start, with `running` of it in flight?"""
        pool = self[name]
        if pool.state is QuotaState.PAUSED:
            return False
        if pool.state is QuotaState.PROBING:
            return running == 0
        limit = pool.policy.max_parallel
        return limit is None or running < limit

    def paused(self, name: str) -> bool:
        return self[name].state is QuotaState.PAUSED

    def throttled(
        self, name: str, now: float, *, retry_after_s: float | None, reason: str, ticket: str
    ) -> float | None:
        """Pause the pool; the wait, or None when the pool has waited past `max_wait`."""
        pool = self[name]
        if pool.state is not QuotaState.PAUSED:  # attempts started before a pause count once
            pool.in_a_row += 1
        if pool.since is None:
            pool.since = now
        if retry_after_s is None:
            delay = self._doubling(pool.in_a_row)
        elif pool.in_a_row == 1:
            delay = max(retry_after_s, 0.0)  # the provider said how long: believe it once,
        else:  # not when its probes keep failing
            delay = max(retry_after_s, self._doubling(pool.in_a_row - 1))
        if now + delay - pool.since > pool.policy.max_wait_s:
            return None
        if pool.state is not QuotaState.PAUSED or now + delay > pool.until:
            pool.state = QuotaState.PAUSED
            pool.until = now + delay
            self.emit(ev.QuotaPaused(pool=name, delay_s=delay, reason=reason, ticket=ticket))
        return pool.until - now

    def _doubling(self, n: int) -> float:
        return float(min(self.backoff_s * 2 ** (n - 1), self.max_backoff_s))

    def answered(self, name: str) -> None:
        """The provider answered an attempt of the pool: the pool opens again."""
        pool = self[name]
        pool.in_a_row = 0
        pool.since = None
        if pool.state is not QuotaState.OPEN:
            pool.state = QuotaState.OPEN
            self.emit(ev.QuotaOpened(pool=name))

    def set_max_parallel(self, name: str, limit: int | None) -> None:
        pool = self[name]
        pool.policy = PoolPolicy(limit, pool.policy.max_wait_s)

    def restore(self, name: str, state: str, remaining_s: float | None, now: float) -> None:
        """A pool as a replayed journal left it; a pause still in force stays."""
        pool = self[name]
        if state == QuotaState.PAUSED.value and remaining_s is not None and remaining_s > 0:
            pool.state, pool.until, pool.since = QuotaState.PAUSED, now + remaining_s, now
        elif state in (QuotaState.PAUSED.value, QuotaState.PROBING.value):
            pool.state, pool.since = QuotaState.PROBING, now
