"""`harvest crawl` and `harvest curate`: a source into raw/, then through the gate."""

from __future__ import annotations

import contextlib
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from harvest.cli.common import config, emit, err
from harvest.config import Config
from ingestion.errors import GaveUpError

if TYPE_CHECKING:
    from harvest.crawl import CrawlSummary
    from spiders.recipe import Recipe


def crawl(
    source: str = typer.Argument(..., help="recipe name in sources/, or a YAML path"),
    start_url: str | None = typer.Option(None, help="crawl from here instead of the recipe's"),
    curate: bool = typer.Option(True, help="run the gate when the crawl ends"),
    fresh: bool = typer.Option(False, help="start over instead of resuming an unfinished crawl"),
    workers: int = typer.Option(1, min=1, help="crawl processes sharing one frontier in Redis"),
    redis_url: str | None = typer.Option(
        None, "--redis", help="Redis holding the shared frontier (default: a private one)"
    ),
    crawl_id: str | None = typer.Option(
        None, help="join this crawl, e.g. with workers on other machines (needs --redis)"
    ),
    worker: bool = typer.Option(False, hidden=True, help="be one worker of a shared crawl"),
    resumed: bool = typer.Option(False, hidden=True, help="the shared crawl is resumed"),
    progress_file: Path | None = typer.Option(
        None, help="append the counts here as JSON lines, every few seconds"
    ),
    pages: int | None = typer.Option(
        None, min=1, help="stop after this many pages, for a quick look (limits.pages)"
    ),
) -> None:
    """Crawl SOURCE into raw/<source>, then curate it."""
    from harvest import stages
    from harvest.crawl import run_crawl
    from harvest.service.clirun import CliRun
    from harvest.workerfork import forked_workers
    from spiders.account import account, describe

    cfg = config()
    recipe = stages.recipe(cfg, source)
    if worker:
        emit(crawl_worker(cfg, recipe, start_url, crawl_id, resumed).to_dict())
        return
    if recipe.kind == "api" and (workers > 1 or redis_url):
        raise typer.BadParameter("an API recipe is crawled by one process: no --workers or --redis")
    if pages is not None:
        # settings, not limits.pages: the recipe's settings already hold its own limits
        limit = {"CLOSESPIDER_PAGECOUNT": pages, "HARVEST_PAGES": pages}
        recipe = replace(recipe, settings={**recipe.settings, **limit})
    if crawl_id and not redis_url:
        raise typer.BadParameter("--crawl-id joins a shared crawl: give its --redis URL")
    if progress_file and (workers > 1 or redis_url):
        raise typer.BadParameter("--progress-file is written by a crawl of one process")
    shared = workers > 1 or redis_url is not None
    # forked before the lake, the run history or the lock is opened (harvest/workerfork.py)
    forking = forked_workers(workers if shared else 0, cfg, recipe)
    # recorded in the run history beside the lake, as the service's runs are
    with forking as forked, CliRun(cfg, recipe.name) as recorded:
        # one crawl of a source at a time; joining a shared crawl by id adds workers to it
        lock = stages.source_lock(cfg, stages.CRAWL_STAGE, recipe.name)
        with contextlib.nullcontext() if crawl_id else lock:
            recorded.start()  # in the run history once it holds the source
            if shared:
                from harvest.workers import run_workers

                crawled = run_workers(
                    cfg, recipe, source, workers, redis_url, start_url, fresh, crawl_id, forked
                )
            else:
                crawled = run_crawl(
                    cfg, recipe, start_url, fresh=fresh, progress_file=progress_file
                )
        summary: dict[str, Any] = {"source": recipe.name, **crawled.to_dict()}
        # stopped by a signal: the user wants it to end, not to start curating
        if curate and crawled.finish_reason != "shutdown":
            result = stages.curate_source(cfg, recipe)
            summary.update(
                curated=result.curated,
                quarantined=result.quarantined,
                duplicates_dropped=result.duplicates_dropped,
                near_duplicates_dropped=result.near_duplicates_dropped,
                batch_status=result.batch_status,
                report=result.report,
            )
            if result.batch_status == "held":
                summary["held_reasons"] = result.held_reasons
                say_held(result.source, result.held_reasons)
        # every crawl ends with its account; pages given up past the recipe's limit fail it
        acc = account(crawled.stats)
        summary["account"] = acc.to_dict()
        for line in describe(acc):
            err.print(f"account: {line}", highlight=False)
        recorded.summary = summary
        emit(summary)
        if acc.stalled_for:
            raise GaveUpError(
                f"crawl of {recipe.name} stalled: nothing came back for {acc.stalled_for} s "
                "(HARVEST_STALL_TIMEOUT); it resumes on the next crawl"
            )
        if acc.given_up_total > recipe.limits.give_up:
            raise GaveUpError(
                f"crawl of {recipe.name} gave up on {acc.given_up_total} pages, more than its "
                f"limits.give_up ({recipe.limits.give_up})",
                hint="the account lines above say why; raise limits.give_up if that is expected",
            )


def crawl_worker(
    cfg: Config, recipe: Recipe, start_url: str | None, crawl_id: str | None, resumed: bool
) -> CrawlSummary:
    """One worker of ``harvest crawl --workers N``, which passes the Redis URL in the
    environment, where ``ps`` does not show it."""
    from harvest.crawl import Worker, run_crawl
    from harvest.workers import REDIS_URL_ENV

    redis_url = os.environ.get(REDIS_URL_ENV)
    if not redis_url or not crawl_id:
        raise typer.BadParameter(f"--worker needs --crawl-id and ${REDIS_URL_ENV}")
    crawled = run_crawl(
        cfg, recipe, start_url, progress=False, worker=Worker(redis_url, crawl_id, resumed)
    )
    return replace(crawled, requests=int(crawled.stats.get("scheduler/dequeued/redis", 0)))


def curate_cmd(
    source: str,
    accept_batch: bool = typer.Option(
        False, help="publish a batch even if it fails a batch-level gate (recorded)"
    ),
    reason: str | None = typer.Option(None, help="why the batch is accepted (with --accept-batch)"),
) -> None:
    """Validate the raw rows of SOURCE not yet curated; split into curated and quarantine."""
    from dataclasses import asdict

    from harvest import stages

    if reason and not accept_batch:
        raise typer.BadParameter("--reason goes with --accept-batch")
    cfg = config()
    note = (reason or "accepted by hand") if accept_batch else None
    result = stages.curate_source(cfg, stages.recipe(cfg, source), accept_batch=note, progress=True)
    if result.batch_status == "held":
        say_held(result.source, result.held_reasons)
    emit(asdict(result))


def say_held(source: str, reasons: list[str]) -> None:
    err.print(
        f"batch of {source} held back whole (see `harvest status {source}`):", highlight=False
    )
    for line in reasons:
        err.print(f"  - {line}", highlight=False)
