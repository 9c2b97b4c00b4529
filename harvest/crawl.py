"""Runs a recipe crawl in this process with Scrapy's CrawlerProcess."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scrapy.crawler import CrawlerProcess
from scrapy.settings import Settings

from harvest.config import Config
from ingestion.lake import Lake
from spiders.middlewares.proxypool import STOP_REASON
from spiders.pipelines import new_crawl_id
from spiders.recipe import Recipe
from spiders.recipe_spider import RecipeSpider
from spiders.render import render_settings
from spiders.resume import unfinished_crawl


class CrawlError(RuntimeError):
    pass


@dataclass(frozen=True)
class Worker:
    """This process is one of several crawling together through a frontier in Redis."""

    redis_url: str
    crawl_id: str
    resumed: bool = False


def worker_settings(settings: Settings, worker: Worker) -> Settings:
    """Points ``settings`` (from ``crawl_settings``) at the frontier the workers share."""
    settings.set("SCHEDULER", "spiders.frontier.RedisFrontier", priority="cmdline")
    settings.set("HARVEST_REDIS_URL", worker.redis_url, priority="cmdline")
    return settings


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
    if config.crawl_proxies:
        settings.set("HARVEST_PROXIES", config.crawl_proxies, priority="cmdline")
    if config.crawl_proxy_file:
        settings.set("HARVEST_PROXY_FILE", config.crawl_proxy_file, priority="cmdline")
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
    worker: Worker | None = None,
) -> dict[str, Any]:
    """Crawls ``recipe`` into ``raw/<source>``; returns Scrapy's stats. Once per process.

    A crawl of the source that never finished is resumed unless ``fresh`` is set. A
    ``worker`` takes its crawl id and whether it resumes from the process that started it.
    """
    if worker is not None:
        resumed = worker.crawl_id if worker.resumed else None
        crawl_id = worker.crawl_id
    else:
        resumed = None if fresh else unfinished_crawl(Lake(config.lake), recipe.name)
        crawl_id = resumed or new_crawl_id()
    settings = crawl_settings(config, recipe, crawl_id, progress)
    if worker is not None:
        worker_settings(settings, worker)
    settings.set("HARVEST_RESUME", resumed is not None, priority="cmdline")
    process = CrawlerProcess(settings)
    crawler = process.create_crawler(RecipeSpider)
    process.crawl(crawler, recipe=recipe, start_url=start_url)
    process.start()
    assert crawler.stats is not None
    stats = dict(crawler.stats.get_stats())
    stats["harvest/crawl_id"] = crawl_id
    stats["harvest/resumed"] = resumed is not None
    if stats.get("finish_reason") == STOP_REASON:
        raise CrawlError(
            f"crawl of {recipe.name} stopped: every proxy is banned or dead "
            f"({stats.get('harvest/rows_committed', 0)} rows committed before it stopped)"
        )
    # a worker may find that the others took every page: the caller checks them all
    if not stats.get("response_received_count") and worker is None:
        reason = stats.get("finish_reason", "unknown")
        errors = {k: v for k, v in stats.items() if k.startswith("downloader/exception_type_count")}
        raise no_response(
            recipe, start_url, f"finish reason {reason}; {errors or 'no download errors recorded'}"
        )
    return stats


def no_response(recipe: Recipe, start_url: str | None, detail: str) -> CrawlError:
    urls = [start_url] if start_url else recipe.start_urls
    return CrawlError(f"crawl of {recipe.name} got no response from {', '.join(urls)} ({detail})")
