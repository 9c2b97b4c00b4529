"""A hand-written spider for the demo site, runnable as ``scrapy crawl demo_news``.

It writes to the same lake as recipe crawls, as source ``demo_news``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import scrapy
from scrapy.http import Response, TextResponse


class DemoNewsSpider(scrapy.Spider):
    name = "demo_news"
    allowed_domains = ["127.0.0.1", "localhost"]
    custom_settings = {"HARVEST_ALLOW_PRIVATE": True}  # the demo site runs on loopback

    def __init__(self, url: str = "http://127.0.0.1:8765/", **kwargs: Any):
        super().__init__(**kwargs)
        self.start_urls = [url]

    async def start(self) -> AsyncIterator[Any]:
        for url in self.start_urls:
            yield scrapy.Request(url, callback=self.parse)

    def parse(self, response: Response, **kwargs: Any) -> Iterator[Any]:
        assert isinstance(response, TextResponse)
        yield from response.follow_all(css="a.article-link", callback=self.parse_article)
        yield from response.follow_all(css="a.next", callback=self.parse)

    def parse_article(self, response: Response) -> dict[str, Any]:
        assert isinstance(response, TextResponse)
        return {
            "url": response.url,
            "http_status": response.status,
            "fetched_at": datetime.now(UTC),
            "title": response.css("h1.title::text").get(default="").strip(),
            "body": "\n".join(t.strip() for t in response.css("div.body p::text").getall()),
            "author": response.css(".author::text").get(default="").strip(),
            "published": response.css("time::attr(datetime)").get(default=""),
        }
