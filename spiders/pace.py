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
next pause is the ``Retry-After`` or, without one, half as long again as the last.

A block that outlasts that pause by far (nothing but throttles or block pages for
``block_factor`` times the first pause) is a cost to learn from, not a pause to sit out:
the rate goes down to what got through since the last such block, block included, and the
request counts per window that led to it are capped from then on (spiders/windows.py), so
neither the rate nor the burst that caused it comes back soon. What a block teaches is
kept for every exit to the site (``SiteLore``): the next block is looked at where the last
one ended, not after pauses that grow past it, and a window one exit found paces the others
at its limit before they meet the block that taught it.

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
SLOT_POLL = 0.02  # seconds between looks at a full download slot
# each pause that proves too short is this much longer: doubling finds a 10 s block's end
# at 15 s, this at 13 s, for a probe or two more
GROWTH = 1.5
LATENCY_SETTLED = 10  # answers before the smoothed latency is a baseline


@dataclass
class PaceSettings:
    pause: float = 1.0  # when the site throttles without saying how long to wait
    max_pause: float = 60.0
    probe_fast: float = 0.1  # share of the rate gained a second, well under the ceiling
    probe_slow: float = 0.005  # and near or past it
    near: float = 0.97  # "well under" is below this share of the ceiling
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
    each client alike: how long its blocks last, and its window (span -> requests that get
    through), once one exit's blocks have told it apart."""

    block: BlockLength = field(default_factory=BlockLength)
    window: dict[float, int] = field(default_factory=dict)
    exits: int = 0  # exits to the site so far


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
    _in_a_row: int = 0  # throttles with nothing got through in between
    _best_latency: float = math.inf
    _latency: float = 0.0
    _recent: deque[float] = field(default_factory=lambda: deque(maxlen=64))  # latencies
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

    def __post_init__(self) -> None:
        self._cycle_start = self._streak_start = self.clock()

    def take(self) -> None:
        """One request goes now."""
        now = self.clock()
        if self.lore.window and self.lore.window != self._adopted:
            self._adopt(now)
        self.windows.sent(now)
        if self.windows.caps:
            # spread evenly under the caps rather than in bursts up to them, and no climb
            # past them that would burst the moment one lapses
            self.interval = max(self.interval, 1 / self.windows.rate(now))
        self.next_at = max(self.next_at, now) + self.interval
        if self.windows.caps:
            self.next_at = self.windows.earliest(self.next_at)
        self.sent += 1

    def ok(self, sent_at: float, latency: float | None = None) -> None:
        if self._onset is not None and sent_at > self._onset:
            self._block_over(sent_at)
        self._streak_ok += 1
        self._cycle_ok += 1
        self.windows.answered(sent_at)
        self._in_a_row = 0
        if latency is not None:
            self._latency = latency if not self._latency else 0.8 * self._latency + 0.2 * latency
            self._recent.append(latency)
            if len(self._recent) >= LATENCY_SETTLED:
                ordered = sorted(self._recent)
                spread = ordered[int(0.9 * len(ordered))] - ordered[int(0.1 * len(ordered))]
                self.windows.jitter = spread
                # against the smoothed latency's best, once it has seen a few answers: one
                # lucky answer would make an ordinary spread of latencies look like a
                # slowing site
                self._best_latency = min(self._best_latency, self._latency)
        if self.interval <= 0 or sent_at < self._reacted_at or self._slowing():
            return
        near = 1 / self.interval >= self.settings.near * self.ceiling
        probe = self.settings.probe_slow if near else self.settings.probe_fast
        if self.long_blocks and self.scout and self.lore.exits > 1 and not self.windows.known:
            probe *= 2
        # the same gain a second whatever the rate: a fast exit must not probe faster
        self.interval *= 1 - min(0.5, probe * self.interval)

    def failed(self, sent_at: float) -> None:
        """A connection dropped or timed out: maybe "too fast", maybe a fluke of the network.

        The rate comes down as for a throttle, and the climb starts over, but with no pause:
        a reused connection that the other end had just closed costs nothing.
        """
        if self.interval and sent_at >= self._reacted_at:
            self.interval /= 0.85
            self._reacted_at = self.clock()

    def banned(self, sent_at: float) -> None:
        """A block page. The proxy pool backs the exit off, so no pause here; but the rate
        comes down as for a throttle, so that requests waiting for the exit do not all
        rush it, and each be blocked, the moment it is back."""
        now = self.clock()
        if self._onset is None and sent_at >= self._reacted_at:
            self._onset, self._onset_pause = sent_at, self.settings.pause
        self._met_block(sent_at, now)
        if sent_at < self._reacted_at:
            return
        if self._cycle_ok >= 2:
            self._slow_down(now, self.settings.pause)
        self._reacted_at = now
        self._cycle_start, self._cycle_ok = now, 0

    def throttled(self, sent_at: float, retry_after: float = 0.0) -> float:
        """The site pushed back on a request sent at ``sent_at``; returns the pause."""
        now = self.clock()
        self.throttles += 1
        if self._onset is None and sent_at >= self._reacted_at:
            self._onset, self._onset_pause = sent_at, retry_after or self.settings.pause
        self._met_block(sent_at, now)
        if sent_at < self._reacted_at:
            # sent before the last reaction: its answer was already taken into account
            self.next_at = max(self.next_at, now + retry_after)
            return retry_after
        self._in_a_row += 1
        if self._cycle_ok >= 2:
            pause = retry_after or self.settings.pause
            self._slow_down(now, pause)
        else:
            backoff = self.settings.pause * GROWTH ** (self._in_a_row - 1)
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

    def _slow_down(self, now: float, pause: float) -> None:
        """The rate becomes what got through since the last reaction, ``pause`` included."""
        got = self._cycle_ok / (now - self._cycle_start + pause)
        if self.interval:
            self.ceiling = 1 / self.interval
            # a short spell between throttles says little: at most halve the rate
            self.interval = min(1 / got, 2 * self.interval)
        else:
            self.ceiling, self.interval = got, 1 / got

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
        if not self._learned and now - self._onset >= self._long_after():
            self._long_block(now)

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
        onset_rate = self.windows.learn(self._onset, self._streak_start, now, length)
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
        self._adopted = dict(self.lore.window)
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
            lore = self.lore.setdefault(host, SiteLore())
            lore.exits += 1
            self.paces[key] = Pace(self.settings, self.clock, lore=lore, scout=scout)
        return self.paces[key]

    def soonest(self, host: str, exits: Iterable[str]) -> tuple[str, float] | None:
        """The exit whose next request to ``host`` may go first, and when."""
        best: tuple[str, float] | None = None
        for name in exits:
            at = self.pace(name, host).next_at
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
        is not; an unlimited one has no spacing for a queue to spoil.
        """
        while True:
            offered = list(exits())
            if not offered:
                return None
            free = [n for n in offered if not (full and self.pace(n, host).interval and full(n))]
            found = self.soonest(host, free)
            if found is None:
                await sleep(SLOT_POLL)
                continue
            name, at = found
            wait = at - self.clock()
            if wait <= 0:
                self.pace(name, host).take()
                return name
            # exits can go meanwhile (a proxy dies, a ban is given up on): look again soon
            await sleep(min(wait, SLOT_POLL) if len(free) < len(offered) else min(wait, 1.0))

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


def exit_slot(host: str, exit_: str) -> str:
    """The download slot of requests to ``host`` through ``exit_``: a proxy gets its own
    concurrency to the site; the direct connection keeps Scrapy's slot, the host."""
    return host if exit_ == DIRECT else f"{host}@{exit_}"


def slot_full(crawler: Any, host: str) -> Callable[[str], bool]:
    """Whether a request to ``host`` through an exit would wait in its download slot."""

    def full(exit_: str) -> bool:
        downloader = crawler.engine.downloader if crawler.engine else None
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
