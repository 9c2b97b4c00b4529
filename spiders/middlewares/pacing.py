"""Paces the direct connection to a site by what the site answers.

A 429 or 503 through the direct connection (proxied requests are the proxy pool's) doubles
the gap between requests to that site, up to ``HARVEST_PACING_MAX_DELAY``, holds the
site's download slot for at least the ``Retry-After``, and sends the request again; every
good answer narrows the gap by ``HARVEST_PACING_STEP``. That is additive increase and
multiplicative decrease of the request rate, so a crawl of a rate-limited site learns
its pace instead of losing pages to retries fired straight back into the limit.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from scrapy import Request, Spider
from scrapy.crawler import Crawler
from scrapy.exceptions import IgnoreRequest, NotConfigured
from scrapy.http import Response

from spiders.middlewares.bans import parse_retry_after
from spiders.middlewares.proxypool import PROXY_META

logger = logging.getLogger(__name__)
THROTTLED = (429, 503)
TRIES_META = "harvest_pacing_tries"


class PacingMiddleware:
    def __init__(self, crawler: Crawler):
        settings = crawler.settings
        self.crawler = crawler
        self.min_delay = settings.getfloat("DOWNLOAD_DELAY")
        self.start = settings.getfloat("HARVEST_PACING_START_DELAY")
        self.step = settings.getfloat("HARVEST_PACING_STEP")
        self.max_delay = settings.getfloat("HARVEST_PACING_MAX_DELAY")
        self.max_tries = settings.getint("HARVEST_PACING_MAX_TRIES")
        self.last_backoff: dict[int, float] = {}

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> PacingMiddleware:
        if not crawler.settings.getbool("HARVEST_PACING"):
            raise NotConfigured
        return cls(crawler)

    def slot(self, request: Request) -> Any:
        assert self.crawler.engine is not None
        downloader = self.crawler.engine.downloader
        return downloader.slots.get(downloader.get_slot_key(request))

    def process_response(
        self, request: Request, response: Response, spider: Spider | None = None
    ) -> Any:
        if PROXY_META in request.meta:
            return response
        slot = self.slot(request)
        if slot is None:
            return response
        if response.status not in THROTTLED:
            if response.status < 400 and slot.delay > self.min_delay:
                slot.delay = max(self.min_delay, slot.delay - self.step)
            return response
        # the answers to requests already in flight say nothing new: back off once per gap
        now = time.monotonic()
        key = id(slot)
        if now - self.last_backoff.get(key, 0.0) > max(slot.delay, self.start):
            slot.delay = min(self.max_delay, max(self.start, slot.delay * 2))
            self.last_backoff[key] = now
        wait = parse_retry_after(response)
        # the slot sends its next request no sooner than lastseen + delay
        slot.lastseen = max(slot.lastseen, now + wait - slot.delay)
        assert self.crawler.stats is not None
        self.crawler.stats.inc_value("harvest/pacing/throttled")
        self.crawler.stats.max_value("harvest/pacing/max_delay_ms", int(slot.delay * 1000))
        tries = request.meta.get(TRIES_META, 0) + 1
        if tries > self.max_tries:
            self.crawler.stats.inc_value("harvest/failed/throttled")
            raise IgnoreRequest(f"{request.url}: still throttled after {self.max_tries} tries")
        logger.info("throttled (%d) on %s: %.2fs between requests, waiting %.1fs",
                    response.status, request.url, slot.delay, wait)  # fmt: skip
        retry = request.copy()
        retry.meta[TRIES_META] = tries
        retry.dont_filter = True
        return retry
