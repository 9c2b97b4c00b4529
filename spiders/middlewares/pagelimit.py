"""``harvest crawl --pages N`` (``HARVEST_PAGES``): no more than N pages downloaded, for a
quick look at a recipe. ``CLOSESPIDER_PAGECOUNT`` alone lets every request already in
flight finish, as many as ``CONCURRENT_REQUESTS`` past N."""

from __future__ import annotations

from typing import Any

from scrapy import Request, Spider
from scrapy.crawler import Crawler
from scrapy.exceptions import IgnoreRequest, NotConfigured

DROPPED = "harvest/pages_limit/dropped"


class PageLimitMiddleware:
    def __init__(self, crawler: Crawler, limit: int):
        self.crawler, self.limit = crawler, limit
        self.urls: set[str] = set()  # a retry of a page is not another page

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> PageLimitMiddleware:
        limit = crawler.settings.getint("HARVEST_PAGES")
        if limit <= 0:
            raise NotConfigured
        return cls(crawler, limit)

    def process_request(self, request: Request, spider: Spider | None = None) -> Any:
        if request.meta.get("dont_obey_robotstxt") or request.url in self.urls:
            return None  # robots.txt is not a page of the site's
        if len(self.urls) >= self.limit:
            assert self.crawler.stats is not None
            self.crawler.stats.inc_value(DROPPED)
            raise IgnoreRequest(f"past --pages {self.limit}")
        self.urls.add(request.url)
        return None
