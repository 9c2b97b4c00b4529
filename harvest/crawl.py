"""Runs a recipe crawl in this process with Scrapy's CrawlerProcess."""

from __future__ import annotations

from typing import Any

from scrapy.crawler import CrawlerProcess
from scrapy.settings import Settings

from harvest.config import Config
from ingestion.lake import Lake
from spiders.pipelines import new_crawl_id
from spiders.recipe import Recipe
from spiders.recipe_spider import RecipeSpider
from spiders.render import render_settings
from spiders.resume import unfinished_crawl


class CrawlError(RuntimeError):
    pass


def crawl_settings(
    config: Config, recipe: Recipe, crawl_id: str, progress: str | bool = "auto"
) -> Settings:
    settings = Settings()
    settings.setmodule("spiders.settings", priority="project")
    if recipe.renders:
        # only here: a plain crawl never loads Playwright
        for name, value in render_settings(recipe).items():
            if isinstance(value, dict):  # add to the project's components, not replace them
                value = {**settings.getdict(name), **value}
            settings.set(name, value, priority="project")
    settings.update(recipe.settings, priority="project")
    settings.set("HARVEST_LAKE", config.lake, priority="cmdline")
    settings.set("HARVEST_BATCH_SIZE", config.crawl_batch_size, priority="cmdline")
    settings.set("HARVEST_CRAWL_ID", crawl_id, priority="cmdline")
    settings.set("HARVEST_PROGRESS", progress, priority="cmdline")
    settings.set("LOG_LEVEL", "WARNING", priority="cmdline")
    return settings


def run_crawl(
    config: Config,
    recipe: Recipe,
    start_url: str | None = None,
    progress: str | bool = "auto",
    fresh: bool = False,
) -> dict[str, Any]:
    """Crawls ``recipe`` into ``raw/<source>``; returns Scrapy's stats. Once per process.

    A crawl of the source that never finished is resumed unless ``fresh`` is set.
    """
    resumed = None if fresh else unfinished_crawl(Lake(config.lake), recipe.name)
    crawl_id = resumed or new_crawl_id()
    settings = crawl_settings(config, recipe, crawl_id, progress)
    settings.set("HARVEST_RESUME", resumed is not None, priority="cmdline")
    process = CrawlerProcess(settings)
    crawler = process.create_crawler(RecipeSpider)
    process.crawl(crawler, recipe=recipe, start_url=start_url)
    process.start()
    assert crawler.stats is not None
    stats = dict(crawler.stats.get_stats())
    stats["harvest/crawl_id"] = crawl_id
    stats["harvest/resumed"] = resumed is not None
    if not stats.get("response_received_count"):
        urls = [start_url] if start_url else recipe.start_urls
        reason = stats.get("finish_reason", "unknown")
        errors = {k: v for k, v in stats.items() if k.startswith("downloader/exception_type_count")}
        raise CrawlError(
            f"crawl of {recipe.name} got no response from {', '.join(urls)} "
            f"(finish reason {reason}; {errors or 'no download errors recorded'})"
        )
    return stats
