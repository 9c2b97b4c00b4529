"""Ends a crawl that has stopped making progress, and any stop that outstays its deadline.

Scrapy's own stop (the first SIGINT or SIGTERM, a CLOSESPIDER limit) waits for every
request in flight to finish, and a request stuck in a browser page or behind a proxy
that never answers can wait for as long as its timeouts allow, or for ever. So:

- ``HARVEST_STALL_TIMEOUT`` (s, 0: off): a crawl that receives no response, download
  error or item for that long is closed with reason ``stalled``; the account names the
  stall and ``harvest crawl`` exits 3.
- ``HARVEST_SHUTDOWN_GRACE`` (s): a signal's or the watchdog's stop that has not finished
  by then is forced: the lake pipeline commits the rows it holds, records the crawl as
  unfinished, so that the next crawl resumes it, and the reactor stops. A spider closing
  as it finishes, or at a CLOSESPIDER limit, is bounded by the stall timeout instead.

A second signal still ends the crawl at once, as Scrapy does; SIGKILL leaves a crawl
that the next one resumes.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from scrapy import Spider, signals
from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured
from twisted.internet import task

from spiders.pipelines import LakePipeline

logger = logging.getLogger(__name__)
STALLED = "stalled"
TICK = 1.0  # seconds between looks


def installed_reactor() -> Any:
    """The reactor Scrapy installed. Imported only when called: importing it at module
    level installs Twisted's default one, and a process forked to crawl must not have one."""
    from twisted.internet import reactor

    return reactor


# what counts as progress: something came back, or an item was made
PROGRESS = ("response_received_count", "downloader/exception_count", "item_scraped_count")


class Watchdog:
    def __init__(self, crawler: Crawler, stall: float, grace: float, clock: Any = time):
        self.crawler = crawler
        self.stall, self.grace, self.clock = stall, grace, clock
        self.seen: tuple[int, ...] = ()
        self.since = clock.monotonic()
        self.loop: task.LoopingCall | None = None
        self.closing: str | None = None
        self.closed = False
        self.started = False  # the engine has been seen running

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Watchdog:
        stall = crawler.settings.getfloat("HARVEST_STALL_TIMEOUT")
        grace = crawler.settings.getfloat("HARVEST_SHUTDOWN_GRACE")
        if grace <= 0:
            raise NotConfigured
        dog = cls(crawler, stall, grace)
        crawler.signals.connect(dog.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(dog.spider_closed, signal=signals.spider_closed)
        return dog

    def spider_opened(self, spider: Spider) -> None:
        self.since = self.clock.monotonic()
        self.loop = task.LoopingCall(self.check)
        self.loop.start(TICK, now=False)

    def progress(self) -> tuple[int, ...]:
        stats = self.crawler.stats
        assert stats is not None
        return tuple(int(stats.get_value(key, 0)) for key in PROGRESS)

    def check(self) -> None:
        engine = self.crawler.engine
        if engine is None or self.closing is not None:
            return
        if engine.running:
            self.started = True
        # a signal stopped the engine (a spider that finishes or a CLOSESPIDER limit
        # closes it running, and the stall check below bounds that close)
        if getattr(engine, "_stopping", False) or (self.started and not engine.running):
            self.deadline("shutdown")
            return
        now = self.clock.monotonic()
        seen = self.progress()
        if seen != self.seen:
            self.seen, self.since = seen, now
            return
        idle = now - self.since
        if self.stall <= 0 or idle < self.stall:
            return
        stats = self.crawler.stats
        assert stats is not None
        stats.set_value("harvest/stalled_for", round(idle))
        logger.error("no progress for %d s: ending the crawl", idle)
        self.deadline(STALLED)
        if self.crawler.spider is not None:
            engine.close_spider(self.crawler.spider, STALLED)

    def deadline(self, reason: str) -> None:
        """Forces the close ``grace`` seconds from now unless it has finished by then."""
        self.closing = reason
        installed_reactor().callLater(self.grace, self.force)

    def force(self) -> None:
        if self.closed:
            return
        engine, stats, spider = self.crawler.engine, self.crawler.stats, self.crawler.spider
        assert stats is not None
        in_flight = len(engine.downloader.active) if engine is not None else 0
        logger.error(
            "%d request(s) still in flight %g s after the crawl began to stop: ending it",
            in_flight,
            self.grace,
        )
        stats.set_value("harvest/forced_stop", in_flight)
        stats.set_value("finish_reason", self.closing or "shutdown")
        pipe = self.crawler.get_item_pipeline(LakePipeline)
        if pipe is not None and spider is not None:
            # what the pipeline holds lands; the crawl stays unfinished, to be resumed
            pipe.close_spider(spider)
            pipe.spider_closed(spider, "shutdown")
        self.closed = True
        # CrawlerProcess stops its crawlers before the reactor shuts down, and that stop
        # would wait for the same stuck requests: mark this one as stopped already
        self.crawler.crawling = False
        installed_reactor().stop()

    def spider_closed(self, spider: Spider, reason: str) -> None:
        self.closed = True
        if self.loop is not None and self.loop.running:
            self.loop.stop()
