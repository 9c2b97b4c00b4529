"""The pace of each exit to each site, learned from what the site answers.

An exit is the direct connection or one proxy; each (exit, site) pair has its own ``Pace``.
A pace starts unlimited. When the site first throttles (429/503, a block page, a dropped
connection), the pace pauses for the site's ``Retry-After`` and sets its rate to what got
through since it started, pause included: against a limit of so many requests per window,
that is the limit itself, learned from one throttle. A later throttle takes the rate down
to what got through since the one before, but never below half; the rate it happened at
becomes the ceiling. Between throttles the rate climbs back, quickly up to near the
ceiling, then slowly past it, so that throttles, and the pauses they cost, stay rare. A
throttle straight after a pause means the pause was too short, not the rate too high: the
next pause is the ``Retry-After`` or, without one, half as long again as the last. Answers
that come in after a throttle, to requests sent before it, count for the spell it ended.

A ceiling the site has told (what got through before its first throttle, a
``Retry-After``'s worth) or confirmed (throttled twice at about that rate) is its limit:
the rate climbs to ``hold`` of it and no further, since requests reach the site a few
milliseconds off their turn, and any closer would buy a throttle, and its pause, now and
then. A request a little late keeps the schedule, so lateness does not slow the rate.

A block that outlasts that pause by far (nothing but throttles or block pages for
``block_factor`` times the first pause) is a cost to learn from, not a pause to sit out:
the rate goes down to what got through since the last such block, block included, and the
request counts per window that led to it are capped from then on (spiders/windows.py), so
neither the rate nor the burst that caused it comes back soon. What a block teaches is
kept for every exit to the site (``SiteLore``): the next block is looked at where the last
one ended, not after pauses that grow past it, and a window one exit found paces the others
at its limit before they meet the block that taught it. A long block no earlier one has
timed is looked at a fifth of its age apart, so its end is found a fifth late at most.

Exits to a site start slowly (``SiteLore``): the first, the scout, opens unlimited, and the
others go at what it has shown gets through until its verdict, a second or two at most: a
few requests each at once, then at what got through the scout spread over a few seconds. A site
that lets it through, or throttles it with a ``Retry-After``, lets them loose as well; a
block without one starts them paced below what got through the scout (what they sent
before it counted in), one of them climbing to the site's limit while the others hold. The
block that climb meets, told apart by the scout's burst, shows the window to every exit, so
two exits meet a block at the opening, not all of them. A site with no limit, or a crawl
of few slow pages, keeps every exit busy from the start all the same.

``Pacer.acquire`` hands a request the exit that can take one soonest, and waits until it
can; a pause that begins while a request waits is honoured. Once a pace has a rate, it also
waits while the exit's download slot is full: a request taken then would wait in the slot's
queue and leave with the others the moment answers come back, in a burst its pace never
allowed, and maybe after a throttle the pace had not yet heard of.
"""

from __future__ import annotations

import math
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from scrapy.utils.asyncio import sleep

from spiders.windows import WindowCaps

DIRECT = "direct"
EXIT_META = "harvest_exit"  # the exit a request went through
# a request that must not go before this time.time() (wall clock: a request may travel to
# another worker through the Redis frontier): a listing page's backoff, a suspected block's
# pause. Waited for before an exit is taken, so that the wait does not bunch its requests
NOT_BEFORE_META = "harvest_not_before"
SLOT_POLL = 0.02  # seconds between looks at a full download slot
# each pause that proves too short is this much longer: doubling finds a 10 s block's end
# at 15 s, this at 13 s, for a probe or two more
GROWTH = 1.5
LOOK = 1 / 5  # a long block of no known length is looked at this share of its age apart
LATENCY_SETTLED = 10  # answers before the smoothed latency is a baseline
# the slow start of the exits to a site after its first (``SiteLore``)
VERDICT_OKS = 50  # answers got through the scout, none throttled: every exit goes loose
VERDICT_WAIT = 2.0  # seconds the others wait for the first exit's verdict, at the most
# before the verdict, each other exit may send this many requests at once (to show it works,
# and to have work from the start: no burst any site limits), then go at the scout's
# answers got through spread over ``HINT_SPAN``
EARLY = 3
HINT_SPAN = 4.0  # seconds the count the first exit got through before a block is spread over
EXPLORE = 0.5  # share of its rate the exploring exit gains a second
STALE = 3.0  # seconds without a request before an exploring exit is replaced
HELD = 1.05  # a throttle at most this share over the ceiling confirms it
LATE = 0.5  # share of an interval a late request may take from the next one's


