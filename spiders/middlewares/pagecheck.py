"""Skips responses the parser cannot use, counting each by reason instead of crashing on it.

Binary bodies where a page was expected and text that does not decode in its declared
encoding are dropped here, and so are bodies that decompress past DOWNLOAD_MAXSIZE.
Oversized plain bodies and pages that never finish are stopped by Scrapy's
DOWNLOAD_MAXSIZE and DOWNLOAD_TIMEOUT and counted in ``downloader/exception_type_count/*``.
"""

from __future__ import annotations

import logging
from typing import Any

from scrapy import Request, Spider
from scrapy.crawler import Crawler
from scrapy.downloadermiddlewares.httpcompression import HttpCompressionMiddleware
from scrapy.exceptions import IgnoreRequest
from scrapy.http import Response, TextResponse

logger = logging.getLogger(__name__)


class PageCheckMiddleware:
    def __init__(self, crawler: Crawler):
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> PageCheckMiddleware:
        return cls(crawler)

    def process_response(
        self, request: Request, response: Response, spider: Spider | None = None
    ) -> Any:
        if request.url.endswith("/robots.txt") or response.status >= 300:
            return response
        reason = None
        if not isinstance(response, TextResponse):
            reason = "not_text"
        elif "\ufffd" in response.text:
            reason = "bad_encoding"
        if reason is None:
            return response
        assert self.crawler.stats is not None
        self.crawler.stats.inc_value(f"harvest/skipped/{reason}")
        logger.warning("skipped %s: %s", response.url, reason.replace("_", " "))
        raise IgnoreRequest(f"{response.url}: {reason}")


class BoundedDecompressionMiddleware(HttpCompressionMiddleware):
    """Scrapy's decompression, which already stops at DOWNLOAD_MAXSIZE, with the stop counted."""

    def process_response(
        self, request: Request, response: Response, spider: Spider | None = None
    ) -> Any:
        try:
            return super().process_response(request, response)
        except IgnoreRequest:
            if self.stats is not None:
                self.stats.inc_value("harvest/skipped/too_large")
            raise
