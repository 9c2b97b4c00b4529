"""Browser rendering through scrapy-playwright and Debian's Chromium, driven by the recipe.

``RenderHandler`` wraps scrapy-playwright's download handler. Every rendered request takes
a page from one ``PagePool`` shared by all browser contexts (the proxy pool gives each
proxy its own), and runs under deadlines: for a page from the pool, for the navigation,
for the ``wait_for`` selector, and for the whole render. A render that overruns has its
page closed (its context, or the browser, if the page never came) and fails with
``RenderTimeoutError``; a page whose requests cannot reach the site or its proxy fails
with ``BrowserConnectionError``. Both are download failures, which the proxy pool retries
through another proxy and RetryMiddleware on a direct crawl: a proxy that dies loses no
page.

Nothing here imports Playwright at module level: plain HTTP crawls never load it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import shlex
from collections import Counter, OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.exceptions import DownloadFailedError, DownloadTimeoutError, NotConfigured
from scrapy.http import Request, Response

from spiders.account import GaveUp
from spiders.recipe import BrowserOptions, Recipe

if TYPE_CHECKING:
    from playwright.async_api import Page
    from playwright.async_api import Request as PlaywrightRequest
    from scrapy.crawler import Crawler
    from scrapy.statscollectors import StatsCollector

logger = logging.getLogger(__name__)

CHROMIUM = "/usr/bin/chromium"
# keep the browser off the network except for the pages asked for
CHROMIUM_ARGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # a reused page would keep every page it left in the back/forward cache
    "--disable-features=BackForwardCache",
)  # fmt: skip
HANDLER = "spiders.render.RenderHandler"
# pages open in the browser, all contexts together: each page is a renderer process, and
# memory grows with them
PAGES = 4
# contexts kept open with no page in them (a proxy's cookies live in its context)
CONTEXTS = 8
# navigations a page serves before it is closed and a fresh one opened
PAGE_USES = 50
# seconds to close a page or a context; one that takes longer is stuck
CLOSE_TIMEOUT = 10.0
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


def render_deadline(timeout: float) -> float:
    """Seconds a render may take: a navigation, a ``wait_for`` and the wait for the load
    after it may each take ``timeout``; reading the page's content is quick."""
    return 3 * timeout + 10


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


@dataclass(eq=False)
class _Waiter:
    context: str
    # an idle page of the context, or None: a slot in which to open one
    future: asyncio.Future[Page | None]
    # the page that held the slot, closing: a new page opens only once it is gone
    after: asyncio.Task[None] | None = None


