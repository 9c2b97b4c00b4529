"""The browser pages that rendered requests share, for ``spiders.renderhandler``.

A page keeps its renderer process between navigations, so pages are pooled: every browser
context (the proxy pool gives each proxy its own) takes its pages from one ``PagePool``
that bounds the pages open in the browser, hands them out first come, first served, and
closes pages and contexts it no longer needs. It is apart from the handler because it
knows nothing of requests, only of pages and contexts.

Nothing here imports Playwright at module level: plain HTTP crawls never load it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.async_api import Page
    from scrapy.statscollectors import StatsCollector

logger = logging.getLogger(__name__)

# pages open in the browser, all contexts together: each page is a renderer process, and
# memory grows with them
PAGES = 4
# contexts kept open with no page in them (a proxy's cookies live in its context)
CONTEXTS = 8
# navigations a page serves before it is closed and a fresh one opened
PAGE_USES = 50
# seconds to close a page or a context; one that takes longer is stuck
CLOSE_TIMEOUT = 10.0


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
            elif self.open[waiter.context] < self._share() and self._slot_for(waiter.context):
                self.open[waiter.context] += 1
                waiter.after = self.closing.popleft() if self.closing else None
                self._count("pages_opened")
            else:
                continue  # waits for a page of its own context, without holding up others
            self.waiters.remove(waiter)
            waiter.future.set_result(page)
        self._trim_contexts()

    def _share(self) -> int:
        """Pages a context may have while others render or wait too: an equal share,
        rounded up so that every page is used (four pages over three proxies are two, one
        and one). Beyond it a request waits for a page of its own context rather than take
        one from another context, which would only have to open one again."""
        idle = Counter(self.idle.values())
        busy = {c for c, n in self.open.items() if n > idle[c]}
        busy |= self._wanted()
        return min(self.per_context, -(-self.size // max(1, len(busy))))

    def _wanted(self) -> set[str]:
        """Contexts with a request waiting for a page."""
        return {w.context for w in self.waiters if not w.future.done()}

    def _idle_page(self, context: str) -> Page | None:
        for page, owner in reversed(self.idle.items()):  # the most recent is the warmest
            if owner == context:
                del self.idle[page]
                return page
        return None

    def _slot_for(self, context: str) -> bool:
        """A free slot, or that of another context's idle page, closed: the one idle
        longest of those whose context no request waits for, has at least two pages more
        than ``context``, or ``context`` has none. A page taken from a context that waits
        for it as much only has to be opened again there, a renderer launched for nothing
        (contexts trading one page would do that on every request)."""
        if sum(self.open.values()) < self.size:
            return True
        wanted, mine = self._wanted(), self.open[context]
        for page, owner in self.idle.items():
            if owner not in wanted or mine == 0 or self.open[owner] > mine + 1:
                del self.idle[page]
                self._count("pages_evicted")
                self._forget(owner, page)
                return True
        return False

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
            await close_quietly(page.context.close(), "browser context")

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


async def close_quietly(closing: Awaitable[None], what: str) -> bool:
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
