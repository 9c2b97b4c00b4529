"""The download handler for rendered requests: scrapy-playwright's, with pages from a
``PagePool`` (``spiders.pagepool``) and deadlines, so that no render hangs a crawl.
``render_settings`` (``spiders.render``) installs it for http and https.

Every rendered request takes a page from one ``PagePool`` shared by all browser contexts
(the proxy pool gives each proxy its own), and runs under deadlines: for a page from the
pool, for the navigation, for the ``wait_for`` selector, and for the whole render. A render
that overruns has its page closed (its context, or the browser, if the page never came) and
fails with ``RenderTimeoutError``; a page whose requests cannot reach the site or its proxy
fails with ``BrowserConnectionError``. Both are download failures, which the proxy pool
retries through another proxy and RetryMiddleware on a direct crawl: a proxy that dies
loses no page. A ``wait_for`` that times out with every request of the page answered is
rendered once more (``SlowRenderError``): on a loaded machine a page's scripts can run
late. The second time it is the page's own doing, given up and counted.

Nothing here imports Playwright at module level: plain HTTP crawls never load it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.exceptions import DownloadFailedError, DownloadTimeoutError
from scrapy.http import Request, Response

from spiders.account import GaveUp
from spiders.pagepool import CLOSE_TIMEOUT, CONTEXTS, PAGES, PagePool, close_quietly

if TYPE_CHECKING:
    from playwright.async_api import Page
    from playwright.async_api import Request as PlaywrightRequest
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)

SLOW_TRIED_META = "harvest_slow_render_tried"  # a wait_for timed out, every request answered
DEFAULT_CONTEXT = "default"  # scrapy-playwright's name for the context of unproxied pages
# Chromium's errors for a connection that failed, as opposed to an answer from the site;
# through a proxy every connection is to the proxy
CONNECTION_ERROR = re.compile(
    r"net::ERR_(PROXY_CONNECTION_FAILED|TUNNEL_CONNECTION_FAILED|SOCKS_CONNECTION_FAILED"
    r"|CONNECTION_(REFUSED|RESET|CLOSED|ABORTED|FAILED|TIMED_OUT)|EMPTY_RESPONSE|TIMED_OUT"
    r"|ADDRESS_UNREACHABLE)\b"
)


class BrowserConnectionError(DownloadFailedError):
    """The browser could not reach the site, or its proxy (a Chromium ``net::ERR_*``)."""


class RenderTimeoutError(DownloadTimeoutError):
    """A rendered page overran its navigation timeout or its whole render's deadline."""


class SlowRenderError(DownloadTimeoutError):
    """A ``wait_for`` that timed out with every request of the page answered, the first
    time: its scripts may only have run slow on a loaded machine, so the page is rendered
    once more. Not the exit's doing: neither the proxy pool nor the pace counts it."""

    exit_at_fault = False


def render_deadline(timeout: float) -> float:
    """Seconds a render may take: a navigation, a ``wait_for`` and the wait for the load
    after it may each take ``timeout``; reading the page's content is quick."""
    return 3 * timeout + 10