@dataclass
class PaceSettings:
    pause: float = 1.0  # when the site throttles without saying how long to wait
    max_pause: float = 60.0
    probe_fast: float = 0.1  # share of the rate gained a second, well under the ceiling
    probe_slow: float = 0.002  # and near or past it
    near: float = 0.97  # "well under" is below this share of the ceiling
    # once the ceiling is known to be the site's limit, the rate holds at this share of it:
    # requests leave the pace for the wire a few milliseconds apart from their turn, so
    # held closer, the site sees a limit's worth in less than its window now and then
    hold: float = 0.95
    slow_latency: float = 3.0  # no probing while latency is this many times its best
    block_factor: float = 3.0  # a block this many times its first pause is a long block


@dataclass
class BlockLength:
    """How long a site's long blocks last, as far as probing has shown: between ``low``
    (the last probe still blocked) and ``high`` (the first that got through), in seconds
    from the block's first request. Shared by every exit to the site, since a site blocks
    each client for the same time."""

    low: float = 0.0
    high: float = 0.0

    def probes(self) -> tuple[float, ...]:
        """When, from a block's start, to look whether it is over: halfway between what is
        known, then where it ended last time, so each block narrows the next one's guess."""
        if not self.high:
            return ()
        return (
            ((self.low + self.high) / 2, self.high) if self.high - self.low > 0.2 else (self.high,)
        )

    def learn(self, low: float, high: float) -> None:
        if self.low < high:  # as long as the last, for all this one showed: keep that
            low = max(low, self.low)
        self.low, self.high = low, high


