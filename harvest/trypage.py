"""``harvest recipe try SOURCE URL``: one page fetched as a crawl would fetch it (rendered
when the recipe renders it, through its proxies, under its settings), and what the recipe
makes of it: each field's value or why it is empty, the links each follow rule takes, and
whether the page is an item. Nothing is written to the lake.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

from scrapy.crawler import CrawlerProcess
from scrapy.http import Response, TextResponse
from twisted.python.failure import Failure

from harvest.config import Config
from harvest.crawl import crawl_settings
from spiders import hooks, readonce
from spiders.recipe import Recipe
from spiders.recipe_spider import RecipeSpider, convert, select, why

# the crawl's parts that read or write the lake; a look at one page needs none of them
OFF = {
    "spiders.resume.ResumeMiddleware": None,
    "spiders.incremental.IncrementalMiddleware": None,
}


class TrySpider(RecipeSpider):
    name = "recipe-try"

    def __init__(self, url: str, mode: str, found: dict[str, Any], **kwargs: Any):
        super().__init__(start_url=url, **kwargs)
        self.url, self.mode, self.found = url, mode, found

    async def start(self) -> AsyncIterator[Any]:
        yield self.follow_request(self.url, self.mode)

    def parse(self, response: Response, **kwargs: Any) -> Iterator[Any]:
        self.found.update(describe(self, response))
        return iter(())

    def failed(self, failure: Failure) -> list[Any]:
        self.found["error"] = why(failure)
        return []


def mode_for(recipe: Recipe, url: str) -> str:
    """How a crawl fetches ``url``: the recipe's render, or the first follow rule's that
    would take a link to it and says how."""
    if recipe.render == "browser":
        return "browser"
    for rule in recipe.follow:
        if rule.render and re.search(rule.allow, url):
            return rule.render
    return recipe.render


def describe(spider: RecipeSpider, response: Response) -> dict[str, Any]:
    out: dict[str, Any] = {"url": response.url, "status": response.status}
    if not isinstance(response, TextResponse):
        kind = (response.headers.get("Content-Type") or b"").decode()
        out["error"] = f"not a text page ({kind or 'no Content-Type'})"
        return out
    recipe = spider.recipe
    out["item"] = bool(spider.item_re.search(response.url))
    if not out["item"]:
        out["item_why_not"] = f"its URL does not match item_urls {recipe.item_urls!r}"
    fields: dict[str, dict[str, Any]] = {}
    for name, field in recipe.fields.items():
        matched = select(response, field)
        value = convert(field, matched)
        entry: dict[str, Any] = {"value": value}
        if value in (None, []):
            if field.css is None and field.xpath is None:
                entry["why"] = "no selector: the parse hook fills it"
            elif not matched:
                entry["why"] = f"{field.css or field.xpath!r} matched nothing"
            else:
                entry["why"] = f"{matched[0]!r} is not a {field.type}"
        fields[name] = entry
    if spider.hook is not None:
        base = {name: entry["value"] for name, entry in fields.items()}
        try:
            items = hooks.apply(spider.hook, response, base)
        except Exception as exc:
            out["hook_error"] = f"{type(exc).__name__}: {exc}"
        else:
            out["hook_items"] = len(items)
            for name, value in items[0].items():
                if name in fields and value != fields[name]["value"]:
                    fields[name] = {"value": value, "from": "parse hook"}
    out["fields"] = fields
    out["follow"] = [
        {
            "allow": rule.allow,
            "restrict_css": rule.restrict_css,
            "links": sorted(
                {
                    response.urljoin(link.url)
                    for link in readonce.links(response, rule.allow, rule.restrict_css)
                }
            ),
        }
        for rule in recipe.follow
    ]
    return out


def try_page(config: Config, recipe: Recipe, url: str, mode: str | None = None) -> dict[str, Any]:
    """What ``recipe`` makes of the page at ``url`` (see the module's docstring)."""
    mode = mode or mode_for(recipe, url)
    settings = crawl_settings(config, recipe, "try", progress=False)
    settings.set(
        "DOWNLOADER_MIDDLEWARES", {**settings.getdict("DOWNLOADER_MIDDLEWARES"), **OFF}, 50
    )
    settings.set("ITEM_PIPELINES", {}, priority=50)
    settings.set("LOG_LEVEL", "ERROR", priority=50)
    found: dict[str, Any] = {"rendered": mode == "browser"}
    process = CrawlerProcess(settings)
    process.crawl(TrySpider, recipe=recipe, url=url, mode=mode, found=found)
    process.start()
    if "status" not in found and "error" not in found:
        found["error"] = "no response (robots.txt, the site's address or the recipe's domains)"
    return found
