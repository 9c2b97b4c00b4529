"""Scrapy's downloader, holding each download slot to its concurrency.

Scrapy 2.19 hands a request from a slot's queue to a task of its own, and counts it as
transferring only once that task runs. Until then the slot looks free, so one pass over
the queue starts every request waiting in it: with ``CONCURRENT_REQUESTS_PER_DOMAIN`` at
2, a crawl of one site kept 9 requests in flight on average, and up to
``CONCURRENT_REQUESTS``. A site's limit is the politeness a recipe asks for, so here a
request counts as transferring from the moment it leaves the queue.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from scrapy import Request
from scrapy.core.downloader import Downloader as ScrapyDownloader
from scrapy.core.downloader import Slot
from twisted.internet.defer import Deferred


class Downloader(ScrapyDownloader):
    def _wait_for_download(
        self, slot: Slot, request: Request, queue_dfd: Deferred[Any]
    ) -> Coroutine[Any, Any, None]:
        # not a coroutine itself: this runs as the queue hands the request over, before
        # the queue's loop asks the slot for a free transfer again; Scrapy's own
        # _download adds it to the same set, and takes it out when the transfer ends
        slot.transferring.add(request)
        return super()._wait_for_download(slot, request, queue_dfd)
