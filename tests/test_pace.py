"""The pace of an exit, on a clock the tests move by hand."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import pytest

from spiders.pace import Pace, Pacer, PaceSettings


@dataclass
class Clock:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now


def pace(clock: Clock) -> Pace:
    return Pace(PaceSettings(), clock)


def test_a_pace_is_unlimited_until_the_site_throttles() -> None:
    clock = Clock()
    p = pace(clock)
    for _ in range(50):
        p.take()
        p.ok(clock.now)
    assert p.next_at <= clock.now and p.rate is None


def test_the_first_throttle_learns_the_limit_and_waits_the_retry_after() -> None:
    clock = Clock()
    p = pace(clock)
    for _ in range(10):  # the site lets ten through at once, then says 429, Retry-After: 1
        p.take()
        clock.now += 0.005
        p.ok(clock.now)
    pause = p.throttled(clock.now, retry_after=1.0)
    assert pause == 1.0 and p.next_at == pytest.approx(clock.now + 1.0)
    # ten in 0.05 s, then a second of pause: ten a 1.05 s is what the site allows
    assert p.rate == pytest.approx(10 / 1.05)


def test_answers_to_requests_sent_before_the_reaction_are_old_news() -> None:
    clock = Clock()
    p = pace(clock)
    sent = clock.now
    for _ in range(10):
        p.take()
        p.ok(clock.now)
    clock.now += 0.1
    p.throttled(sent, retry_after=1.0)
    rate = p.rate
    clock.now += 0.01
    p.throttled(sent, retry_after=2.0)  # in flight when the first 429 came
    assert p.rate == rate and p.throttles == 2
    assert p.next_at == pytest.approx(clock.now + 2.0)  # its Retry-After is still honoured


def test_throttles_in_a_row_back_off_and_honour_retry_after() -> None:
    clock = Clock()
    p = pace(clock)
    for _ in range(5):
        p.take()
        p.ok(clock.now)
    p.throttled(clock.now, 0.0)
    rate = p.rate
    pauses = []
    for _ in range(4):  # each first request after a pause is throttled again
        clock.now = p.next_at
        p.take()
        pauses.append(p.throttled(clock.now, 0.0))
    assert pauses == [2.0, 4.0, 8.0, 16.0]  # the pause was too short: twice as long
    assert p.rate == rate  # not the rate
    clock.now = p.next_at
    assert p.throttled(clock.now, retry_after=3.0) == 3.0  # the site's word wins


def test_the_rate_climbs_fast_to_near_the_ceiling_then_slowly() -> None:
    clock = Clock()
    p = pace(clock)
    p.interval, p.ceiling = 0.2, 10.0  # 5 a second, throttled last at 10 a second
    seconds = 0.0
    while p.rate is not None and p.rate < 9.7:
        clock.now = p.next_at
        p.take()
        p.ok(clock.now)
        seconds += p.interval
        assert seconds < 30
    fast = seconds
    while p.rate < 11.0:
        clock.now = p.next_at
        p.take()
        p.ok(clock.now)
        seconds += p.interval
    # from 5 to 9.7 a second takes seconds; past the ceiling, 10% more takes far longer
    assert fast < 10 and seconds - fast > 3 * fast


def test_a_dropped_connection_slows_without_pausing() -> None:
    clock = Clock()
    p = pace(clock)
    p.interval = 0.1
    p.failed(clock.now)
    assert p.interval == pytest.approx(0.1 / 0.85) and p.next_at <= clock.now


def test_slow_answers_hold_the_climb() -> None:
    clock = Clock()
    p = pace(clock)
    p.interval, p.ceiling = 0.2, 10.0
    p.ok(clock.now, latency=0.01)
    for _ in range(20):
        p.ok(clock.now, latency=1.0)  # a hundred times slower than its best
    assert p.interval == pytest.approx(0.2 * (1 - 0.02))  # only the first answer climbed


class WindowSite:
    """``limit`` requests a client in any ``window`` seconds, 429 + Retry-After past it."""

    def __init__(self, limit: int, window: float):
        self.limit, self.window = limit, window
        self.hits: deque[float] = deque()

    def answer(self, now: float) -> float | None:
        """None if served, else the Retry-After."""
        while self.hits and self.hits[0] <= now - self.window:
            self.hits.popleft()
        if len(self.hits) >= self.limit:
            return float(max(1, math.ceil(self.hits[0] + self.window - now)))
        self.hits.append(now)
        return None


@pytest.mark.parametrize(("limit", "window"), [(3, 1.0), (10, 1.0), (25, 1.0), (50, 10.0)])
def test_a_window_limit_is_learned_from_the_answers(limit: int, window: float) -> None:
    """Always a request ready, answers 5 ms later: how much of the limit the pace uses."""
    clock = Clock()
    p, site = pace(clock), WindowSite(limit, window)
    start, served = clock.now, 0
    while served < 60 * limit:
        clock.now = max(clock.now, p.next_at)
        p.take()
        sent = clock.now
        retry_after = site.answer(sent)
        clock.now += 0.005
        if retry_after is None:
            served += 1
            p.ok(sent, latency=0.005)
        else:
            p.throttled(sent, retry_after)
    allowed = limit / window
    used = served / (clock.now - start)
    assert used >= 0.8 * allowed, (used, allowed)
    assert p.rate is not None and 0.7 * allowed <= p.rate <= 1.15 * allowed
    assert p.throttles <= served * 0.1  # throttles stay rare


def test_the_pacer_hands_out_the_exit_free_first() -> None:
    clock = Clock()
    pacer = Pacer(clock=clock)
    a, b = pacer.pace("a", "site"), pacer.pace("b", "site")
    a.interval = b.interval = 1.0
    a.take()
    assert pacer.soonest("site", ["a", "b"]) == ("b", b.next_at)
    b.take()
    b.take()  # b is now two intervals away, a one
    assert pacer.soonest("site", ["a", "b"])[0] == "a"
    assert pacer.soonest("site", []) is None
    assert pacer.soonest("other", ["a", "b"])[1] == 0.0  # paces are per site


def test_figures_name_every_exit() -> None:
    clock = Clock()
    pacer = Pacer(clock=clock)
    pacer.pace("direct", "site").interval = 0.5
    pacer.pace("direct", "site").take()
    pacer.pace("127.0.0.1:3128", "site").throttled(clock.now, 1.0)
    figures = pacer.figures()
    assert figures["direct"] == {"sent": 1, "throttled": 0, "rate_per_s": {"site": 2.0}}
    assert figures["127.0.0.1:3128"] == {"sent": 0, "throttled": 1}
