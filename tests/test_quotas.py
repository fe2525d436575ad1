"""Quota pools in memory: how long a throttled pool waits, and when it gives up."""

from __future__ import annotations

from gitexec import events as ev
from gitexec.quotas import PoolPolicy, QuotaPools, QuotaState


def pools(max_wait_s: float = 3600.0) -> tuple[QuotaPools, list[ev.Event]]:
    events: list[ev.Event] = []
    return QuotaPools({"acct": PoolPolicy(max_wait_s=max_wait_s)}, events.append), events


def probe_throttled(q: QuotaPools, now: float, retry_after_s: float | None) -> float | None:
    """The pause ends, the probe goes, and the provider refuses it again."""
    q.tick(now)
    assert q["acct"].state is QuotaState.PROBING
    return q.throttled("acct", now, retry_after_s=retry_after_s, reason="429", ticket="A")


def test_the_first_throttle_waits_what_the_provider_named() -> None:
    q, events = pools()
    assert q.throttled("acct", 0.0, retry_after_s=0.5, reason="429", ticket="A") == 0.5
    assert isinstance(events[-1], ev.QuotaPaused) and events[-1].delay_s == 0.5


def test_probes_refused_again_double_the_wait_whatever_the_provider_names() -> None:
    q, _ = pools()
    now, waits = 0.0, [q.throttled("acct", 0.0, retry_after_s=1.0, reason="429", ticket="A")]
    for _ in range(12):
        delay = waits[-1]
        assert delay is not None
        now += delay
        waits.append(probe_throttled(q, now, retry_after_s=1.0))
    assert waits[:5] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert waits[-1] == waits[-2] == q.max_backoff_s  # capped


def test_a_longer_retry_after_still_wins() -> None:
    q, _ = pools()
    q.throttled("acct", 0.0, retry_after_s=1.0, reason="429", ticket="A")
    assert probe_throttled(q, 1.0, retry_after_s=30.0) == 30.0


def test_attempts_started_before_the_pause_count_as_one_throttle() -> None:
    q, _ = pools()
    for ticket in "ABCD":  # four in flight, all refused by one burst
        q.throttled("acct", 0.0, retry_after_s=None, reason="429", ticket=ticket)
    assert q["acct"].in_a_row == 1
    assert q["acct"].until == 2.0


def test_an_answer_resets_the_backoff() -> None:
    q, _ = pools()
    q.throttled("acct", 0.0, retry_after_s=1.0, reason="429", ticket="A")
    probe_throttled(q, 1.0, retry_after_s=1.0)
    q.answered("acct")
    assert q["acct"].state is QuotaState.OPEN
    assert q.throttled("acct", 10.0, retry_after_s=1.0, reason="429", ticket="A") == 1.0


def test_a_pool_that_keeps_refusing_gives_up_after_max_wait() -> None:
    q, _ = pools(max_wait_s=10.0)
    now = 0.0
    delay = q.throttled("acct", now, retry_after_s=1.0, reason="429", ticket="A")
    gave_up_at = None
    for _ in range(10):
        assert delay is not None
        now += delay
        delay = probe_throttled(q, now, retry_after_s=1.0)
        if delay is None:
            gave_up_at = now
            break
    assert gave_up_at is not None and gave_up_at <= 10.0
