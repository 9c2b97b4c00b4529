"""Runs a crawl of an API recipe (``kind: api``) in this process: ``spiders.api`` on asyncio.

The same contract as an HTML crawl (``harvest.crawl.run_crawl``, which hands API recipes
here): the source's settings and proxies, a crawl log with one line a warning on stderr,
resuming an unfinished crawl unless ``fresh``, the same ``CrawlSummary``, and the same
errors: a CrawlError when no page answered, an ApiAuthError (exit 78) for credentials
that are missing or refused.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

from harvest.config import Config
from harvest.crawl import (
    CrawlError,
    CrawlSetupError,
    CrawlSummary,
    cause,
    check_proxies,
    crawl_log,
    crawl_settings,
    no_response,
    refusal,
)
from ingestion.lake import Lake
from spiders.api import ApiCrawl
from spiders.middlewares.proxypool import STOP_REASON
from spiders.pipelines import new_crawl_id
from spiders.recipe import Recipe
from spiders.resume import unfinished_crawl


def run_api_crawl(
    config: Config,
    recipe: Recipe,
    start_url: str | None = None,
    fresh: bool = False,
    progress_file: str | Path | None = None,
) -> CrawlSummary:
    """Crawls the API of ``recipe`` into ``raw/<source>``; returns its summary."""
    lake = Lake(config.lake)
    resumed = None if fresh else unfinished_crawl(lake, recipe.name)
    crawl_id = resumed or new_crawl_id()
    settings = crawl_settings(config, recipe, crawl_id, progress=False)
    proxies = check_proxies(config, recipe, settings)
    url = start_url or recipe.start_urls[0]
    if not proxies:
        allow_private = recipe.allow_private or settings.getbool("HARVEST_ALLOW_PRIVATE")
        if (refused := refusal(url, allow_private)) is not None:
            raise no_response(recipe, url, f"{refused}, before the crawl started")
    log = Path(config.reports) / "crawls" / f"{recipe.name}-{crawl_id}.log"
    progress = ProgressWriter(Path(progress_file)) if progress_file else None
    crawl = ApiCrawl(
        recipe,
        settings,
        lake,
        crawl_id,
        resumed is not None,
        start_url=url,
        proxies=proxies,
        progress=progress,
    )
    with crawl_log(log, settings.get("LOG_LEVEL")) as first_error:
        # httpx names every URL it fetches at INFO: a query may hold an API key
        for name in ("httpx", "httpcore", "hpack", "h2"):
            logging.getLogger(name).setLevel(logging.WARNING)
        try:
            stats = asyncio.run(crawl.run())
        except (OSError, RuntimeError) as exc:
            raise CrawlSetupError(f"crawl of {recipe.name} failed: {exc} (log: {log})") from exc
    if stats.get("finish_reason") == STOP_REASON:
        raise CrawlError(
            f"crawl of {recipe.name} stopped: every proxy is banned or dead "
            f"({stats.get('harvest/rows_committed', 0)} rows committed before it stopped; "
            f"log: {log})",
            hint="rerun later, or with other proxies; it resumes where it stopped",
        )
    if not stats.get("response_received_count") and stats.get("finish_reason") != "shutdown":
        raise no_response(recipe, url, cause(first_error.cause, stats, [url]), log)
    return CrawlSummary.from_stats(stats, crawl_id, resumed is not None)


class ProgressWriter:
    """The crawl's counts as JSON lines, as an HTML crawl writes them (spiders/progress.py)."""

    def __init__(self, path: Path):
        self.path = path

    def __call__(self, counts: dict[str, int]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as file:
            file.write(json.dumps(counts) + "\n")
