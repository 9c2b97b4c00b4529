"""Paces every exit to every site by what the site answers (the pace itself: spiders/pace.py).

A request through the direct connection waits here for its pace; one through a proxy has
waited in the proxy pool, which picks the proxy that can send soonest. Every answer then
teaches its exit's pace: a 429 or 503 slows it and pauses it for at least the
``Retry-After``, a dropped connection slows it, a good answer speeds it up. A throttled
request is sent again, through whichever exit is free first; one still throttled after
``HARVEST_PACING_MAX_TRIES`` is given up and counted. A block page (the recipe's ``ban``
policy) through a proxy is the proxy pool's to retry, and the proxy waits its pace's pause,
``ban.backoff_max`` at most; through the direct connection it is paced and sent again as
a 429 would be, at most ``HARVEST_BAN_MAX_RETRIES`` times, and not once the exit has been
blocked for ``HARVEST_BAN_MAX_WAIT`` seconds. A block that lasts far longer than a pause
caps the exit's requests per window (spiders/windows.py).

Each exit keeps its own cookies: a site that limits per session cookie would otherwise see
one session spread over every proxy, and block them all at once.
"""

from __future__ import annotations

import logging

from scrapy import Request, signals
from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured
from scrapy.http import Response
from scrapy.utils.httpobj import urlparse_cached

from spiders.account import GaveUp
from spiders.middlewares.bans import BanDetector, parse_retry_after
from spiders.middlewares.proxypool import PROXY_META
from spiders.pace import DIRECT, EXIT_META, not_before, pacer_for, slot_full
from spiders.recipe import BanPolicy, Recipe

logger = logging.getLogger(__name__)
THROTTLED = (429, 503)
TRIES_META = "harvest_pacing_tries"
SENT_META = "harvest_sent_at"
JAR_META = "harvest_cookiejar"  # the cookie jar this middleware chose, not the spider


