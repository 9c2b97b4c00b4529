"""Browser rendering through scrapy-playwright and Debian's Chromium, driven by the recipe.

Nothing here imports Playwright at module level: plain HTTP crawls never load it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.exceptions import NotConfigured
from scrapy.http import Request, Response

from spiders.recipe import BrowserOptions, Recipe

if TYPE_CHECKING:
    from playwright.async_api import Request as PlaywrightRequest
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)

CHROMIUM = "/usr/bin/chromium"
# keep the browser off the network except for the pages asked for
CHROMIUM_ARGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # a reused page would keep every page it left in the back/forward cache
    "--disable-features=BackForwardCache",
)  # fmt: skip
HANDLER = "scrapy_playwright.handler.ScrapyPlaywrightDownloadHandler"
# one context and a few pages: each page is a renderer process, memory grows with them
MAX_CONTEXTS = 1
MAX_PAGES_PER_CONTEXT = 4
# navigations a page serves before it is closed and a fresh one opened
PAGE_USES = 50


def render_meta(options: BrowserOptions) -> dict[str, Any]:
    """Request meta that has scrapy-playwright render the page; fresh objects per request,
    because the handler mutates them."""
    from scrapy_playwright.page import PageMethod

    timeout_ms = options.timeout * 1000
    methods = []
    if options.wait_for:
        # attached, not visible: an element with no text (an empty body) still counts
        methods.append(
            PageMethod("wait_for_selector", options.wait_for, state="attached", timeout=timeout_ms)
        )
    return {
        "playwright": True,
        "playwright_page_goto_kwargs": {"wait_until": options.wait_until, "timeout": timeout_ms},
        "playwright_page_methods": methods,
    }


@dataclass(frozen=True)
class BlockResources:
    """``PLAYWRIGHT_ABORT_REQUEST``: aborts the browser's requests for these resource types."""

    types: frozenset[str]

    def __call__(self, request: PlaywrightRequest) -> bool:
        return request.resource_type in self.types


def _option(recipe: Recipe, name: str, default: Any) -> Any:
    """The environment, then the recipe's settings, then the default."""
    return os.environ.get(name) or recipe.settings.get(name) or default


def launch_options(recipe: Recipe) -> dict[str, Any]:
    extra = _option(recipe, "HARVEST_BROWSER_ARGS", [])
    if isinstance(extra, str):
        extra = shlex.split(extra)
    return {
        "executable_path": str(_option(recipe, "HARVEST_CHROMIUM", CHROMIUM)),
        "headless": True,
        "args": [*CHROMIUM_ARGS, *extra],
    }


def render_settings(recipe: Recipe) -> dict[str, Any]:
    """Scrapy settings for a crawl that renders; the recipe's own settings still override."""
    options = recipe.browser
    return {
        "DOWNLOAD_HANDLERS": {"http": HANDLER, "https": HANDLER},
        # the pool hands out a page before the budget may restart the browser under it;
        # the handler replaces a page it finds closed, and the pool keeps the new one
        "DOWNLOADER_MIDDLEWARES": {
            "spiders.render.PagePool": 980,
            "spiders.render.BrowserBudget": 990,
        },
        "PLAYWRIGHT_BROWSER_TYPE": "chromium",
        "PLAYWRIGHT_LAUNCH_OPTIONS": launch_options(recipe),
        "PLAYWRIGHT_MAX_CONTEXTS": MAX_CONTEXTS,
        "PLAYWRIGHT_MAX_PAGES_PER_CONTEXT": MAX_PAGES_PER_CONTEXT,
        "PLAYWRIGHT_DEFAULT_NAVIGATION_TIMEOUT": options.timeout * 1000,
        "PLAYWRIGHT_RESTART_DISCONNECTED_BROWSER": True,
        "PLAYWRIGHT_ABORT_REQUEST": BlockResources(frozenset(options.block)),
        "HARVEST_BROWSER_PAGE_BUDGET": options.page_budget,
    }


@dataclass
class _Pages:
    idle: asyncio.Queue[Any]
    count: int = 0  # pages of this context, idle or out on a request