class PagePool:
    """Browser pages shared by every context: at most ``size`` open in all and
    ``per_context`` in one, handed out first come, first served.

    A page keeps its renderer process between navigations, which about doubles rendering
    throughput, so a page that comes back whole waits, idle, for its context's next
    request. A request whose context has no idle page gets a slot in which to open one: a
    free slot or, with none free, that of the page idle longest in another context, which
    is closed. So no context waits while another holds pages idle, and a request waits
    only while every page is rendering. A page closing still counts until it is gone. A
    context left with no page is closed once more than ``keep_contexts`` are open, least
    recently used first.
    """

    def __init__(
        self,
        size: int,
        per_context: int,
        keep_contexts: int,
        close_context: Callable[[str], Awaitable[None]],
        stats: StatsCollector,
    ):
        self.size = max(1, size)
        self.per_context = max(1, min(per_context, self.size))
        self.keep_contexts = keep_contexts
        self.close_context = close_context
        self.stats = stats
        self.open: Counter[str] = Counter()  # pages open or being opened, by context
        self.idle: OrderedDict[Page, str] = OrderedDict()  # -> its context; longest idle first
        self.uses: dict[Page, int] = {}
        self.waiters: deque[_Waiter] = deque()
        self.contexts: OrderedDict[str, None] = OrderedDict()  # least recently used first
        self.closing_contexts: set[str] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        # pages closing whose slots are free, each handed on with the next slot taken
        self.closing: deque[asyncio.Task[None]] = deque()

    async def acquire(self, context: str) -> Page | None:
        """An idle page of ``context``, or None: a slot for the caller to open one in."""
        self.contexts[context] = None
        self.contexts.move_to_end(context)
        waiter = _Waiter(context, asyncio.get_running_loop().create_future())
        self.waiters.append(waiter)
        self._serve()
        try:
            page = await waiter.future
            if waiter.after is not None:
                await asyncio.shield(waiter.after)
            return page
        except asyncio.CancelledError:
            if waiter in self.waiters:
                self.waiters.remove(waiter)
            elif not waiter.future.cancelled():  # served just as it gave up: give it back
                if waiter.after is not None and not waiter.after.done():
                    self.closing.append(waiter.after)
                self.release(context, waiter.future.result(), reuse=True)
            raise

    def release(self, context: str, page: Page | None, reuse: bool) -> None:
        """Takes back the slot ``acquire`` gave; ``page`` waits for the next request if
        ``reuse`` and it is whole and young enough, and is closed otherwise."""
        if page is not None and reuse and not page.is_closed():
            self.uses[page] = self.uses.get(page, 0) + 1
            # a page's memory creeps up with every navigation: retire it after a while
            if self.uses[page] < PAGE_USES:
                self.idle[page] = context
                self._serve()
                return
        self._forget(context, page)
        self._serve()

    async def close_idle(self) -> None:
        """Closes the idle pages, at the end of the crawl."""
        pages = list(self.idle)
        self.idle.clear()
        await asyncio.gather(*(self._close(page) for page in pages))
        await asyncio.gather(*list(self.tasks), return_exceptions=True)

    def _serve(self) -> None:
        for closed in [p for p in self.idle if p.is_closed()]:  # the browser was restarted
            self._forget(self.idle.pop(closed), closed)
        for waiter in list(self.waiters):
            if waiter.future.done() or waiter.context in self.closing_contexts:
                continue
            page = self._idle_page(waiter.context)
            if page is not None:
                self._count("pages_reused")
            elif self.open[waiter.context] < self._share() and self._free_slot():
                self.open[waiter.context] += 1
                waiter.after = self.closing.popleft() if self.closing else None
                self._count("pages_opened")
            else:
                continue  # waits for a page of its own context, without holding up others
            self.waiters.remove(waiter)
            waiter.future.set_result(page)
        self._trim_contexts()

    def _share(self) -> int:
        """Pages a context may have while others render or wait too: an equal share.
        Beyond it a request waits for a page of its own context rather than take one
        from another context, which would only have to open one again."""
        idle = Counter(self.idle.values())
        busy = {c for c, n in self.open.items() if n > idle[c]}
        busy |= {w.context for w in self.waiters if not w.future.done()}
        return min(self.per_context, max(1, self.size // max(1, len(busy))))

    def _idle_page(self, context: str) -> Page | None:
        for page, owner in reversed(self.idle.items()):  # the most recent is the warmest
            if owner == context:
                del self.idle[page]
                return page
        return None

    def _free_slot(self) -> bool:
        if sum(self.open.values()) < self.size:
            return True
        if not self.idle:
            return False
        page, owner = self.idle.popitem(last=False)
        self._count("pages_evicted")
        self._forget(owner, page)
        return True

    def _forget(self, context: str, page: Page | None) -> None:
        """Frees a slot, closing its page in the background."""
        self.open[context] -= 1
        if self.open[context] <= 0:
            del self.open[context]
        if page is not None:
            self.uses.pop(page, None)
            closing = self._spawn(self._close(page))
            self.closing.append(closing)
            closing.add_done_callback(self._closed)

    def _closed(self, task: asyncio.Task[None]) -> None:
        if task in self.closing:
            self.closing.remove(task)

    def _trim_contexts(self) -> None:
        """Closes contexts with no page and no request waiting for one, beyond those kept,
        least recently used first."""
        wanted = {w.context for w in self.waiters} | set(self.open) | self.closing_contexts
        spare = [c for c in self.contexts if c not in wanted]
        for name in spare[: max(0, len(self.contexts) - self.keep_contexts)]:
            self.closing_contexts.add(name)
            self._spawn(self._retire_context(name))

    async def _close(self, page: Page) -> None:
        from playwright.async_api import Error as PlaywrightError

        if page.is_closed():
            return
        try:
            await asyncio.wait_for(page.close(), CLOSE_TIMEOUT)
            self._count("pages_closed")
        except PlaywrightError:
            pass  # its context or browser went first
        except TimeoutError:
            # a page that will not close is stuck: closing its context takes it down too
            logger.warning(
                "a browser page did not close in %.0fs: closing its context", CLOSE_TIMEOUT
            )
            self._count("pages_stuck")
            await _close_quietly(page.context.close(), "browser context")

    async def _retire_context(self, name: str) -> None:
        try:
            await self.close_context(name)
        finally:
            self.closing_contexts.discard(name)
            if not self.open[name]:
                self.contexts.pop(name, None)
            self._serve()

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def _count(self, what: str) -> None:
        self.stats.inc_value(f"harvest/browser/{what}")


async def _close_quietly(closing: Awaitable[None], what: str) -> bool:
    """Awaits ``closing`` for at most CLOSE_TIMEOUT; False if it did not finish."""
    from playwright.async_api import Error as PlaywrightError

    try:
        await asyncio.wait_for(closing, CLOSE_TIMEOUT)
    except PlaywrightError:
        pass  # closed already, with whatever held it
    except TimeoutError:
        logger.warning("a %s did not close in %.0fs", what, CLOSE_TIMEOUT)
        return False
    return True


class _Watch:
    """Fails a render through a proxy as soon as one of its page's requests cannot
    connect: the proxy is going or gone, and the page would wait in vain for what it asked
    for (a script's JSON, say). Set as the request's page init callback, which the handler
    calls with the page it renders on, new or reused."""

    def __init__(self, request: Request):
        kwargs = request.meta.get("playwright_context_kwargs") or {}
        self.proxied = bool(kwargs.get("proxy"))
        self.failed: asyncio.Future[BrowserConnectionError] = (
            asyncio.get_running_loop().create_future()
        )
        self.page: Page | None = None
        self.listener = self._request_failed  # one object, to take it off again

    async def __call__(self, page: Page, request: Request) -> None:
        self.page = page
        if self.proxied:
            page.on("requestfailed", self.listener)

    def detach(self) -> None:
        if self.page is not None and self.proxied:
            self.page.remove_listener("requestfailed", self.listener)

    def _request_failed(self, request: PlaywrightRequest) -> None:
        error = CONNECTION_ERROR.search(request.failure or "")
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
                failure = self._failure(exc, request)
                if failure is exc:
                    raise
                raise failure from exc
        self.stats.inc_value("harvest/browser/timeouts")
        if watch.page is None:  # whatever held the page up is in its context or the browser
            await self.close_context(request.meta["playwright_context"], stuck=True)
        raise RenderTimeoutError(f"rendering {request.url} took over {self.render_timeout:.0f}s")

    def _failure(self, exc: Exception, request: Request) -> Exception:
        """A download failure for a navigation that timed out or could not connect, which
        the proxy pool and RetryMiddleware retry; ``exc`` itself for anything else (a
        ``wait_for`` selector that never appeared is the page's doing)."""
        from playwright.async_api import TimeoutError as PlaywrightTimeoutError

        message = str(exc)
        if error := CONNECTION_ERROR.search(message.split("\n", 1)[0]):
            self.stats.inc_value("harvest/browser/connection_failures")
            return BrowserConnectionError(f"{error[0]} at {request.url}")
        if isinstance(exc, PlaywrightTimeoutError) and message.startswith("Page.goto:"):
            self.stats.inc_value("harvest/browser/timeouts")
            return RenderTimeoutError(f"navigation to {request.url} timed out")
        return exc

    async def close_context(self, name: str, stuck: bool = False) -> None:
        """Closes a browser context and its pages. The browser goes instead if the context
        will not close or, ``stuck``, is not there: a page that never came while its
        context was being opened means the browser no longer answers."""
        wrapper = self.inner.context_wrappers.get(name)
        if wrapper is not None:
            self.stats.inc_value("harvest/browser/contexts_closed")
            if await _close_quietly(wrapper.context.close(), "browser context"):
                return
        elif not stuck:
            return
        browser = getattr(self.inner, "browser", None)
        if browser is None:
            return
        logger.warning("closing the browser: a page of context %s is stuck", name)
        self.stats.inc_value("harvest/browser/restarts")
        await _close_quietly(browser.close(), "browser")
        # scrapy-playwright launches a fresh one for the next page, once it has let go
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_forgotten(self.inner, browser), CLOSE_TIMEOUT)


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
                await asyncio.wait_for(_forgotten(handler, browser), 10)
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


async def _forgotten(handler: Any, browser: Any) -> None:
    """Until the handler drops ``browser``, which it does on the browser's disconnected
    event; launching before that would hand out pages from the closed one."""
    while getattr(handler, "browser", None) is browser:
        await asyncio.sleep(0.01)
