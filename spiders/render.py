"""Browser rendering through scrapy-playwright and Debian's Chromium, driven by the recipe:
the Scrapy settings and request meta that turn it on, and the page budget.

The download handler, with its deadlines, is ``spiders.renderhandler``; the pages it
shares between browser contexts, ``spiders.pagepool``.

Nothing here imports Playwright at module level: plain HTTP crawls never load it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scrapy.exceptions import NotConfigured
from scrapy.http import Request, Response

from spiders.pagepool import CONTEXTS, PAGES
from spiders.recipe import BrowserOptions, Recipe
from spiders.renderhandler import RenderHandler, forgotten, render_deadline

if TYPE_CHECKING:
    from playwright.async_api import Request as PlaywrightRequest
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)

CHROMIUM = "/usr/bin/chromium"
# keep the browser off the network except for the pages asked for
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
DISABLED_FEATURES = (
    # a reused page would keep every page it left in the back/forward cache
    "BackForwardCache",
    # Chromium keeps one spare renderer, warmed for the context that navigated last; with a
    # context per proxy every navigation kills it and launches one for its own context
    # (a process a page), which no page uses: pooled pages stay in their own renderer
    "SpareRendererForSitePerProcess",
    # each context, a profile to Chromium, would load the omnibox popup's web pages in a
    # renderer of its own: one a proxy, for a window no crawl shows
    "WebUIOmniboxPopup",
    "WebUIOmniboxAimPopup",
)
HANDLER = "spiders.renderhandler.RenderHandler"


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
        "args": [*CHROMIUM_ARGS, *with_features_disabled(extra, DISABLED_FEATURES)],
    }


def with_features_disabled(args: list[str], features: tuple[str, ...]) -> list[str]:
    """``args`` with one ``--disable-features`` naming ``features`` and any it had: Chromium
    heeds only the last of several, so a user's own would switch ours back on."""
    flag = "--disable-features="
    theirs = [f for a in args if a.startswith(flag) for f in a[len(flag) :].split(",") if f]
    rest = [a for a in args if not a.startswith(flag)]
    return [*rest, flag + ",".join(dict.fromkeys([*features, *theirs]))]


def render_settings(recipe: Recipe) -> dict[str, Any]:
    """Scrapy settings for a crawl that renders; the recipe's own settings still override."""
    options = recipe.browser
    return {
        "DOWNLOAD_HANDLERS": {"http": HANDLER, "https": HANDLER},
        "DOWNLOADER_MIDDLEWARES": {"spiders.render.BrowserBudget": 990},
        "PLAYWRIGHT_BROWSER_TYPE": "chromium",
        "PLAYWRIGHT_LAUNCH_OPTIONS": launch_options(recipe),
        # no limit in scrapy-playwright: it waits for a free context while holding the lock
        # that every new page takes, so with a context per proxy one proxy's context would
        # stall every page. The page pool bounds pages, and closes contexts it no longer needs
        "PLAYWRIGHT_MAX_CONTEXTS": 0,
        "PLAYWRIGHT_MAX_PAGES_PER_CONTEXT": PAGES,
        "PLAYWRIGHT_DEFAULT_NAVIGATION_TIMEOUT": options.timeout * 1000,
        "PLAYWRIGHT_RESTART_DISCONNECTED_BROWSER": True,
        "PLAYWRIGHT_ABORT_REQUEST": BlockResources(frozenset(options.block)),
        "HARVEST_BROWSER_PAGES": PAGES,
        "HARVEST_BROWSER_CONTEXTS": CONTEXTS,
        "HARVEST_BROWSER_PAGE_BUDGET": options.page_budget,
    }


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
        timeout = crawler.settings.getfloat("PLAYWRIGHT_DEFAULT_NAVIGATION_TIMEOUT", 30000) / 1000
        return cls(crawler, budget, drain_timeout=render_deadline(timeout))

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
                await asyncio.wait_for(forgotten(handler, browser), 10)
            except TimeoutError:
                logger.warning("the download handler kept its closed browser")
                continue
            assert self.crawler.stats is not None
            self.crawler.stats.inc_value("harvest/browser/restarts")
        logger.info("browser restarted after %d pages", self.pages)

    def _handlers(self) -> list[Any]:
        """scrapy-playwright's handlers, one a URL scheme."""
        assert self.crawler.engine is not None
        loaded = self.crawler.engine.downloader.handlers._handlers.values()
        return [h.inner for h in loaded if isinstance(h, RenderHandler)]