class PagePool:
    """Reuses browser pages across requests instead of opening and closing one per page.

    A page keeps its renderer process between navigations, which about doubles rendering
    throughput. At most PLAYWRIGHT_MAX_PAGES_PER_CONTEXT pages per context (a proxy gets
    its own context): once that many exist, a request waits for one to come back. A page
    whose request failed is closed, and the next request opens a fresh one.
    """

    NEW = "harvest_new_page"

    def __init__(self, crawler: Crawler, size: int):
        self.crawler = crawler
        self.size = size
        self.pools: dict[str, _Pages] = {}
        self.uses: dict[Any, int] = {}

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> PagePool:
        pool = cls(crawler, crawler.settings.getint("PLAYWRIGHT_MAX_PAGES_PER_CONTEXT"))
        crawler.signals.connect(pool.spider_closed, signal=signals.spider_closed)
        return pool

    async def spider_closed(self) -> None:
        for pool in self.pools.values():
            while not pool.idle.empty():
                page = pool.idle.get_nowait()
                if not page.is_closed():
                    await page.close()
                    self._count("pages_closed")

    def pool(self, request: Request) -> _Pages:
        name = request.meta.get("playwright_context", "default")
        return self.pools.setdefault(name, _Pages(asyncio.Queue()))

    async def process_request(self, request: Request) -> None:
        if not request.meta.get("playwright"):
            return
        request.meta["playwright_include_page"] = True
        pool = self.pool(request)
        while True:
            if pool.idle.empty() and pool.count < self.size:
                pool.count += 1
                request.meta[self.NEW] = True  # the handler opens it
                self._count("pages_opened")
                return
            page = await pool.idle.get()
            if page.is_closed():  # the browser was restarted or died
                pool.count -= 1
                continue
            request.meta["playwright_page"] = page
            self._count("pages_reused")
            return

    async def process_response(self, request: Request, response: Response) -> Response:
        page = request.meta.pop("playwright_page", None)
        new = request.meta.pop(self.NEW, False)
        if page is None:
            if new:
                self.pool(request).count -= 1
            return response
        self.uses[page] = self.uses.get(page, 0) + 1
        if page.is_closed() or self.uses[page] >= PAGE_USES:
            # a page's memory creeps up with every navigation: retire it after a while
            if not page.is_closed():
                await page.close()
                self._count("pages_closed")
            self.uses.pop(page, None)
            self.pool(request).count -= 1
        else:
            self.pool(request).idle.put_nowait(page)
        return response

    async def process_exception(self, request: Request, exception: Exception) -> None:
        page = request.meta.pop("playwright_page", None)
        new = request.meta.pop(self.NEW, False)
        if page is not None and not page.is_closed():
            await page.close()  # it may be stuck mid-navigation: never hand it out again
            self._count("pages_closed")
        self.uses.pop(page, None)
        if page is not None or new:
            self.pool(request).count -= 1

    def _count(self, what: str) -> None:
        assert self.crawler.stats is not None
        self.crawler.stats.inc_value(f"harvest/browser/{what}")


class BrowserBudget:
    """Restarts the browser after ``HARVEST_BROWSER_PAGE_BUDGET`` rendered pages, so memory
    stays flat on long crawls.

    At the budget, new pages wait until the pages in flight are done; then the browser is
    closed, and scrapy-playwright launches a fresh one for the next page. Sits next to the
    download handler, so it sees every rendered request that reaches the browser.
    """

    def __init__(self, crawler: Crawler, budget: int, drain_timeout: float):
        self.crawler = crawler
        self.budget = budget
        self.drain_timeout = drain_timeout
        self.pages = 0
        self.in_flight: set[Request] = set()
        self.idle = asyncio.Event()
        self.idle.set()
        self.lock = asyncio.Lock()

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> BrowserBudget:
        budget = crawler.settings.getint("HARVEST_BROWSER_PAGE_BUDGET")
        if budget <= 0:
            raise NotConfigured("no browser page budget")
        # a page cannot take much longer than its navigation and its wait
        timeout = crawler.settings.getfloat("PLAYWRIGHT_DEFAULT_NAVIGATION_TIMEOUT", 30000) / 1000
        return cls(crawler, budget, drain_timeout=3 * timeout + 10)

    async def process_request(self, request: Request) -> None:
        if not request.meta.get("playwright"):
            return
        async with self.lock:
            if self.pages >= self.budget:
                await self.restart()
                self.pages = 0
            self.pages += 1
            self.in_flight.add(request)
            self.idle.clear()

    def process_response(self, request: Request, response: Response) -> Response:
        self._done(request)
        return response

    def process_exception(self, request: Request, exception: Exception) -> None:
        self._done(request)

    def _done(self, request: Request) -> None:
        self.in_flight.discard(request)
        if not self.in_flight:
            self.idle.set()

    async def restart(self) -> None:
        try:
            await asyncio.wait_for(self.idle.wait(), self.drain_timeout)
        except TimeoutError:
            logger.warning("restarting the browser with %d pages still open", len(self.in_flight))
        for handler in self._handlers():
            browser = getattr(handler, "browser", None)
            if browser is None:
                continue
            await browser.close()
            try:
                await asyncio.wait_for(_forgotten(handler, browser), 10)
            except TimeoutError:
                logger.warning("the download handler kept its closed browser")
                continue
            assert self.crawler.stats is not None
            self.crawler.stats.inc_value("harvest/browser/restarts")
        logger.info("browser restarted after %d pages", self.pages)

    def _handlers(self) -> list[Any]:
        from scrapy_playwright.handler import ScrapyPlaywrightDownloadHandler

        assert self.crawler.engine is not None
        loaded = self.crawler.engine.downloader.handlers._handlers.values()
        return [h for h in loaded if isinstance(h, ScrapyPlaywrightDownloadHandler)]


async def _forgotten(handler: Any, browser: Any) -> None:
    """Until the handler drops ``browser``, which it does on the browser's disconnected
    event; launching before that would hand out pages from the closed one."""
    while getattr(handler, "browser", None) is browser:
        await asyncio.sleep(0.01)