class _Watch:
    """Fails a render through a proxy as soon as one of its page's requests cannot
    connect: the proxy is going or gone, and the page would wait in vain for what it asked
    for (a script's JSON, say). Set as the request's page init callback, which the handler
    calls with the page it renders on, new or reused.

    It also keeps the page's requests still open and the last that failed, for any
    reason: a ``wait_for`` that timed out through a proxy while either was so waited on the
    proxy, not on the page."""

    def __init__(self, request: Request):
        kwargs = request.meta.get("playwright_context_kwargs") or {}
        self.proxied = bool(kwargs.get("proxy"))
        self.failed: asyncio.Future[BrowserConnectionError] = (
            asyncio.get_running_loop().create_future()
        )
        self.page: Page | None = None
        self.open: set[PlaywrightRequest] = set()
        self.last_failure: str | None = None
        # bound methods, one object each, to take them off again
        self.listeners = {
            "request": self._request,
            "requestfinished": self._request_finished,
            "requestfailed": self._request_failed,
        }

    async def __call__(self, page: Page, request: Request) -> None:
        self.page = page
        if self.proxied:
            for event, listener in self.listeners.items():
                page.on(event, listener)  # type: ignore[call-overload]

    def detach(self) -> None:
        if self.page is not None and self.proxied:
            for event, listener in self.listeners.items():
                self.page.remove_listener(event, listener)

    def proxy_suspect(self) -> str | None:
        """Why the proxy, not the page, may be what a timed-out wait waited on."""
        if self.last_failure:
            return self.last_failure
        if self.open:
            return f"{len(self.open)} request(s) still open, {next(iter(self.open)).url} one"
        return None

    def _request(self, request: PlaywrightRequest) -> None:
        self.open.add(request)

    def _request_finished(self, request: PlaywrightRequest) -> None:
        self.open.discard(request)

    def _request_failed(self, request: PlaywrightRequest) -> None:
        self.open.discard(request)
        failure = request.failure or "failed"
        self.last_failure = f"{failure} fetching {request.url}"
        error = CONNECTION_ERROR.search(failure)
        if error and not self.failed.done():
            self.failed.set_result(BrowserConnectionError(f"{error[0]} fetching {request.url}"))