@dataclass
class SiteLore:
    """What one exit learns of a site that holds for every exit to it, since a site limits
    each client alike: how long its blocks last, its window (span -> requests that get
    through), once blocks have told it apart, and what got through per span (evidence
    against a span being the window, whichever exit it came from).

    The exits to a site start slowly. The first (the scout) goes unlimited; the others go
    at what it has shown gets through until its verdict, at most ``VERDICT_WAIT`` seconds:
    ``EARLY`` requests each at once, then the scout's answers that got through spread over
    ``HINT_SPAN`` seconds (the pace a block of the scout would start them at), so that each
    has work from the start, whatever the site, but none sends a burst the scout has not
    shown to get through. ``VERDICT_OKS`` answers got through the scout with
    no throttle, or a throttle with a ``Retry-After`` (a pause costs little), lets every
    exit loose, as the scout. A block with no ``Retry-After`` does not: the others start
    paced, the scout's count before it spread over ``HINT_SPAN`` seconds, as if what they
    sent before had gone at that pace; one of them (the explorer) climbs quickly from there
    to the site's limit, and the rest hold their rate until the explorer's block shows the
    window (its short spans ruled out by the scout's burst), which every exit then takes,
    or shows none, which lets them climb."""

    block: BlockLength = field(default_factory=BlockLength)
    window: dict[float, int] = field(default_factory=dict)
    exits: int = 0  # exits to the site so far
    passed: dict[float, int] = field(default_factory=dict)
    stopped: dict[float, int] = field(default_factory=dict)
    # in order of creation: the scout first
    paces: list[Pace] = field(default_factory=list, repr=False, compare=False)
    created: float = 0.0
    verdict: str = ""  # "" while the scout's first answers are awaited, "free", "paced"
    oks: int = 0  # answers got through the scout before the verdict
    hint: int = 0  # what got through the exit throttled first, before it was
    _explorer: Pace | None = field(default=None, repr=False, compare=False)

    def decide(self, now: float) -> str:
        """The verdict, once it is in: "" while the others go at the scout's evidence."""
        if not self.verdict and (self.oks >= VERDICT_OKS or now >= self.created + VERDICT_WAIT):
            self.verdict = "free"
        return self.verdict

    def throttled(self, pace: Pace, retry_after: float, now: float) -> None:
        """The site's first throttle (or block page), on any exit: the verdict."""
        if self.decide(now):
            return
        if retry_after:
            self.verdict = "free"
            return
        self.verdict = "paced"
        self.hint = max(1, pace.windows.oks_count())
        for other in self.paces:
            if other is not pace and not other.interval and not other.windows.caps:
                self.start(other, now)

    def start(self, pace: Pace, now: float) -> None:
        """An exit other than the one throttled first starts paced, below the site's limit
        for any window up to ``HINT_SPAN``: its next request goes when it would have, had
        the requests it sent before the verdict gone at that pace, so that they and the
        paced ones make no burst together."""
        pace.interval = HINT_SPAN / self.hint
        # throttled at a burst: climbing quickly, if let, up to that count a second
        pace.ceiling = float(self.hint)
        sends = pace.windows.sends
        at = max(
            (sent + (len(sends) - n) * pace.interval for n, sent in enumerate(sends)),
            default=now,
        )
        pace.next_at = max(pace.next_at, now, at)

    def pending(self, now: float) -> bool:
        """Whether the scout's verdict is still awaited by other exits."""
        return len(self.paces) > 1 and not self.decide(now)

    def explorer(self, now: float) -> Pace | None:
        """The exit that climbs to the site's limit while the others hold their rate, if
        one is still exploring: a live one, not the scout, not yet blocked for long."""
        if self.verdict != "paced" or self.window:
            return None
        current = self._explorer
        if current is not None and (current.long_blocks or current.blocked_for()):
            return current if not current.long_blocks else None
        if current is None or now - current.last_take > STALE:
            live = [
                p
                for p in self.paces
                if p is not self.paces[0]
                and not p.long_blocks
                and (p is current or now - p.last_take <= STALE or not p.sent)
            ]
            fresh = [p for p in live if p is not current and p.sent] or live
            self._explorer = current = fresh[0] if fresh else None
        return current

    def share(self, passed: dict[float, int], stopped: dict[float, int] | None = None) -> None:
        for span, n in passed.items():
            if n > self.passed.get(span, -1):
                self.passed[span] = n
        for span, n in (stopped or {}).items():
            self.stopped[span] = min(n, self.stopped.get(span, n))


@dataclass
class _Spell:
    """What got through between two reactions to the site's pushing back."""

    start: float
    end: float  # when it was judged
    span: float  # seconds, the pause that ended it included
    oks: int
    cap: float  # the interval it may set, at the most
    retry_after: float

    @property
    def first(self) -> bool:
        """Ended the pace's first unlimited burst: no rate of its own to halve."""
        return self.cap == math.inf

    def interval(self) -> float:
        return min(self.span / self.oks, self.cap)

    def ceiling(self) -> float:
        """After an unlimited burst, which was throttled at no rate of its own: what the
        site let through a ``Retry-After``, its window's limit when it says so exactly."""
        told = self.oks / self.retry_after if self.retry_after else 0.0
        return max(self.oks / self.span, told)


