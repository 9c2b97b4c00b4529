"""Caps on how many requests an exit sends a site per window, learned from long blocks.

Some sites let a client make N requests in any W seconds and then block it for far longer
than W (nginx ``limit_req`` with a burst, WAF rate rules with a block time), often with no
``Retry-After``. A steady rate says nothing about bursts, and a rate learned from what got
through before the block is the rate that caused it. So when a block outlasts the pace's
own pause by far, the pace remembers how many requests it had sent in each of several
spans (1 s to a minute) just before the block began, and from then on keeps every such span
below that count: at first well below (``low``), then climbing slowly, over ``cooldown``
seconds, to ``high``, still below it, and only then, four times slower, on past it: a
span's count from a spell of climbing understates what it may hold. A span blocked again
once its cap was reached is the site's window: its cap stays below the count for good.
Whichever span is the site's window, its count is capped below what got blocked, without
knowing which one it is.

Only spans the evidence covers are learned: a block right after the first burst says
nothing about a minute, and capping a minute at that burst would starve the exit.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

SPANS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


@dataclass
class Cap:
    blocked: int  # requests sent in the span when the block began
    since: float  # when the cap was set (the block's end)
    cooldown: float  # seconds its climb takes
    # blocked again when at its cap: that span is the site's window, and its cap stays
    # below the count that was blocked for good
    bounded: bool = False


@dataclass
class WindowCaps:
    low: float = 0.75  # a new cap's share of the count that was blocked
    high: float = 0.95  # the most it climbs back to
    cooldown: float = 60.0  # seconds from ``low`` to ``high``, at the least
    sends: list[float] = field(default_factory=list)  # send times, the last minute or so
    caps: dict[float, Cap] = field(default_factory=dict)

    def sent(self, at: float) -> None:
        self.sends.append(at)
        if len(self.sends) > 64 and self.sends[0] < at - 2 * SPANS[-1]:
            del self.sends[: bisect.bisect_left(self.sends, at - SPANS[-1])]

    def count(self, span: float, at: float) -> int:
        """Requests sent in ``(at - span, at]``."""
        return bisect.bisect_right(self.sends, at) - bisect.bisect_right(self.sends, at - span)

    def learn(self, began: float, covered_from: float, now: float, length: float) -> float:
        """A block began with the request sent at ``began`` and lasted ``length`` seconds;
        sends since ``covered_from`` are the evidence. Caps every span the evidence covers
        (at least the shortest); returns the rate the block began at (requests/s)."""
        covered = began - covered_from
        spans = [s for s in SPANS if s <= covered] or [SPANS[0]]
        # a block costs its length: climb back over several of them
        cooldown = max(self.cooldown, 6 * length)
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
