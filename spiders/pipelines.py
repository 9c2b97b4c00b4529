"""Hands scraped items to the lake, in whole batches."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from itemadapter import ItemAdapter
from scrapy import Spider, signals
from scrapy.crawler import Crawler

from ingestion.lake import Lake
from ingestion.runs import CRAWL_STAGE, FINISHED, INTERRUPTED, RUNNING, record_run
from ingestion.schema import PROVENANCE_COLUMNS, content_sha256
from ingestion.writer import BatchWriter
from spiders.account import account
from spiders.incremental import IncrementalMiddleware


def new_crawl_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]


class LakePipeline:
    """Appends items to ``raw/<source>``; the last partial batch lands when the spider closes."""

    def __init__(self, crawler: Crawler):
        settings = crawler.settings
        self.crawler = crawler
        self.lake = Lake(settings.get("HARVEST_LAKE"))
        self.batch_size = settings.getint("HARVEST_BATCH_SIZE")
        self.crawl_id = settings.get("HARVEST_CRAWL_ID") or new_crawl_id()
        self.writer: BatchWriter | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> LakePipeline:
        pipe = cls(crawler)
        crawler.signals.connect(pipe.spider_closed, signal=signals.spider_closed)
        return pipe

    def open_spider(self, spider: Spider | None = None) -> None:
        spider = spider or self.crawler.spider
        assert spider is not None
        recipe = getattr(spider, "recipe", None)
        source = recipe.name if recipe else spider.name
        self.source = source
        self.writer = BatchWriter(
            self.lake,
            f"raw/{source}",
            self.batch_size,
            field_types=recipe.field_types if recipe else None,
            metadata={"crawl_id": self.crawl_id},
        )
        self.crawler.stats.set_value("harvest/crawl_id", self.crawl_id)
        # an end never recorded marks the crawl for resuming (spiders/resume.py)
        record_run(self.lake, CRAWL_STAGE, source, {"crawl_id": self.crawl_id, "state": RUNNING})

    def process_item(self, item: Any, spider: Spider | None = None) -> Any:
        assert self.writer is not None
        row = self.row(ItemAdapter(item).asdict())
        incremental = self.crawler.get_downloader_middleware(IncrementalMiddleware)
        if incremental is not None:
            if incremental.classify(row["url"], row["content_sha256"]) == "unchanged":
                return item  # the lake has this exact page already
            row["etag"], row["last_modified"] = incremental.validators.get(row["url"], (None, None))
        if self.writer.add(row):
            self._stats()
        return item

    def row(self, fields: dict[str, Any]) -> dict[str, Any]:
        url = fields.pop("url", None)
        if not url:
            raise ValueError(f"item from {self.source} has no url: {fields!r:.200}")
        status = fields.pop("http_status", None)
        fetched_at = fields.pop("fetched_at", None) or datetime.now(UTC)
        content = {k: v for k, v in fields.items() if k not in PROVENANCE_COLUMNS}
        return {
            **content,
            "source": self.source,
            "url": url,
            "crawl_id": self.crawl_id,
            "fetched_at": fetched_at,
            "http_status": status,
            "content_sha256": content_sha256(content),
        }

    def close_spider(self, spider: Spider | None = None) -> None:
        if self.writer is None:
            return
        self.writer.flush()
        self._stats()

    def spider_closed(self, spider: Spider, reason: str) -> None:
        if self.writer is None:
            return
        # a crawl stopped by a signal or the watchdog is unfinished: the next crawl of the
        # source resumes it
        state = INTERRUPTED if reason in ("shutdown", "stalled") else FINISHED
        record_run(
            self.lake,
            CRAWL_STAGE,
            self.source,
            {
                "crawl_id": self.crawl_id,
                "state": state,
                "reason": reason,
                "rows": self.writer.rows_committed,
                "account": account(
                    self.crawler.stats.get_stats() if self.crawler.stats else {}
                ).to_dict(),
            },
        )

    def _stats(self) -> None:
        assert self.writer is not None
        stats = self.crawler.stats
        stats.set_value("harvest/rows_committed", self.writer.rows_committed)
        stats.set_value("harvest/batches_committed", self.writer.batches_committed)
