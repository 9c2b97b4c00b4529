"""A live view of a crawl: a rich display on a terminal, periodic log lines elsewhere, and
for programs (the service's run history) the same counts as JSON lines in a file.

``HARVEST_PROGRESS``: the display, True, False or "auto" (only on a terminal).
``HARVEST_PROGRESS_FILE``: a path to append one JSON object of counts to every
``HARVEST_PROGRESS_INTERVAL`` seconds and once more at the end; unset, none is written.
The display is for people and may change; the file's keys are what programs read.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import IO, Any

from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured
from twisted.internet import task


class CrawlProgress:
    def __init__(
        self,
        crawler: Crawler,
        live: bool,
        interval: float,
        display: bool = True,
        path: str | Path | None = None,
    ):
        self.crawler = crawler
        self.live = live
        self.interval = interval
        self.display = display
        self.path = Path(path) if path else None
        self.file: IO[str] | None = None
        self.progress: Any = None
        self.loop: task.LoopingCall | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> CrawlProgress:
        mode = crawler.settings.get("HARVEST_PROGRESS")
        display = mode not in (False, "False", "false", "0", None, "")
        path = crawler.settings.get("HARVEST_PROGRESS_FILE")
        if not display and not path:
            raise NotConfigured
        live = display and (
            sys.stderr.isatty() if mode == "auto" else str(mode).lower() in {"true", "1"}
        )
        interval = crawler.settings.getfloat("HARVEST_PROGRESS_INTERVAL")
        ext = cls(crawler, live, interval, display, path)
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
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = self.path.open("a", encoding="utf-8")
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
        period = self.interval if not self.live else 0.25
        # the display redraws often; the file gets a line every interval all the same
        self.ticks, self.every = 0, max(1, round(self.interval / period))
        self.loop = task.LoopingCall(self.tick, spider)
        self.loop.start(period, now=False)

    def tick(self, spider: Any) -> None:
        self.ticks += 1
        if self.ticks % self.every == 0:
            self.write()
        if self.progress is not None:
            self.progress.update(self.task_id, counts=self.text())
        elif self.display:
            print(f"crawl {spider.name}: {self.text()}", file=sys.stderr, flush=True)

    def write(self) -> None:
        # flushed whole lines: a reader sees at most the last one half written
        if self.file is not None:
            self.file.write(json.dumps(self.counts()) + "\n")
            self.file.flush()

    def spider_closed(self, spider: Any) -> None:
        if self.loop is not None and self.loop.running:
            self.loop.stop()
        if self.file is not None:
            self.write()
            self.file.close()
            self.file = None
        if self.progress is not None:
            self.progress.update(self.task_id, counts=self.text())
            self.progress.stop()