@dataclass
class Pace:
    settings: PaceSettings = field(default_factory=PaceSettings)
    clock: Callable[[], float] = time.monotonic
    interval: float = 0.0  # seconds between requests; 0 until the site first throttles
    next_at: float = 0.0  # the earliest the next request may go
    ceiling: float = 0.0  # the rate (requests/s) the site last throttled at
    throttles: int = 0
    sent: int = 0
    _cycle_start: float = 0.0  # when sending resumed after the last throttle
    _cycle_ok: int = 0
    _reacted_at: float = -math.inf  # answers to requests sent before this are old news
    _spell: _Spell | None = None  # the spell the last slow-down judged
    # the ceiling is the site's limit, told by a first Retry-After or confirmed by a second
    # throttle at about that rate: no climb past it
    _held: bool = False
    _in_a_row: int = 0  # throttles with nothing got through in between
    _best_latency: float = math.inf
    _latency: float = 0.0
    _recent: deque[float] = field(default_factory=lambda: deque(maxlen=64))  # latencies
    _quick: float = 0.0  # their tenth percentile, once settled
    windows: WindowCaps = field(default_factory=WindowCaps)
    long_blocks: int = 0
    _onset: float | None = None  # when the request that met the current block was sent
    _onset_pause: float = 0.0  # and the pause it got
    _streak_start: float = 0.0  # since the last long block
    _streak_ok: int = 0
    lore: SiteLore = field(default_factory=SiteLore)
    # the first exit to a site climbs back from a long block twice as fast as the others,
    # if any: the first to be blocked again finds the window and tells the others
    # (``SiteLore``), sparing them that block. Alone, it has no one to spare
    scout: bool = True
    _still_blocked: float | None = None  # the last request of this block that met it
    _learned: bool = False  # the current block was long, and has been learned from
    _onset_rate: float = 0.0  # the rate it began at
    _adopted: dict[float, int] = field(default_factory=dict)  # the lore's window, last taken
    _adopted_at: float = 0.0
    _observed: float | None = None  # the onset of the block last counted for the others
    last_take: float = -math.inf

    def __post_init__(self) -> None:
        self._cycle_start = self._streak_start = self.clock()

    @property
    def ready_at(self) -> float:
        """The earliest the next request may go: ``next_at``, or, for an exit still
        unlimited that is not its site's scout, past what the scout has shown gets through,
        when the scout's verdict is due (``SiteLore``)."""
        lore = self.lore
        if self.scout or self.interval or self.windows.caps or lore.decide(self.clock()):
            return self.next_at
        if self.sent < EARLY:
            return self.next_at
        # at the pace a block of the scout now would start it at, never faster
        shown = self.last_take + HINT_SPAN / lore.oks if lore.oks else math.inf
        return max(self.next_at, min(shown, lore.created + VERDICT_WAIT))

    @property
    def spaced(self) -> bool:
        """Whether a request waits for the exit's download slot to have room, rather than
        in its queue: once it is paced, and while the others await the scout's verdict, so
        that the scout does not take every request there is before they may have some."""
        return bool(self.interval) or self.lore.pending(self.clock())

    def take(self) -> None:
        """One request goes now."""
        now = self.clock()
        if not self.sent:
            # what got through is counted from the first request, not from the pace's making
            self._cycle_start = self._streak_start = now
        if self.lore.window and self.lore.window != self._adopted:
            self._adopt(now)
        self.windows.sent(now)
        self.last_take = now
        if self.windows.caps:
            # spread evenly under the caps rather than in bursts up to them, and no climb
            # past them that would burst the moment one lapses
            self.interval = max(self.interval, 1 / self.windows.rate(now))
        # a request a little late (the event loop was busy) keeps the schedule, so that
        # lateness does not add up to a slower rate than the pace's
        self.next_at = max(self.next_at, now - LATE * self.interval) + self.interval
        if self.windows.caps:
            self.next_at = self.windows.earliest(self.next_at)
        self.sent += 1

    def ok(self, sent_at: float, latency: float | None = None) -> None:
        if self._onset is not None and sent_at > self._onset:
            self._block_over(sent_at)
        self._streak_ok += 1
        spell = self._spell
        if spell is not None and spell.start <= sent_at < spell.end:
            # late news of the spell last judged: it let more through than was known
            spell.oks += 1
            self._judge(spell)
        elif sent_at >= self._reacted_at:
            self._cycle_ok += 1
        # how much later than the quickest answers it came: it reached the site that late,
        # or was held up after; a window's count takes the first, the safe side
        late = self.clock() - sent_at - self._quick if self._quick else 0.0
        self.windows.answered(sent_at, late)
        if self.scout and not self.lore.verdict:
            self.lore.oks += 1
        if len(self.lore.paces) > 1:
            self.lore.share(self.windows.passed)
        self._in_a_row = 0
        if latency is not None:
            self._latency = latency if not self._latency else 0.8 * self._latency + 0.2 * latency
            # the spread of arrivals counts the wait between the pace and the wire too
            self._recent.append(max(latency, self.clock() - sent_at))
            if len(self._recent) >= LATENCY_SETTLED:
                ordered = sorted(self._recent)
                self._quick = ordered[int(0.1 * len(ordered))]
                spread = ordered[int(0.9 * len(ordered))] - self._quick
                self.windows.jitter = spread
                # against the smoothed latency's best, once it has seen a few answers: one
                # lucky answer would make an ordinary spread of latencies look like a
                # slowing site
                self._best_latency = min(self._best_latency, self._latency)
        if self.interval <= 0 or sent_at < self._reacted_at or self._slowing():
            return
        # a ceiling the site told or confirmed is its limit: held well under, not neared
        level = self.settings.hold if self._held else self.settings.near
        near = 1 / self.interval >= level * self.ceiling
        probe = self.settings.probe_slow if near else self.settings.probe_fast
        if self.long_blocks and self.scout and self.lore.exits > 1 and not self.windows.known:
            probe *= 2
        if not self.scout and not self.long_blocks and not self.windows.caps:
            explorer = self.lore.explorer(self.clock())
            if explorer is self:
                probe = EXPLORE
            elif explorer is not None:
                return  # held while another finds the limit for every exit
        # the same gain a second whatever the rate: a fast exit must not probe faster
        self.interval *= 1 - min(0.5, probe * self.interval)
        self._hold()

    def _hold(self) -> None:
        """Under a ceiling the site told or confirmed, by ``hold``; no climb past it."""
        if self._held and self.ceiling > 0:
            self.interval = max(self.interval, 1 / (self.settings.hold * self.ceiling))

    def failed(self, sent_at: float) -> None:
        """A connection dropped or timed out: maybe "too fast", maybe a fluke of the network.

        The rate comes down as for a throttle, and the climb starts over, but with no pause:
        a reused connection that the other end had just closed costs nothing.
        """
        if self.interval and sent_at >= self._reacted_at:
            self.interval /= 0.85
            self._reacted_at = self.clock()

    def banned(self, sent_at: float, retry_after: float = 0.0, most: float = math.inf) -> float:
        """A block page (or a suspected block) through a proxy: the pace reacts as to a
        throttle, and returns how long the exit waits, which the proxy pool backs the proxy
        off for: a pool's own doubling backoff would look at a block's end long after the
        pace had planned to (a 10 s block found over 20 s late). ``most``: the recipe's
        longest backoff, which a pause without ``Retry-After`` keeps to."""
        self._react(sent_at, retry_after)
        self.next_at = min(self.next_at, self.clock() + max(most, retry_after))
        return self.paused_for()

    def paused_for(self) -> float:
        """Seconds until this exit may send again."""
        return max(0.0, self.next_at - self.clock())

    def throttled(self, sent_at: float, retry_after: float = 0.0) -> float:
        """The site pushed back on a request sent at ``sent_at``; returns the pause."""
        self.throttles += 1
        return self._react(sent_at, retry_after)

    def _react(self, sent_at: float, retry_after: float) -> float:
        now = self.clock()
        self.lore.throttled(self, retry_after, now)
        if self._onset is None and sent_at >= self._reacted_at:
            self._onset, self._onset_pause = sent_at, retry_after or self.settings.pause
        self._met_block(sent_at, now)
        if sent_at < self._reacted_at:
            # sent before the last reaction: its answer was already taken into account
            self.next_at = max(self.next_at, now + retry_after)
            return retry_after
        self._in_a_row += 1
        if self._cycle_ok >= 2 or (retry_after and not self.interval):
            # (the first throttle of a burst may come back before its answers: the rate is
            # set once two of them are in)
            pause = retry_after or self.settings.pause
            self._slow_down(now, pause, retry_after)
        else:
            backoff = self.settings.pause * GROWTH ** (self._in_a_row - 1)
            if self._learned and self._onset is not None and not retry_after:
                # a long block no block before has timed: looked at a share of its age
                # apart, so that its end is found that share late at most
                backoff = min(backoff, max(self.settings.pause, LOOK * (now - self._onset)))
            probe = None if retry_after else self._probe_at(now)
            pause = min(self.settings.max_pause, retry_after or probe or backoff)
            # outlasting a pause, it is a block like the site's last: learned from now, not
            # when it ends, so the other exits hear of it in time
            lasts = now + pause - (self._onset if self._onset is not None else now)
            if probe and not self._learned and lasts >= self._long_after():
                self._long_block(now)
            if probe:
                # a look at a block's end goes when planned, whatever the rate: nothing
                # gets through until then anyway
                self.next_at = now
        self.next_at = max(self.next_at, now + pause)
        self._reacted_at = now
        self._cycle_start, self._cycle_ok = now + pause, 0
        return pause

    def _probe_at(self, now: float) -> float | None:
        """The pause until the next look at whether a block is over, if the site's blocks
        have been timed before: growing pauses overshoot its end."""
        if self._onset is None:
            return None
        elapsed = now - self._onset
        later = [t for t in self.lore.block.probes() if t > elapsed + 0.05]
        return later[0] - elapsed if later else None

    def _slow_down(self, now: float, pause: float, retry_after: float = 0.0) -> None:
        """The rate becomes what got through since the last reaction, ``pause`` included;
        answers to that spell's requests that come in after the reaction count too."""
        first = not self.interval
        if not first:
            at = 1 / self.interval
            # throttled again at about the rate it last was: that is the site's limit, and
            # a climb past it would only buy the next throttle
            self._held = self._held or at <= HELD * self.ceiling
            self.ceiling = at
        self._spell = spell = _Spell(
            self._cycle_start,
            now,
            now - self._cycle_start + pause,
            self._cycle_ok,
            # a short spell between throttles says little: at most halve the rate
            math.inf if first else 2 * self.interval,
            retry_after,
        )
        if first:
            self._judge(spell)
        else:
            self.interval = spell.interval()
            self._hold()

    def _judge(self, spell: _Spell) -> None:
        """The rate the spell shows so far, which its late answers only raise; after the
        first throttle, once two answers show one (it may come back before the answers to
        the burst it ended)."""
        if spell.first:
            if spell.oks < 2:
                return
            self.interval = min(self.interval or math.inf, spell.interval())
            self.ceiling = max(self.ceiling, spell.ceiling())
            self._held = self._held or bool(spell.retry_after)
        else:
            self.interval = min(self.interval, spell.interval())
        self._hold()

    def _block_over(self, sent_at: float) -> None:
        """The first answer to get through since the block began, sent at ``sent_at``."""
        assert self._onset is not None
        onset, still = self._onset, self._still_blocked
        if not self._learned:
            if sent_at - onset < self._long_after():
                self._onset = self._still_blocked = None
                return  # a pause sat out, as the site asked
            self._long_block(self.clock())
        self._onset = self._still_blocked = None
        self._learned = False
        self.lore.block.learn((still or onset) - onset, sent_at - onset)
        self.windows.lasted(sent_at - onset, self.clock())
        if self._streak_ok and not self.windows.known:
            # what got through, the block included, is all that rate was worth
            got = self._streak_ok / max(sent_at - self._streak_start, 1e-3)
            self.interval = max(self.interval, 1 / got)
        self.ceiling = max(self._onset_rate, self.rate or 0.0)
        self._streak_ok = 0
        # the evidence for the next block starts here: nothing got through before
        self._streak_start = sent_at
        self._reacted_at = max(self._reacted_at, sent_at)
        self.next_at = self.windows.earliest(max(self.next_at, self.clock()))

    def _met_block(self, sent_at: float, now: float) -> None:
        """A request sent at ``sent_at`` met the block that began at ``_onset``."""
        if self._onset is None:
            return
        self._still_blocked = max(self._still_blocked or sent_at, sent_at)
        if self._learned:
            return
        # a site that has blocked another exit for long blocks this one for as long: its
        # first throttle with no longer Retry-After is a long block, learned from at once
        others = [p for p in self.lore.paces if p is not self]
        lasted = now - self._onset
        if others:
            # what got through before each block a pause old (its answers are in), this
            # exit's or another's that has not been heard from since, for the other
            # exits' blocks to be told apart by
            for pace in (self, *others):
                pace._observe()
        seen = self._onset_pause <= self.settings.pause and any(
            p.long_blocks or (p.blocked_for() >= p._long_after() and p.lasted_longer(lasted))
            for p in others
        )
        # an earlier block of another exit, not yet learned from, tells more learned first
        # (what got through before it): waited for, a while
        first = any(
            p._onset is not None and not p._learned for p in others if p.lasted_longer(lasted)
        )
        if seen or (
            lasted >= self._long_after() and (not first or lasted >= 2 * self._long_after())
        ):
            self._long_block(now)

    def _observe(self) -> None:
        if self._onset is None or self._observed == self._onset:
            return
        if self.clock() - self._onset >= self.settings.pause:
            self._observed = self._onset
            self.windows.observe(self._onset)
            self.lore.share(self.windows.passed, self.windows.stopped)

    def lasted_longer(self, seconds: float) -> bool:
        """Whether this exit's block began more than ``seconds`` ago."""
        return self._onset is not None and self.clock() - self._onset > seconds

    def _long_after(self) -> float:
        """How long a block lasts before it is a long one, a cost to learn from."""
        return self.settings.block_factor * max(self._onset_pause, self.settings.pause)

    def _long_block(self, now: float) -> None:
        """The block that began at ``_onset`` has lasted long: learned from at once, while
        it lasts, so that a window found reaches the other exits before they meet it too."""
        assert self._onset is not None
        self.long_blocks += 1
        self._learned = True
        by_lore = bool(self.lore.window) and self._adopted == self.lore.window
        length = max(now - self._onset, self.lore.block.high)
        # what got through other exits rules spans out as well as what got through this one
        self.windows.shared, self.windows.shared_stopped = self.lore.passed, self.lore.stopped
        onset_rate = self.windows.learn(self._onset, self._streak_start, now, length)
        self.lore.share(self.windows.passed, self.windows.stopped)
        if by_lore and self._onset < self._adopted_at:
            # met before the window another exit found was known: that window stands
            self.windows.adopt(self._adopted, now)
            self.interval = 1 / self.windows.rate(now)
            self._onset_rate = onset_rate
            return
        exact = {span: cap.blocked for span, cap in self.windows.caps.items() if cap.exact}
        if exact and (self.windows.known or by_lore):
            # the site's window, or one less through it than thought: every exit's now
            self.lore.window = self._adopted = exact
        if self.windows.known:
            # the caps are the site's window at its limit: no climb back to it is needed
            self.interval = 1 / self.windows.rate(now)
        self._onset_rate = onset_rate

    def _adopt(self, now: float) -> None:
        """Takes the window another exit to the site found: paced at its limit at once."""
        self._adopted, self._adopted_at = dict(self.lore.window), now
        self.windows.adopt(self._adopted, now)
        self.interval = 1 / self.windows.rate(now)
        self.ceiling = max(self.ceiling, 1 / self.interval)

    def blocked_for(self) -> float:
        """Seconds since the block the exit is in began; 0 when it is in none."""
        return self.clock() - self._onset if self._onset is not None else 0.0

    @property
    def rate(self) -> float | None:
        """Requests per second this pace allows; None while unlimited."""
        return 1 / self.interval if self.interval > 0 else None

    def _slowing(self) -> bool:
        best = self._best_latency
        return best < math.inf and self._latency > self.settings.slow_latency * best + 0.05


