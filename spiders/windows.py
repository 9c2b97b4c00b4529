"""Caps on how many requests an exit sends a site per window, learned from long blocks.

Some sites let a client make N requests in any W seconds and then block it for far longer
than W (nginx ``limit_req`` with a burst, WAF rate rules with a block time), often with no
``Retry-After``. A steady rate says nothing about bursts, and a rate learned from what got
through before the block is the rate that caused it.

So every exit keeps, per span (half a second to a minute), two counts of the requests that
got through, the only ones a site counts: the most that any of them had before it in the
span, and the fewest that any block's first request had. A span can be the site's window
only if the first stays below the second (or equals it, where requests overtook each other
on the way and other spans are ruled out), and only if it does not reach back into the
last block, when nothing could get through. When a block outlasts the pace's own pause by
far, each such span is capped at what is known to get through it (the site's N, if it is
the window), and every other span loses its cap. Two blocks usually leave one span: the
site's window, at its limit; a window between two spans is held to the longer one's count,
a little under its limit. A window blocked again at its cap loses one from it. Caps hold a
little longer than their span: a request that reaches the site early at a window's edge is
blocked. And a request whose answer came back late counts as sent that late: held up on
the way, it reached the site in a later window than it left in.

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

import numpy as np

SPANS = (0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0)
KEEP = 4 * SPANS[-1]  # seconds of send times kept
SHORTEST = 1.0  # the span any block covers, however soon it came
LATE_ARRIVAL = 0.02  # seconds behind the quickest answers that count a request as late


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
    # send times of the requests that got through: a site counts those, not what it refused
    oks: list[float] = field(default_factory=list)
    # per span: the most requests that got through any one that got through had before it
    # in the span, and the fewest any block's first request had: a span is the site's
    # window only if the first stays below the second
    passed: dict[float, int] = field(default_factory=dict)
    stopped: dict[float, int] = field(default_factory=dict)
    # the last block told the window apart from spans it ruled out: its caps are the site's
    # limit, not a guess that every span up to the evidence's reach is it
    known: bool = False
    learned_at: float = -math.inf  # when the caps were last learned
    # seconds by which requests may reach the site closer together, or further apart,
    # than they left (the spread of their latencies): a window counts arrivals, not sends
    jitter: float = 0.0
    # the same counts from the other exits to the site: each client is limited alike, so
    # what got through one rules spans out for every one
    shared: dict[float, int] = field(default_factory=dict)
    shared_stopped: dict[float, int] = field(default_factory=dict)  # and the fewest at a block

    def sent(self, at: float) -> None:
        self.sends.append(at)
        # kept for the longest span before a block's start, learned only once it ends
        if len(self.sends) > 64 and self.sends[0] < at - KEEP - SPANS[-1]:
            del self.sends[: bisect.bisect_left(self.sends, at - KEEP)]
            del self.oks[: bisect.bisect_left(self.oks, at - KEEP)]

    def oks_count(self) -> int:
        """Requests that got through, of those still kept."""
        return len(self.oks)

    def _passed(self, span: float) -> int:
        return max(self.passed.get(span, -1), self.shared.get(span, -1))

    def count(self, span: float, at: float) -> int:
        """Requests sent in ``(at - span, at]``."""
        return bisect.bisect_right(self.sends, at) - bisect.bisect_right(self.sends, at - span)

    def answered(self, sent_at: float, late: float = 0.0) -> None:
        """The request sent at ``sent_at`` got through, its answer ``late`` seconds behind
        the quickest. Under caps, a late one is counted as sent that much later: it may
        have reached the site that late (the event loop held it, or a proxy did), where a
        window that counted it leaving early would let the next request in one too many."""
        if late > LATE_ARRIVAL and self.caps:
            at = bisect.bisect_right(self.sends, sent_at) - 1
            if at >= 0 and sent_at - self.sends[at] < LATE_ARRIVAL:
                bisect.insort(self.sends, self.sends.pop(at) + late)
        # answers come back out of order: the list stays in order of sending
        at = bisect.bisect_right(self.oks, sent_at)
        self.oks.insert(at, sent_at)
        for span in SPANS:
            # only those surely counted with it, had they reached the site spread apart
            before = at - bisect.bisect_right(self.oks, sent_at - max(span - self.jitter, 0.0))
            if before > self.passed.get(span, -1):
                self.passed[span] = before

    def _recount(self) -> None:
        """Counts again what got through before each request that got through: answers
        come back out of order, and one counted as it came missed those sent before it
        but answered after."""
        oks = np.asarray(self.oks)
        if not len(oks):
            return
        for span in SPANS:
            reach = max(span - self.jitter, 0.0)
            before = np.arange(len(oks)) - np.searchsorted(oks, oks - reach, side="right")
            self.passed[span] = max(self.passed.get(span, -1), int(before.max()))

    def observe(self, began: float) -> None:
        """Counts what got through before a block that began with the request sent at
        ``began`` (once the answers sent before it are in), and again what got through
        before each that got through."""
        self._recount()
        for span in SPANS:
            if not self.count(span, began):
                continue  # a block so long its start is forgotten says nothing
            # every one that may have been counted before it, had they bunched up; and
            # every one sent after it that got through: nothing gets through a block, so
            # those overtook it on the way
            before = len(self.oks) - bisect.bisect_right(self.oks, began - span - self.jitter)
            self.stopped[span] = min(before, self.stopped.get(span, before))

    def windows(self, began: float, covered_from: float) -> list[float]:
        """The spans the history shows could be the site's window, given a block that
        began with the request sent at ``began``: every span whose count before that
        request is more than any request that got through had. Only spans within the
        sends since ``covered_from`` count: one reaching back into an earlier block, when
        nothing could get through, holds fewer than the site would have allowed."""
        self.observe(began)
        fit, tie, ruled_out = [], [], False
        for span in SPANS:
            if span not in self.stopped or not self.count(span, began):
                continue  # a block so long its start is forgotten says nothing
            passed = self._passed(span)
            if span > max(began - covered_from, SHORTEST) or passed < 0:
                continue
            # nor one that another exit was blocked at with no more before it than got
            # through: each client is limited alike
            least = min(self.stopped[span], self.shared_stopped.get(span, math.inf))
            if passed < least:
                fit.append(span)
            elif passed == least:
                # a tie with what got through another exit tells the window only where
                # the next span is ruled out too: by this history, if it reaches that far
                # (an exit's slow start does not), or by another exit's block
                longer = SPANS[min(SPANS.index(span) + 1, len(SPANS) - 1)]
                stopped = min(
                    self.stopped.get(longer, math.inf), self.shared_stopped.get(longer, math.inf)
                )
                if (
                    self.passed.get(span, -1) == passed
                    or longer <= max(began - covered_from, SHORTEST)
                    or self._passed(longer) >= stopped
                ):
                    tie.append(span)
            else:
                ruled_out = True
        # requests overtake each other on the way, so the block's first request may have
        # been counted after one sent later that got through: equal counts fit when
        # nothing fits better, and the history tells spans apart at all
        self.known = ruled_out and bool(fit or tie)
        return fit or (tie if ruled_out else [])

    def learn(self, began: float, covered_from: float, now: float, length: float) -> float:
        """A block began with the request sent at ``began`` and lasted ``length`` seconds;
        sends since ``covered_from`` are the evidence. Returns the rate the block began at
        (requests/s).

        Spans that can be the site's window are capped at what is known to get through,
        and the others lose their caps; when none can be (a limit of another shape), every
        span the evidence covers is capped below its count when the block began."""
        # a block costs its length: climb back over several of them
        cooldown = max(self.cooldown, 6 * length)
        self.learned_at = now
        found = self.windows(began, covered_from)
        if found:
            for span in SPANS:
                if span not in found:
                    self.caps.pop(span, None)
                    continue
                # requests that overtook each other on the way can make what got through
                # look like more than what got blocked: the lower is the safe one
                known = min(self._passed(span) + 1, self.stopped[span])
                self.caps[span] = Cap(known, now, cooldown, exact=True)
            return min((self.stopped[span] + 1) / span for span in found)
        self.known = False
        if exact := [span for span, cap in self.caps.items() if cap.exact]:
            # blocked at a known window's count after all: one less gets through
            for span in exact:
                cap = self.caps[span]
                cap.blocked = max(1, min(cap.blocked - 1, self.stopped.get(span, cap.blocked)))
            return min(self.caps[span].blocked / span for span in exact)
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

    def lasted(self, length: float, now: float) -> None:
        """The block last learned from, while it lasted, is over at ``now`` after
        ``length`` seconds: the caps it set climb from here, over several of its length."""
        for cap in self.caps.values():
            if cap.since == self.learned_at:
                cap.since, cap.cooldown = now, max(cap.cooldown, 6 * length)

    def adopt(self, window: dict[float, int], now: float) -> None:
        """Caps at the site's window that another exit found (span -> what gets through)."""
        self.caps = {span: Cap(n, now, self.cooldown, exact=True) for span, n in window.items()}
        self.known = True

    def limit(self, span: float, at: float) -> int | None:
        """How many requests ``span`` may hold at ``at``; None if it is not capped."""
        cap = self.caps.get(span)
        if cap is None:
            return None
        climbed = max(0.0, at - cap.since) / cap.cooldown
        if cap.exact:
            # known to get through, and more is known not to: a window between two spans
            # is held to the longer one's count, a little under its limit, never blocked
            return cap.blocked
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
        """The earliest time from ``at`` that one more request keeps every span under its cap.

        Each span is kept a little longer than it is: requests reach the site sooner or
        later than they left, and one a millisecond early at a window's edge is blocked."""
        for _ in range(8):  # a later time can break another span's cap; a few rounds settle it
            moved = False
            for span in self.caps:
                limit = self.limit(span, at)
                assert limit is not None
                kept = span * 1.02 + 0.02 + self.jitter
                if self.count(kept, at) >= limit:
                    # the limit-th most recent send must leave the span first
                    end = bisect.bisect_right(self.sends, at)
                    at = self.sends[end - limit] + kept + 1e-6
                    moved = True
            if not moved:
                break
        return at
