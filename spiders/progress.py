"""A live view of a crawl: a rich display on a terminal, periodic log lines elsewhere."""

from __future__ import annotations

import sys
from typing import Any

from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured
from twisted.internet import task


class CrawlProgress:
    def __init__(self, crawler: Crawler, live: bool, interval: float):
        self.crawler = crawler
        self.live = live
        self.interval = interval
        self.progress: Any = None
        self.loop: task.LoopingCall | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> CrawlProgress:
        mode = crawler.settings.get("HARVEST_PROGRESS")
        if mode in (False, "False", "false", "0", None, ""):
            raise NotConfigured
        live = sys.stderr.isatty() if mode == "auto" else str(mode).lower() in {"true", "1"}
        ext = cls(crawler, live, crawler.settings.getfloat("HARVEST_PROGRESS_INTERVAL"))
        crawler.signals.connect(ext.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(ext.spider_closed, signal=signals.spider_closed)
        return ext

    def counts(self) -> dict[str, int]:
        stats = self.crawler.stats
        assert stats is not None
        return {
            "pages": int(stats.get_value("response_received_count", 0)),
            "items": int(stats.get_value("item_scraped_count", 0)),
            "committed": int(stats.get_value("harvest/rows_committed", 0)),
            "errors": int(stats.get_value("log_count/ERROR", 0)),
        }

    def text(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.counts().items())

    def spider_opened(self, spider: Any) -> None:
        if self.live:
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                SpinnerColumn(),
                TextColumn("[bold]{task.description}"),
                TextColumn("{task.fields[counts]}"),
                TimeElapsedColumn(),
                transient=False,
            )
            self.progress.start()
            self.task_id = self.progress.add_task(f"crawl {spider.name}", counts="")
        self.loop = task.LoopingCall(self.tick, spider)
        self.loop.start(self.interval if not self.live else 0.25, now=False)

    def tick(self, spider: Any) -> None:
        if self.progress is not None:
            self.progress.update(self.task_id, counts=self.text())
        else:
            print(f"crawl {spider.name}: {self.text()}", file=sys.stderr, flush=True)

    def spider_closed(self, spider: Any) -> None:
        if self.loop is not None and self.loop.running:
            self.loop.stop()
        if self.progress is not None:
            self.progress.update(self.task_id, counts=self.text())
            self.progress.stop()
