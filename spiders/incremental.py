"""Recrawls fetch only what changed, and record what was new, changed or gone.

Pages crawled before are requested with their validators (``If-None-Match``,
``If-Modified-Since``); a 304 is counted unchanged and goes no further. Where a server
gives no validators, the page is fetched and its content hash compared with the last one
in the lake; an unchanged row is not written again. At the end, every page the lake had
that this crawl did not see (gone from the listings, or 404) is recorded as gone.
Each change lands in ``changes/<source>``, one row per URL.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from scrapy import Request, Spider, signals
from scrapy.crawler import Crawler
from scrapy.exceptions import IgnoreRequest, NotConfigured
from scrapy.http import Response

from ingestion.lake import Lake

logger = logging.getLogger(__name__)
CHANGES = pa.schema(
    [
        ("crawl_id", pa.string()),
        ("url", pa.string()),
        ("change", pa.string()),
        ("content_sha256", pa.string()),
        ("at", pa.timestamp("us", tz="UTC")),
    ]
)


def previous_pages(lake: Lake, source: str) -> dict[str, dict[str, Any]]:
    """The latest row of every page in ``raw/<source>``: its hash and validators."""
    table = f"raw/{source}"
    if not lake.exists(table):
        return {}
    wanted = ["url", "content_sha256", "fetched_at", "etag", "last_modified"]
    dt = lake.table(table)
    columns = [c for c in wanted if c in dt.schema().to_arrow().names]
    rows = lake.dataset(table, dt).to_table(columns=columns).sort_by("fetched_at").to_pylist()
    return {row["url"]: row for row in rows}  # later rows win


class IncrementalMiddleware:
    def __init__(self, crawler: Crawler):
        self.crawler = crawler
        self.known: dict[str, dict[str, Any]] = {}
        self.seen: set[str] = set()
        self.validators: dict[str, tuple[str | None, str | None]] = {}
        self.changes: list[dict[str, Any]] = []

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> IncrementalMiddleware:
        # a resumed crawl's earlier part left no record of what it found unchanged, so it
        # could not tell gone from unseen: resumed crawls write what they fetch instead
        if crawler.settings.getbool("HARVEST_RESUME") or not crawler.settings.getbool(
            "HARVEST_INCREMENTAL"
        ):
            raise NotConfigured
        mw = cls(crawler)
        crawler.signals.connect(mw.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(mw.spider_closed, signal=signals.spider_closed)
        return mw

    @property
    def lake(self) -> Lake:
        return Lake(self.crawler.settings.get("HARVEST_LAKE"))

    def source(self, spider: Spider) -> str:
        recipe = getattr(spider, "recipe", None)
        return recipe.name if recipe else spider.name

    def spider_opened(self, spider: Spider) -> None:
        self.known = previous_pages(self.lake, self.source(spider))

    def process_request(self, request: Request, spider: Spider | None = None) -> Any:
        previous = self.known.get(request.url)
        if previous:
            if previous.get("etag"):
                request.headers.setdefault("If-None-Match", previous["etag"])
            if previous.get("last_modified"):
                request.headers.setdefault("If-Modified-Since", previous["last_modified"])
        return None

    def process_response(
        self, request: Request, response: Response, spider: Spider | None = None
    ) -> Any:
        if request.url not in self.known:
            if response.status == 200:
                self.validators[request.url] = _validators(response)
            return response
        if response.status == 304:
            self.seen.add(request.url)
            self._count("unchanged")
            raise IgnoreRequest(f"{request.url} not modified")
        if response.status == 200:
            self.seen.add(request.url)
            self.validators[request.url] = _validators(response)
        return response

    def classify(self, url: str, sha: str) -> str:
        """new, changed or unchanged, for a page that produced a row with hash ``sha``."""
        previous = self.known.get(url)
        self.seen.add(url)
        if previous is None:
            change = "new"
        elif previous.get("content_sha256") == sha:
            change = "unchanged"
        else:
            change = "changed"
        self._count(change)
        if change != "unchanged":
            self.changes.append({"url": url, "change": change, "content_sha256": sha})
        return change

    def spider_closed(self, spider: Spider, reason: str) -> None:
        if reason != "finished":
            return  # an interrupted crawl has not seen everything: nothing is gone yet
        for url in sorted(set(self.known) - self.seen):
            self._count("gone")
            self.changes.append({"url": url, "change": "gone", "content_sha256": None})
        if not self.changes:
            return
        now = datetime.now(UTC)
        crawl_id = self.crawler.settings.get("HARVEST_CRAWL_ID")
        rows = [{**c, "crawl_id": crawl_id, "at": now} for c in self.changes]
        self.lake.append(f"changes/{self.source(spider)}", pa.Table.from_pylist(rows, CHANGES))

    def _count(self, change: str) -> None:
        assert self.crawler.stats is not None
        self.crawler.stats.inc_value(f"harvest/incremental/{change}")


def _validators(response: Response) -> tuple[str | None, str | None]:
    def header(name: str) -> str | None:
        value = response.headers.get(name)
        return value.decode("latin-1") if value else None

    return header("ETag"), header("Last-Modified")