class Pacer:
    """Every pace of one crawl, by (exit, host)."""

    def __init__(
        self, settings: PaceSettings | None = None, clock: Callable[[], float] = time.monotonic
    ):
        self.settings = settings or PaceSettings()
        self.clock = clock
        self.paces: dict[tuple[str, str], Pace] = {}
        self.lore: dict[str, SiteLore] = {}  # per host, shared by its exits

    def pace(self, exit_: str, host: str) -> Pace:
        key = (exit_, host)
        if key not in self.paces:
            scout = host not in self.lore
            lore = self.lore.setdefault(host, SiteLore(created=self.clock()))
            lore.exits += 1
            made = self.paces[key] = Pace(self.settings, self.clock, lore=lore, scout=scout)
            lore.paces.append(made)
            if lore.verdict == "paced":
                lore.start(made, self.clock())  # a late exit starts as the others did
        return self.paces[key]

    def soonest(self, host: str, exits: Iterable[str]) -> tuple[str, float] | None:
        """The exit whose next request to ``host`` may go first, and when."""
        best: tuple[str, float] | None = None
        for name in exits:
            at = self.pace(name, host).ready_at
            if best is None or at < best[1]:
                best = (name, at)
        return best

    async def acquire(
        self,
        host: str,
        exits: Callable[[], Iterable[str]],
        full: Callable[[str], bool] | None = None,
    ) -> str | None:
        """Waits for the exit that can send to ``host`` soonest, and takes it.

        ``exits`` is asked again after every wait, since exits come and go; None when it
        offers none. An exit with a rate for which ``full`` is true is passed over until it
        is not; an unlimited one has no spacing for a queue to spoil, but while the others
        await its verdict the scout is passed over too: requests left in its queue are ones
        the others could send once they may.
        """
        while True:
            offered = list(exits())
            if not offered:
                return None
            free = [n for n in offered if not (full and self.pace(n, host).spaced and full(n))]
            found = self.soonest(host, free)
            if found is None:
                await sleep(SLOT_POLL)
                continue
            name, at = found
            wait = at - self.clock()
            if wait <= 0:
                self.pace(name, host).take()
                return name
            # exits can go meanwhile (a proxy dies, a ban is given up on): look again soon;
            # and soon again while the scout's verdict may let the others go
            soon = len(free) < len(offered) or not self.lore[host].verdict
            await sleep(min(wait, SLOT_POLL) if soon else min(wait, 1.0))

    def figures(self) -> dict[str, dict[str, Any]]:
        """Per exit: requests sent, throttles, and per host the rate learned and the window
        cap that holds it lowest, (seconds, requests)."""
        out: dict[str, dict[str, Any]] = {}
        for (name, host), pace in sorted(self.paces.items()):
            mine = out.setdefault(name, {"sent": 0, "throttled": 0})
            mine["sent"] += pace.sent
            mine["throttled"] += pace.throttles
            if pace.long_blocks:
                mine["long_blocks"] = mine.get("long_blocks", 0) + pace.long_blocks
            if pace.rate is not None:
                mine.setdefault("rate_per_s", {})[host] = round(pace.rate, 2)
            now = pace.clock()
            if capped := {s: pace.windows.limit(s, now) or 0 for s in pace.windows.caps}:
                # the span that holds the rate lowest: the site's window, once it is known
                span = min(capped, key=lambda s: capped[s] / s)
                mine.setdefault("window", {})[host] = (span, capped[span])
        return out


