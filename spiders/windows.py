"""Caps on how many requests an exit sends a site per window, learned from long blocks.

Some sites let a client make N requests in any W seconds and then block it for far longer
than W (nginx ``limit_req`` with a burst, WAF rate rules with a block time), often with no
``Retry-After``. A steady rate says nothing about bursts, and a rate learned from what got
through before the block is the rate that caused it.

So every exit keeps, per span (half a second to a minute), the most requests any request
that got through had before it in that span, and the fewest any block's first request had.
A span can be the site's window only if the first stays below the second; when a block
outlasts the pace's own pause by far, each such span is capped at what is known to get
through (the site's N, if it is the window), and every other span loses its cap. Two blocks
usually leave one span: the site's window, at its limit. A cap confirmed by a second block
stays; one never tested climbs slowly past a cooldown, in case the window lies between two
spans.

When no span fits (nothing got through yet, or a limit of another shape), each span the
evidence covers is capped below the count it held when the block began: at first well below
(``low``), then climbing over ``cooldown`` seconds to ``high``, and past it four times
slower. Spans longer than the history are never capped: a block right after the first burst
says nothing about a minute, and capping a minute at that burst would starve the exit.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

SPANS = (0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0)
KEEP = 4 * SPANS[-1]  # seconds of send times kept
SHORTEST = 1.0  # the span any block covers, however soon it came


@dataclass
class Cap:
    blocked: int  # requests sent in the span when the block began
    since: float  # when the cap was set (the block's end)
    cooldown: float  # seconds its climb takes
    # blocked again when at its cap: that span is the site's window, and its cap stays
    # below the count that was blocked for good
    bounded: bool = False
    # ``blocked`` is what the history shows gets through the site's window, not a count
    # that got blocked
    exact: bool = False


@dataclass
class WindowCaps:
    low: float = 0.75  # a new cap's share of the count that was blocked
    high: float = 0.95  # the most it climbs back to
    cooldown: float = 60.0  # seconds from ``low`` to ``high``, at the least
    sends: list[float] = field(default_factory=list)  # send times, the last few minutes
    caps: dict[float, Cap] = field(default_factory=dict)
    # per span: the most requests any answered request had before it in the span, and the
    # fewest any block's first request had: a span is the site's window only if the first
    # stays below the second
    passed: dict[float, int] = field(default_factory=dict)
    stopped: dict[float, int] = field(default_factory=dict)
    first: float | None = None  # the first send: spans longer than the history say nothing

    def sent(self, at: float) -> None:
        if self.first is None:
            self.first = at
        self.sends.append(at)
        # kept for the longest span before a block's start, learned only once it ends
        if len(self.sends) > 64 and self.sends[0] < at - KEEP - SPANS[-1]:
            del self.sends[: bisect.bisect_left(self.sends, at - KEEP)]

    def count(self, span: float, at: float) -> int:
        """Requests sent in ``(at - span, at]``."""
        return bisect.bisect_right(self.sends, at) - bisect.bisect_right(self.sends, at - span)

    def answered(self, sent_at: float) -> None:
        """The request sent at ``sent_at`` got through."""
        for span in SPANS:
            before = self.count(span, sent_at) - 1
            if before > self.passed.get(span, -1):
                self.passed[span] = before

    def windows(self, began: float) -> list[float]:
        """The spans the history shows could be the site's window, given a block that
        began with the request sent at ``began``: every span whose count before that
        request is more than any request that got through had."""
        if self.first is None:
            return []
        found = []
        for span in SPANS:
            before = self.count(span, began) - 1
            if before < 0:
                continue  # a block so long its start is forgotten says nothing
            self.stopped[span] = min(before, self.stopped.get(span, before))
            passed = self.passed.get(span, -1)
            if span <= max(began - self.first, SHORTEST) and 0 <= passed < self.stopped[span]:
                found.append(span)
        return found

    def learn(self, began: float, covered_from: float, now: float, length: float) -> float:
        """A block began with the request sent at ``began`` and lasted ``length`` seconds;
        sends since ``covered_from`` are the evidence. Returns the rate the block began at
        (requests/s).

        Spans that can be the site's window are capped at what is known to get through,
        and the others lose their caps; when none can be (a limit of another shape), every
        span the evidence covers is capped below its count when the block began."""
        # a block costs its length: climb back over several of them
        cooldown = max(self.cooldown, 6 * length)
        found = self.windows(began)
        if found:
            for span in SPANS:
                if span not in found:
                    self.caps.pop(span, None)
                    continue
                old = self.caps.get(span)
                # a window confirmed by a second block does not climb past its count again
                bounded = old is not None and old.exact
                self.caps[span] = Cap(self.passed.get(span, 0) + 1, now, cooldown, bounded, True)
            return min((self.stopped[span] + 1) / span for span in found)
        covered = began - covered_from
        spans = [s for s in SPANS if s <= max(covered, SHORTEST)]
        onset = math.inf
        for span in spans:
            blocked = self.count(span, began)
            if not blocked:
                continue
            old, was = self.caps.get(span), self.limit(span, began)
            bounded = old is not None and (old.bounded or (was is not None and blocked >= was))
            self.caps[span] = Cap(blocked, now, cooldown, bounded)
            onset = min(onset, blocked / span)
        return onset if onset < math.inf else 0.0

    def limit(self, span: float, at: float) -> int | None:
        """How many requests ``span`` may hold at ``at``; None if it is not capped."""
        cap = self.caps.get(span)
        if cap is None:
            return None
        climbed = max(0.0, at - cap.since) / cap.cooldown
        if cap.exact:
            # known to get through: no way down, and past a cooldown a slow climb, in case
            # the site's window lies between two spans
            if cap.bounded or climbed <= 1:
                return cap.blocked
            return math.floor(cap.blocked * (1 + (climbed - 1) * (1 - self.high)))
        if climbed > 1 and cap.bounded:
            climbed = 1.0
        elif climbed > 1:
            climbed = 1 + (climbed - 1) / 4
        share = self.low + (self.high - self.low) * climbed
        return max(1, math.floor(cap.blocked * share))

    def rate(self, at: float) -> float:
        """The steady rate every cap allows at ``at`` (requests/s); inf when none is set."""
        return min(((self.limit(span, at) or 0) / span for span in self.caps), default=math.inf)

    def earliest(self, at: float) -> float:
        """The earliest time from ``at`` that one more request keeps every span under its cap."""
        for _ in range(8):  # a later time can break another span's cap; a few rounds settle it
            moved = False
            for span in self.caps:
                limit = self.limit(span, at)
                assert limit is not None
                if self.count(span, at) >= limit:
                    # the limit-th most recent send must leave the span first
                    end = bisect.bisect_right(self.sends, at)
                    at = self.sends[end - limit] + span + 1e-6
                    moved = True
            if not moved:
                break
        return at
