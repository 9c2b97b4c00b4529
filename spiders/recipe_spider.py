"""One generic spider that runs any recipe from ``sources/``."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import scrapy
from scrapy.exceptions import IgnoreRequest
from scrapy.http import Response, TextResponse
from scrapy.linkextractors import LinkExtractor
from scrapy.spidermiddlewares.httperror import HttpError
from twisted.python.failure import Failure

from spiders.recipe import Field, Recipe, load_recipe
from spiders.render import render_meta


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
        self.allowed_domains = list(recipe.allowed_domains)
        self.item_re = re.compile(recipe.item_urls)
        self.extractors = [
            LinkExtractor(allow=f.allow, restrict_css=f.restrict_css or ()) for f in recipe.follow
        ]
        self.follow_render = [f.render or recipe.render for f in recipe.follow]

    async def start(self) -> AsyncIterator[Any]:
        for url in self.start_urls:
            yield scrapy.Request(url, callback=self.parse, **self.render(self.recipe.render))

    def render(self, mode: str) -> dict[str, Any]:
        """Request arguments for a page fetched in ``mode``: http, or browser."""
        if mode != "browser":
            return {"errback": self.failed}
        return {"meta": render_meta(self.recipe.browser), "errback": self.failed}

    def failed(self, failure: Failure) -> None:
        """A page given up on is counted by reason and logged in one line, never a crash."""
        request = getattr(failure, "request", None)
        assert self.crawler.stats is not None
        if failure.check(HttpError):
            # with an errback, Scrapy's HttpErrorMiddleware leaves the counting to us
            status = failure.value.response.status
            self.crawler.stats.inc_value(f"harvest/failed/http_{status}")
            self.logger.warning("gave up on %s: HTTP %d", getattr(request, "url", "?"), status)
            return
        if failure.check(IgnoreRequest):
            return  # harvest's and Scrapy's middlewares count these where they drop them
        self.crawler.stats.inc_value(f"harvest/failed/{failure.type.__name__}")
        if request is not None and request.meta.get("playwright"):
            self.crawler.stats.inc_value("harvest/browser/failed")
        self.logger.warning(
            "gave up on %s: %s", getattr(request, "url", "?"), failure.getErrorMessage()
        )

    def parse(self, response: Response, **kwargs: Any) -> Iterator[Any]:
        if not isinstance(response, TextResponse):
            return
        if self.item_re.search(response.url):
            yield self.extract(response)
        for extractor, mode in zip(self.extractors, self.follow_render, strict=True):
            for link in extractor.extract_links(response):
                yield response.follow(link, callback=self.parse, **self.render(mode))

    def extract(self, response: Response) -> dict[str, Any]:
        item: dict[str, Any] = {
            name: convert(field, select(response, field))
            for name, field in self.recipe.fields.items()
        }
        item["url"] = response.url
        item["http_status"] = response.status
        item["fetched_at"] = datetime.now(UTC)
        return item


def select(response: Response, field: Field) -> list[str]:
    sel = response.css(field.css) if field.css else response.xpath(field.xpath or "")
    return [s.strip() for s in sel.getall() if s.strip()]


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