async def not_before(request: Any) -> None:
    """Waits until the time the request's ``NOT_BEFORE_META`` names, if any."""
    if (wait := request.meta.get(NOT_BEFORE_META, 0.0) - time.time()) > 0:
        await sleep(wait)


def exit_slot(host: str, exit_: str) -> str:
    """The download slot of requests to ``host`` through ``exit_``: a proxy gets its own
    concurrency to the site; the direct connection keeps Scrapy's slot, the host."""
    return host if exit_ == DIRECT else f"{host}@{exit_}"


def slot_full(crawler: Any, host: str) -> Callable[[str], bool]:
    """Whether a request to ``host`` through an exit would wait in its download slot."""

    def full(exit_: str) -> bool:
        try:
            engine = crawler.engine
        except RuntimeError:  # Scrapy's way of saying the crawl has not started
            return False
        downloader = engine.downloader if engine else None
        slot = downloader.slots.get(exit_slot(host, exit_)) if downloader else None
        return slot is not None and (bool(slot.queue) or slot.free_transfer_slots() <= 0)

    return full


_PACERS: weakref.WeakKeyDictionary[Any, Pacer] = weakref.WeakKeyDictionary()


def pacer_for(crawler: Any) -> Pacer:
    """The crawl's one pacer, shared by the proxy pool (which picks exits) and pacing."""
    if crawler not in _PACERS:
        s = crawler.settings
        _PACERS[crawler] = Pacer(
            PaceSettings(
                pause=s.getfloat("HARVEST_PACING_PAUSE"),
                max_pause=s.getfloat("HARVEST_PACING_MAX_PAUSE"),
            )
        )
    return _PACERS[crawler]