class RenderHandler:
    """scrapy-playwright's download handler, with pages from a ``PagePool`` and a deadline
    on everything a rendered request waits for (see the module's docstring)."""

    lazy = False  # scrapy-playwright starts on the engine's start

    def __init__(self, crawler: Crawler):
        from scrapy_playwright.handler import ScrapyPlaywrightDownloadHandler

        self.inner = ScrapyPlaywrightDownloadHandler.from_crawler(crawler)
        settings = crawler.settings
        assert crawler.stats is not None
        self.stats = crawler.stats
        timeout = settings.getfloat("PLAYWRIGHT_DEFAULT_NAVIGATION_TIMEOUT", 30000) / 1000
        self.render_timeout = render_deadline(timeout)
        self.pages = PagePool(
            size=settings.getint("HARVEST_BROWSER_PAGES", PAGES),
            per_context=settings.getint("PLAYWRIGHT_MAX_PAGES_PER_CONTEXT", PAGES),
            keep_contexts=settings.getint("HARVEST_BROWSER_CONTEXTS", CONTEXTS),
            close_context=self.close_context,
            stats=crawler.stats,
        )
        # every request the downloader holds may be waiting for a page, each page busy
        # for at most a render: the last in line gets one within this many renders
        rounds = math.ceil(settings.getint("CONCURRENT_REQUESTS", 16) / self.pages.size)
        self.acquire_timeout = self.render_timeout * max(1, rounds)
        crawler.signals.connect(self.pages.close_idle, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> RenderHandler:
        return cls(crawler)

    async def close(self) -> None:
        await self.inner.close()

    async def download_request(self, request: Request) -> Response:
        if not request.meta.get("playwright"):
            response: Response = await self.inner.download_request(request)
            return response
        context = request.meta.setdefault("playwright_context", DEFAULT_CONTEXT)
        try:
            page = await asyncio.wait_for(self.pages.acquire(context), self.acquire_timeout)
        except TimeoutError:
            self.stats.inc_value("harvest/failed/browser_busy")
            raise GaveUp(
                "browser_busy",
                f"no browser page came free in {self.acquire_timeout:.0f}s for {request.url}",
            ) from None
        watch = _Watch(request)
        # pages belong to the pool: the handler must neither close them nor open its own
        request.meta["playwright_include_page"] = True
        request.meta["playwright_page_init_callback"] = watch
        request.meta["playwright_page"] = page
        rendered = False
        try:
            response = await self._render(request, watch)
            rendered = True
            return response
        finally:
            watch.detach()
            # the handler's page, which replaces one it found closed
            used = request.meta.pop("playwright_page", None) or watch.page
            request.meta.pop("playwright_page_init_callback", None)  # not for a retry's copy
            self.pages.release(context, used, reuse=rendered)

    async def _render(self, request: Request, watch: _Watch) -> Response:
        from playwright.async_api import Error as PlaywrightError

        render = asyncio.ensure_future(self.inner.download_request(request))
        try:
            done, _ = await asyncio.wait(
                {render, watch.failed},
                timeout=self.render_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            if not render.done():
                render.cancel()
                await asyncio.wait({render}, timeout=CLOSE_TIMEOUT)
        if watch.failed.done():
            if render.done() and not render.cancelled():
                render.exception()  # superseded by the failed connection: seen, not logged
            self.stats.inc_value("harvest/browser/connection_failures")
            raise watch.failed.result()
        if render in done:
            try:
                response: Response = render.result()
                return response
            except PlaywrightError as exc:
                failure = self._failure(exc, request, watch)
                if failure is exc:
                    raise
                raise failure from exc
        self.stats.inc_value("harvest/browser/timeouts")
        if watch.page is None:  # whatever held the page up is in its context or the browser
            await self.close_context(request.meta["playwright_context"], stuck=True)
        raise RenderTimeoutError(f"rendering {request.url} took over {self.render_timeout:.0f}s")

    def _failure(self, exc: Exception, request: Request, watch: _Watch) -> Exception:
        """A download failure for a navigation that timed out or could not connect, or a
        wait through a proxy that may have waited on the proxy, which the proxy pool and
        RetryMiddleware retry; the first time, a ``wait_for`` selector that never appeared
        on a page whose requests all came back, which RetryMiddleware renders once more;
        ``exc`` itself for anything else (that selector again is the page's doing)."""
        from playwright.async_api import TimeoutError as PlaywrightTimeoutError

        message = str(exc)
        if error := CONNECTION_ERROR.search(message.split("\n", 1)[0]):
            self.stats.inc_value("harvest/browser/connection_failures")
            return BrowserConnectionError(f"{error[0]} at {request.url}")
        if not isinstance(exc, PlaywrightTimeoutError):
            return exc
        if message.startswith("Page.goto:"):
            self.stats.inc_value("harvest/browser/timeouts")
            return RenderTimeoutError(f"navigation to {request.url} timed out")
        if suspect := watch.proxy_suspect():
            self.stats.inc_value("harvest/browser/timeouts")
            return RenderTimeoutError(f"waiting on {request.url} timed out: {suspect}")
        if not request.meta.get(SLOW_TRIED_META):
            request.meta[SLOW_TRIED_META] = True  # a retry's copy keeps it: once only
            self.stats.inc_value("harvest/browser/slow_retries")
            return SlowRenderError(
                f"waiting on {request.url} timed out with every request answered; once more"
            )
        return exc

    async def close_context(self, name: str, stuck: bool = False) -> None:
        """Closes a browser context and its pages. The browser goes instead if the context
        will not close or, ``stuck``, is not there: a page that never came while its
        context was being opened means the browser no longer answers."""
        wrapper = self.inner.context_wrappers.get(name)
        if wrapper is not None:
            self.stats.inc_value("harvest/browser/contexts_closed")
            if await close_quietly(wrapper.context.close(), "browser context"):
                return
        elif not stuck:
            return
        browser = getattr(self.inner, "browser", None)
        if browser is None:
            return
        logger.warning("closing the browser: a page of context %s is stuck", name)
        self.stats.inc_value("harvest/browser/restarts")
        await close_quietly(browser.close(), "browser")
        # scrapy-playwright launches a fresh one for the next page, once it has let go
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(forgotten(self.inner, browser), CLOSE_TIMEOUT)


async def forgotten(handler: Any, browser: Any) -> None:
    """Until the handler drops ``browser``, which it does on the browser's disconnected
    event; launching before that would hand out pages from the closed one."""
    while getattr(handler, "browser", None) is browser:
        await asyncio.sleep(0.01)