class PacingMiddleware:
    def __init__(self, crawler: Crawler):
        self.crawler = crawler
        self.pacer = pacer_for(crawler)
        recipe: Recipe | None = getattr(crawler.spider, "recipe", None)
        policy = recipe.ban if recipe is not None else BanPolicy()
        self.detector = BanDetector(policy)
        self.ban_backoff_max = policy.backoff_max
        self.max_tries = crawler.settings.getint("HARVEST_PACING_MAX_TRIES")
        # a page blocked for good is given up as soon as the proxy pool would give it up,
        # or once the direct connection has been blocked for longer than a site blocks for
        # a while: a ban for good must end the crawl, not keep it probing for hours
        self.max_ban_tries = crawler.settings.getint("HARVEST_BAN_MAX_RETRIES")
        self.max_ban_wait = crawler.settings.getfloat("HARVEST_BAN_MAX_WAIT")
        self.banned: set[str] = set()  # hosts whose direct block is a ban, until one gets through
        crawler.signals.connect(self.spider_closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> PacingMiddleware:
        if not crawler.settings.getbool("HARVEST_PACING"):
            raise NotConfigured
        return cls(crawler)

    async def process_request(self, request: Request) -> None:
        await not_before(request)
        # the pool (before us) picks a proxy for every request; with none, the direct
        # connection, whatever exit a retried request's meta still names
        if PROXY_META not in request.meta:
            host = urlparse_cached(request).hostname or ""
            self._give_up_if_banned_for_good(request, host)
            full = slot_full(self.crawler, host)

            def direct() -> tuple[str, ...]:
                return () if self._banned_for_good(host) else (DIRECT,)

            request.meta[EXIT_META] = await self.pacer.acquire(host, direct, full)
            self._give_up_if_banned_for_good(request, host)
        request.meta[SENT_META] = self.pacer.clock()
        if request.meta.get("cookiejar") == request.meta.get(JAR_META):
            request.meta["cookiejar"] = request.meta[JAR_META] = request.meta.get(EXIT_META)

    def process_response(self, request: Request, response: Response) -> Request | Response:
        exit_ = request.meta.get(EXIT_META)
        if exit_ is None:
            return response
        pace = self.pacer.pace(exit_, urlparse_cached(request).hostname or "")
        sent = request.meta.get(SENT_META, 0.0)
        if response.status in THROTTLED:
            pause = pace.throttled(sent, parse_retry_after(response))
            self._inc(f"throttled/{exit_}")
            return self._again(request, response.status, pause)
        ban = self.detector.check(response)
        if ban is None:
            if response.status < 400:
                pace.ok(sent, request.meta.get("download_latency"))
                if PROXY_META not in request.meta:
                    self.banned.discard(urlparse_cached(request).hostname or "")
            return response
        if PROXY_META in request.meta:
            # the pool backs that proxy off for the pace's pause and retries elsewhere
            pace.banned(sent, ban.retry_after, self.ban_backoff_max)
            return response
        # the direct connection has nowhere else to go: the block is waited out as a 429
        # without Retry-After, its end found by pauses that grow (spiders/pace.py)
        pause = pace.throttled(sent, ban.retry_after)
        self._inc(f"bans/{exit_}")
        host = urlparse_cached(request).hostname or ""
        self.banned.add(host)
        self._give_up_if_banned_for_good(request, host)
        return self._again(request, response.status, pause, banned=True)

    def _give_up_if_banned_for_good(self, request: Request, host: str) -> None:
        """Every page to a host the direct connection has been banned from for longer than
        ``HARVEST_BAN_MAX_WAIT`` is given up, not sent: nothing else can fetch it."""
        if self._banned_for_good(host):
            assert self.crawler.stats is not None
            self.crawler.stats.inc_value("harvest/failed/banned")
            seconds = self.pacer.pace(DIRECT, host).blocked_for()
            message = f"{request.url}: banned for {seconds:.0f} s"
            raise GaveUp("banned", message, transient=False)

    def _banned_for_good(self, host: str) -> bool:
        blocked = self.pacer.pace(DIRECT, host).blocked_for()
        return host in self.banned and blocked > self.max_ban_wait

    def process_exception(self, request: Request, exception: Exception) -> None:
        exit_ = request.meta.get(EXIT_META)
        if exit_ is not None and BanDetector.is_connection_failure(exception):
            # dropped connections and timeouts are how some sites say "too fast"
            pace = self.pacer.pace(exit_, urlparse_cached(request).hostname or "")
            pace.failed(request.meta.get(SENT_META, 0.0))
        # RetryMiddleware, or the proxy pool, sends it again

    def _again(self, request: Request, status: int, pause: float, banned: bool = False) -> Request:
        tries = request.meta.get(TRIES_META, 0) + 1
        why = "banned" if banned else "throttled"
        if tries > (self.max_ban_tries if banned else self.max_tries):
            assert self.crawler.stats is not None
            self.crawler.stats.inc_value(f"harvest/failed/{why}")
            raise GaveUp(why, f"{request.url}: still {why} after {tries - 1} tries")
        if banned:
            self._inc("ban_retries")
        logger.debug("%s (%d) on %s: pausing %.1fs", why, status, request.url, pause)
        retry = request.copy()
        retry.meta[TRIES_META] = tries
        for key in (EXIT_META, PROXY_META, "download_slot"):  # free to take another exit
            retry.meta.pop(key, None)
        retry.dont_filter = True
        return retry

    def spider_closed(self) -> None:
        stats = self.crawler.stats
        assert stats is not None
        for name, figures in self.pacer.figures().items():
            stats.set_value(f"harvest/pace/sent/{name}", figures["sent"])
            if blocks := figures.get("long_blocks"):
                stats.set_value(f"harvest/pace/long_blocks/{name}", blocks)
            if rates := figures.get("rate_per_s"):
                stats.set_value(f"harvest/pace/rate_per_s/{name}", round(sum(rates.values()), 2))
            if windows := figures.get("window"):
                # the busiest host's: one crawl mostly paces one site
                host = max(windows, key=lambda h: self.pacer.paces[(name, h)].sent)
                span, limit = windows[host]
                stats.set_value(f"harvest/pace/window_seconds/{name}", span)
                stats.set_value(f"harvest/pace/window_requests/{name}", limit)

    def _inc(self, key: str) -> None:
        assert self.crawler.stats is not None
        self.crawler.stats.inc_value(f"harvest/pace/{key}")
