"""Resuming a crawl that did not finish, from what the lake already holds.

A crawl records its start and its end in the ``runs`` table. One that never recorded an
end (killed, even with SIGKILL) is resumed by the next crawl of the source: same crawl id,
and every item page whose row is already committed in ``raw/<source>`` is not fetched
again. Rows still in the writer's buffer at the kill were never committed, so their pages
are fetched again: the lake ends with each page exactly once.
"""

from __future__ import annotations

import logging
from typing import Any

import pyarrow.compute as pc
from scrapy import Request, Spider, signals
from scrapy.crawler import Crawler
from scrapy.exceptions import IgnoreRequest, NotConfigured

from ingestion.lake import Lake
from ingestion.runs import CRAWL_STAGE, FINISHED, last_run

STAGE = CRAWL_STAGE
logger = logging.getLogger(__name__)


def unfinished_crawl(lake: Lake, source: str) -> str | None:
    """The id of the source's last crawl when it never recorded its end."""
    run = last_run(lake, STAGE, source)
    if run is None or run.get("state") == FINISHED:
        return None
    return str(run["crawl_id"])


def committed_urls(lake: Lake, source: str, crawl_id: str) -> set[str]:
    table = f"raw/{source}"
    if not lake.exists(table):
        return set()
    rows = lake.read(table, columns=["url", "crawl_id"])
    mine = rows.filter(pc.equal(rows["crawl_id"], crawl_id))
    return set(mine["url"].to_pylist())


class ResumeMiddleware:
    """Drops requests for pages whose rows this crawl id already committed."""

    def __init__(self, crawler: Crawler):
        self.crawler = crawler
        self.done: set[str] = set()

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ResumeMiddleware:
        if not crawler.settings.getbool("HARVEST_RESUME"):
            raise NotConfigured
        mw = cls(crawler)
        crawler.signals.connect(mw.spider_opened, signal=signals.spider_opened)
        return mw

    def spider_opened(self, spider: Spider) -> None:
        settings = self.crawler.settings
        recipe = getattr(spider, "recipe", None)
        source = recipe.name if recipe else spider.name
        lake = Lake(settings.get("HARVEST_LAKE"))
        self.done = committed_urls(lake, source, settings.get("HARVEST_CRAWL_ID"))
        logger.warning(
            "resuming crawl %s: %d pages already in the lake",
            settings.get("HARVEST_CRAWL_ID"),
            len(self.done),
        )

    def process_request(self, request: Request, spider: Spider | None = None) -> Any:
        if request.url in self.done:
            assert self.crawler.stats is not None
            self.crawler.stats.inc_value("harvest/resume/skipped")
            raise IgnoreRequest(f"{request.url} is already in the lake")
        return None
