"""Bare Scrapy spiders for the demo site, run with Scrapy's defaults as shipped.

``python bench/scrapy_bare.py URL`` crawls the plain section; ``--render`` crawls the
JavaScript section (``URL/js/``), rendering article pages through scrapy-playwright.
``--path /guarded/`` starts from another section; ``--rotating-proxies URL ...`` adds
scrapy-rotating-proxies with its defaults, as its README sets it up, and ``--autothrottle``
turns AutoThrottle on. Run by path from an empty folder, so no project settings
(scrapy.cfg) are picked up. Prints one JSON line: pages (responses) and items.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator
from typing import Any

import scrapy
from scrapy.crawler import CrawlerProcess
from scrapy.http import Response

from spiders import render

# the launch flags harvest uses (DESIGN.md), less the features it turns off for its pool
CHROMIUM_ARGS = list(render.CHROMIUM_ARGS)


class NewsSpider(scrapy.Spider):
    name = "bench_news"
    render = False

    def __init__(self, url: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.url = url

    async def start(self) -> AsyncIterator[scrapy.Request]:
        yield scrapy.Request(self.url)

    def parse(self, response: Response) -> Any:
        yield from response.follow_all(css="nav.pagination a")
        for link in response.css("ul.articles a::attr(href)").getall():
            yield response.follow(link, self.parse_article, meta=self.article_meta())

    def article_meta(self) -> dict[str, Any]:
        return {}

    def parse_article(self, response: Response) -> Any:
        yield {
            "url": response.url,
            "title": response.css("h1.title::text").get(),
            "body": " ".join(response.css("div.body p::text").getall()),
            "author": response.css("span.author::text").get(),
            "published": response.css("time::attr(datetime)").get(),
            "tags": response.css("ul.tags li::text").getall(),
        }


class RenderedNewsSpider(NewsSpider):
    name = "bench_news_rendered"

    def article_meta(self) -> dict[str, Any]:
        from scrapy_playwright.page import PageMethod

        # the script fills the article in after "load"; an empty body is still attached
        wait = PageMethod("wait_for_selector", "div.body", state="attached")
        return {"playwright": True, "playwright_page_methods": [wait]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--render", action="store_true")
    parser.add_argument("--path", default="/", help="where to start, e.g. /guarded/")
    parser.add_argument("--rotating-proxies", nargs="+", metavar="URL", default=[])
    parser.add_argument("--autothrottle", action="store_true")
    args = parser.parse_args()
    settings: dict[str, Any] = {}
    spider: type[NewsSpider] = NewsSpider
    url = args.url.rstrip("/") + "/" + args.path.lstrip("/")
    if args.rotating_proxies:
        settings["ROTATING_PROXY_LIST"] = args.rotating_proxies
        settings["DOWNLOADER_MIDDLEWARES"] = {
            "rotating_proxies.middlewares.RotatingProxyMiddleware": 610,
            "rotating_proxies.middlewares.BanDetectionMiddleware": 620,
        }
    if args.autothrottle:
        settings["AUTOTHROTTLE_ENABLED"] = True
    if args.render:
        spider, url = RenderedNewsSpider, url + "js/"
        handler = "scrapy_playwright.handler.ScrapyPlaywrightDownloadHandler"
        settings = {
            "DOWNLOAD_HANDLERS": {"http": handler, "https": handler},
            "PLAYWRIGHT_LAUNCH_OPTIONS": {
                "executable_path": "/usr/bin/chromium",
                "args": CHROMIUM_ARGS,
            },
        }
    process = CrawlerProcess(settings)
    crawler = process.create_crawler(spider)
    process.crawl(crawler, url=url)
    process.start()
    assert crawler.stats is not None
    stats = crawler.stats.get_stats()
    result = {
        "pages": stats.get("response_received_count", 0),
        "items": stats.get("item_scraped_count", 0),
        "finish_reason": stats.get("finish_reason"),
    }
    if args.path != "/" or args.rotating_proxies:
        result["stats"] = {
            key: value
            for key, value in stats.items()
            if key.startswith(("retry/", "bans/", "proxies/", "downloader/response_status"))
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
