"""One generic spider that runs any recipe from ``sources/``."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import scrapy
from scrapy.crawler import Crawler
from scrapy.exceptions import IgnoreRequest
from scrapy.http import Response, TextResponse
from scrapy.spidermiddlewares.httperror import HttpError
from twisted.python.failure import Failure

from spiders import hooks, readonce
from spiders.account import BROKEN_CHAIN, HOOK_ERROR, GaveUp
from spiders.middlewares.proxypool import PROXY_META
from spiders.pace import EXIT_META, NOT_BEFORE_META
from spiders.recipe import Field, Recipe, load_recipe
from spiders.render import render_meta

LISTING_META = "harvest_listing"  # followed for its links, not an item
LISTING_TRIES_META = "harvest_listing_tries"
# the first page given up on and why: what a crawl that got no response names as its cause
FIRST_FAILURE = "harvest/first_failure"


class RecipeSpider(scrapy.Spider):
    """``scrapy crawl recipe -a source=demo`` or ``harvest crawl demo``."""

    name = "recipe"

    def __init__(
        self,
        source: str | None = None,
        recipe: Recipe | None = None,
        start_url: str | None = None,
        **kwargs: Any,
    ):
        if recipe is None:
            if source is None:
                raise ValueError("the recipe spider needs a source: -a source=NAME")
            recipe = load_recipe(source)
        self.recipe = recipe
        super().__init__(name=recipe.name, **kwargs)
        self.start_urls = [start_url] if start_url else list(recipe.start_urls)
        # from the start URLs in force, so a --start-url elsewhere is not filtered as offsite
        self.allowed_domains = recipe.domains(self.start_urls)
        self.item_re = re.compile(recipe.item_urls)
        # imported when the recipe was read, with its folder on the path
        self.hook = hooks.load(recipe.parse) if recipe.parse else None
        self.follow_render = [f.render or recipe.render for f in recipe.follow]
        self.listing_retries, self.listing_backoff = 6, 2.0  # set from the settings
        self.listing_ok = self.listing_links = 0  # for what a lost listing page hid

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> RecipeSpider:
        spider = super().from_crawler(crawler, *args, **kwargs)
        spider.listing_retries = crawler.settings.getint("HARVEST_LISTING_RETRIES")
        spider.listing_backoff = crawler.settings.getfloat("HARVEST_LISTING_BACKOFF")
        return spider

    async def start(self) -> AsyncIterator[Any]:
        for url in self.start_urls:
            yield self.follow_request(url, self.recipe.render)

    def follow_request(self, url: str, mode: str) -> scrapy.Request:
        request = scrapy.Request(url, callback=self.parse, **self.render(mode))
        request.meta[LISTING_META] = not self.item_re.search(url)
        return request

    def render(self, mode: str) -> dict[str, Any]:
        """Request arguments for a page fetched in ``mode``: http, or browser."""
        if mode != "browser":
            return {"errback": self.failed}
        return {"meta": render_meta(self.recipe.browser), "errback": self.failed}

    def failed(self, failure: Failure) -> list[scrapy.Request]:
        """A page given up on is counted by reason and logged in one line, never a crash.

        A listing page is tried again, later and later, before it is given up: what lies
        behind it is lost with it, so the account names it as a broken chain.
        """
        request = getattr(failure, "request", None)
        stats = self.crawler.stats
        assert stats is not None
        if stats.get_value(FIRST_FAILURE) is None:
            stats.set_value(FIRST_FAILURE, f"{getattr(request, 'url', '?')}: {why(failure)}")
        value = failure.value
        if isinstance(value, HttpError):
            # with an errback, Scrapy's HttpErrorMiddleware leaves the counting to us
            status = value.response.status
            reason, transient = f"http_{status}", status == 429 or status >= 500
        elif isinstance(value, GaveUp):
            # counted where it was dropped
            reason, transient = value.reason, value.transient
        elif isinstance(value, IgnoreRequest):
            return []  # harvest's and Scrapy's middlewares count these where they drop them
        else:
            reason, transient = type(value).__name__, True
            if request is not None and request.meta.get("playwright"):
                stats.inc_value("harvest/browser/failed")
        if request is not None and request.meta.get(LISTING_META):
            tries = request.meta.get(LISTING_TRIES_META, 0)
            if transient and tries < self.listing_retries:
                return [self.later(request, tries)]
            behind = self.pages_behind()
            stats.set_value(f"{BROKEN_CHAIN}{request.url}", behind)
            self.logger.error(
                "broken chain: gave up on listing page %s (%s); about %d pages behind it "
                "were never seen",
                request.url,
                reason,
                behind,
            )
        if not isinstance(value, GaveUp):
            stats.inc_value(f"harvest/failed/{reason}")
        message = failure.getErrorMessage()
        self.logger.warning("gave up on %s: %s", getattr(request, "url", "?"), message)
        return []

    def later(self, request: scrapy.Request, tries: int) -> scrapy.Request:
        delay = self.listing_backoff * 2**tries
        self.logger.info("listing page %s failed: trying again in %.0fs", request.url, delay)
        assert self.crawler.stats is not None
        self.crawler.stats.inc_value("harvest/listing/retries")
        retry = request.replace(dont_filter=True)
        for key in (EXIT_META, PROXY_META, "download_slot", "download_latency"):
            retry.meta.pop(key, None)
        retry.meta[LISTING_TRIES_META] = tries + 1
        retry.meta[NOT_BEFORE_META] = time.time() + delay
        return retry

    def pages_behind(self) -> int:
        """What a listing page led to, on average, in this crawl: at least one page."""
        return max(1, round(self.listing_links / self.listing_ok)) if self.listing_ok else 1

    def parse(self, response: Response, **kwargs: Any) -> Iterator[Any]:
        if not isinstance(response, TextResponse):
            return
        if self.item_re.search(response.url):
            yield from self.items(response)
        listing = response.meta.get(LISTING_META, False)
        self.listing_ok += listing
        for rule, mode in zip(self.recipe.follow, self.follow_render, strict=True):
            for link in readonce.links(response, rule.allow, rule.restrict_css):
                self.listing_links += listing
                yield self.follow_request(response.urljoin(link.url), mode)

    def items(self, response: TextResponse) -> list[dict[str, Any]]:
        """The page's item, with its hook's fields or items; a hook that raises costs the
        page them, counted in the account, and never the crawl."""
        item = self.extract(response)
        if self.hook is None:
            return [item]
        try:
            return hooks.apply(self.hook, response, item)
        except Exception as exc:
            assert self.crawler.stats is not None
            self.crawler.stats.inc_value(f"{HOOK_ERROR}{type(exc).__name__}")
            self.logger.warning(
                "parse hook %s failed on %s: %s: %s",
                self.recipe.parse,
                response.url,
                type(exc).__name__,
                exc,
            )
            return [item]

    def extract(self, response: Response) -> dict[str, Any]:
        item: dict[str, Any] = {
            name: convert(field, select(response, field))
            for name, field in self.recipe.fields.items()
        }
        item["url"] = response.url
        item["http_status"] = response.status
        item["fetched_at"] = datetime.now(UTC)
        return item


def why(failure: Failure) -> str:
    if isinstance(failure.value, HttpError):
        return f"HTTP status {failure.value.response.status}"
    return failure.getErrorMessage() or type(failure.value).__name__


def select(response: Response, field: Field) -> list[str]:
    if field.css is None and field.xpath is None:
        return []  # the recipe's parse: hook fills it
    return readonce.values(response, field.css, field.xpath)


def convert(field: Field, values: list[str]) -> Any:
    """Typed value of a field; None where the page has nothing usable, for the gate to see."""
    if field.type == "list":
        return values
    if not values:
        return None
    if field.type == "text":
        return "\n".join(values)
    first = values[0]
    try:
        if field.type == "int":
            return int(first.replace(",", ""))
        if field.type == "float":
            return float(first.replace(",", ""))
    except ValueError:
        return None
    return first
