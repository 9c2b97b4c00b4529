"""Runs a recipe crawl in this process with Scrapy's CrawlerProcess.

What the user sees of a crawl is one line a warning or error on stderr, and one ``error:``
line naming the cause when it fails; the crawl's log file keeps everything, tracebacks
included: ``<reports>/crawls/<source>-<crawl_id>.log`` (a worker's ends in its pid).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from scrapy.crawler import CrawlerProcess
from scrapy.settings import Settings
from twisted.python.failure import Failure

from harvest import logs
from harvest.config import Config
from ingestion.errors import ConfigurationError, InvalidInputError, UnavailableError
from ingestion.lake import Lake
from spiders.middlewares.privateaddress import is_private
from spiders.middlewares.proxypool import STOP_REASON, ProxyListError, proxy_urls
from spiders.pipelines import new_crawl_id
from spiders.recipe import Recipe, url_problem
from spiders.recipe_spider import FIRST_FAILURE, RecipeSpider
from spiders.render import render_settings
from spiders.resume import unfinished_crawl

logger = logging.getLogger(__name__)

# how long a start URL's host may take to accept a connection before the crawl starts
PROBE_TIMEOUT = 5.0
REMOTE_CONTROL = "scrapy.extensions.remote_control.RemoteControl"


class CrawlError(UnavailableError):
    """The crawl could not go on: the site, every proxy or Redis did not answer, or a
    worker died. Rerun later: the crawl resumes where it stopped."""


class CrawlSetupError(ConfigurationError, CrawlError):
    """The crawl cannot start as configured: its proxy list, a setting or a component."""


class StartUrlError(InvalidInputError, CrawlError):
    """``--start-url`` is not a URL the crawl can start from."""


@dataclass(frozen=True)
class Worker:
    """This process is one of several crawling together through a frontier in Redis."""

    redis_url: str
    crawl_id: str
    resumed: bool = False


@dataclass(frozen=True)
class WorkerShare:
    """One worker's part of a crawl made by several processes."""

    worker: int  # 1 to N
    pid: int
    pages: int
    requests: int | None  # taken from the frontier; None if the worker did not say
    items: int
    rows_committed: int
    finish_reason: str | None


@dataclass(frozen=True)
class CrawlSummary:
    """What a crawl reports: the headline counts and every numeric stat of Scrapy's.

    ``requests`` is set for one worker of a shared crawl (what it took from the frontier),
    ``workers`` for a crawl merged from several (``harvest.workers``). ``to_dict`` is the
    JSON that ``harvest crawl`` prints, without the keys left unset.
    """

    crawl_id: str
    resumed: bool
    pages: int
    items: int
    rows_committed: int
    finish_reason: str | None
    stats: dict[str, float] = field(default_factory=dict)
    requests: int | None = None
    workers: list[WorkerShare] | None = None

    @classmethod
    def from_stats(cls, stats: dict[str, Any], crawl_id: str, resumed: bool) -> CrawlSummary:
        """The summary of one crawl process from Scrapy's stats."""
        return cls(
            crawl_id=crawl_id,
            resumed=resumed,
            pages=stats.get("response_received_count", 0),
            items=stats.get("item_scraped_count", 0),
            rows_committed=stats.get("harvest/rows_committed", 0),
            finish_reason=stats.get("finish_reason"),
            stats={k: v for k, v in sorted(stats.items()) if type(v) in (int, float)},
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CrawlSummary:
        """A summary read back from its JSON (a worker's last line); counts it lacks are 0."""
        return cls(
            crawl_id=str(data.get("crawl_id", "")),
            resumed=bool(data.get("resumed", False)),
            pages=data.get("pages", 0),
            items=data.get("items", 0),
            rows_committed=data.get("rows_committed", 0),
            finish_reason=data.get("finish_reason"),
            stats=dict(data.get("stats") or {}),
            requests=data.get("requests"),
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for name in ("requests", "workers"):
            if out[name] is None:
                del out[name]
        return out


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
    if not settings.getbool("REMOTE_CONTROL_ENABLED"):
        # not even imported: it brings in aiohttp, a fifth of a second of each start; Scrapy
        # imports every extension either dict names, a disabled one too
        base = settings.getdict("EXTENSIONS_BASE")
        settings.set("EXTENSIONS_BASE", {k: v for k, v in base.items() if k != REMOTE_CONTROL})
    settings.set("HARVEST_LAKE", config.lake, priority="cmdline")
    settings.set("HARVEST_BATCH_SIZE", config.crawl_batch_size, priority="cmdline")
    if config.crawl_proxies:
        settings.set("HARVEST_PROXIES", config.crawl_proxies, priority="cmdline")
    if config.crawl_proxy_file:
        settings.set("HARVEST_PROXY_FILE", config.crawl_proxy_file, priority="cmdline")
    settings.set("HARVEST_CRAWL_ID", crawl_id, priority="cmdline")
    settings.set("HARVEST_PROGRESS", progress, priority="cmdline")
    # run_crawl logs to stderr and the crawl's file itself (crawl_log), at LOG_LEVEL
    settings.set("LOG_INSTALL_ROOT_HANDLER", False, priority="cmdline")
    return settings


def run_crawl(
    config: Config,
    recipe: Recipe,
    start_url: str | None = None,
    progress: str | bool = "auto",
    fresh: bool = False,
    worker: Worker | None = None,
    progress_file: str | Path | None = None,
) -> CrawlSummary:
    """Crawls ``recipe`` into ``raw/<source>``; returns its summary. Once per process.

    A crawl of the source that never finished is resumed unless ``fresh`` is set. A
    ``worker`` takes its crawl id and whether it resumes from the process that started it.
    What would stop the crawl once started (a bad start URL or proxy list, a site that
    refuses connections) is raised as a CrawlError before it starts. ``progress_file``
    gets the crawl's counts as JSON lines (spiders/progress.py).
    """
    if start_url is not None and (problem := url_problem(start_url)) is not None:
        raise StartUrlError(f"crawl of {recipe.name}: start URL: {problem}")
    if recipe.kind == "api":
        if worker is not None:
            raise CrawlSetupError(
                f"crawl of {recipe.name}: an API recipe is crawled by one process"
            )
        from harvest.apicrawl import run_api_crawl

        return run_api_crawl(config, recipe, start_url, fresh, progress_file)
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
    if progress_file:
        settings.set("HARVEST_PROGRESS_FILE", str(progress_file), priority="cmdline")
    if not check_proxies(config, recipe, settings):
        # through proxies the site is never reached directly: the pool finds dead ones
        allow_private = recipe.allow_private or settings.getbool("HARVEST_ALLOW_PRIVATE")
        for url in [start_url] if start_url else recipe.start_urls:
            if (refused := refusal(url, allow_private)) is not None:
                raise no_response(recipe, url, f"{refused}, before the crawl started")
    suffix = f"-{os.getpid()}" if worker is not None else ""
    log = Path(config.reports) / "crawls" / f"{recipe.name}-{crawl_id}{suffix}.log"
    with crawl_log(log, settings.get("LOG_LEVEL"), recipe.settings.get("LOG_LEVEL")) as first_error:
        stats = _crawl(recipe, settings, start_url, log)
    if stats.get("finish_reason") == STOP_REASON:
        raise CrawlError(
            f"crawl of {recipe.name} stopped: every proxy is banned or dead "
            f"({stats.get('harvest/rows_committed', 0)} rows committed before it stopped; "
            f"log: {log})",
            hint="rerun later, or with other proxies; it resumes where it stopped",
        )
    # a worker may find that the others took every page: the caller checks them all
    if not stats.get("response_received_count") and worker is None:
        urls = [start_url] if start_url else recipe.start_urls
        raise no_response(recipe, start_url, cause(first_error.cause, stats, urls), log)
    return CrawlSummary.from_stats(stats, crawl_id, resumed is not None)


def cause(first_error: str | None, stats: dict[str, Any], urls: list[str]) -> str:
    """Why a crawl got no response: the first error logged, else the first page given up
    on, else the download errors counted, else how the crawl finished."""
    failure = str(stats.get(FIRST_FAILURE, ""))
    if len(urls) == 1:  # the error line names the URL already
        failure = failure.removeprefix(f"{urls[0]}: ")
    errors = {
        k.rpartition("/")[2]: v
        for k, v in stats.items()
        if k.startswith("downloader/exception_type_count")
    }
    return (
        first_error
        or failure
        or (f"download errors {errors}" if errors else "")
        or f"finish reason {stats.get('finish_reason', 'unknown')}"
    )


def _crawl(recipe: Recipe, settings: Settings, start_url: str | None, log: Path) -> dict[str, Any]:
    """Scrapy's stats of the crawl; an error raised inside Scrapy, named in one line."""
    failures: list[Failure] = []
    try:
        process = CrawlerProcess(settings)
        crawler = process.create_crawler(RecipeSpider)
        # a component that fails to start fails this deferred, and the crawl never runs
        process.crawl(crawler, recipe=recipe, start_url=start_url).addErrback(failures.append)
        process.start()
    except Exception:
        failures.append(Failure())  # type: ignore[no-untyped-call]
    if failures:
        failure = failures[0]
        logger.error("crawl of %s failed:\n%s", recipe.name, failure.getTraceback())
        raise CrawlSetupError(
            f"crawl of {recipe.name} failed: {type(failure.value).__name__}: "
            f"{failure.getErrorMessage()} (log: {log})"
        )
    return dict(crawler.stats.get_stats()) if crawler.stats is not None else {}


def check_proxies(config: Config, recipe: Recipe, settings: Settings) -> list[str]:
    """The proxies the crawl will use, checked before it starts; [] for none."""
    origins = {}
    if config.crawl_proxies:
        origins["HARVEST_PROXIES"] = "HARVEST_CRAWL_PROXIES or crawl.proxies"
    if config.crawl_proxy_file:
        # no [crawl]: the command line prints errors with rich, which takes it for markup
        origins["HARVEST_PROXY_FILE"] = "HARVEST_CRAWL_PROXY_FILE or crawl.proxy_file"
    try:
        return proxy_urls(recipe, settings, origins)
    except ProxyListError as exc:
        raise CrawlSetupError(f"crawl of {recipe.name}: {exc}") from exc


def refusal(url: str, allow_private: bool, timeout: float = PROBE_TIMEOUT) -> str | None:
    """Why ``url``'s host takes no connection, or None if it does or cannot tell in time.

    Scrapy retries a refused connection, and a listing page is tried again after growing
    pauses (spiders/recipe_spider.py): a crawl of a site that is down would take minutes
    to fail. One TCP connect to each start URL's host finds that out in a moment. A slow
    host is left to the crawl's own timeouts, and a private address the crawl may not
    visit is left to PrivateAddressMiddleware, which refuses it with its own reason.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return None if exc.errno == socket.EAI_AGAIN else f"{host} not found ({exc.strerror})"
    if not allow_private and any(is_private(str(a[4][0])) for a in addresses):
        return None
    error: OSError | None = None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as sock:
            sock.settimeout(timeout)
            try:
                sock.connect(address)
                return None
            except TimeoutError:
                return None
            except OSError as exc:
                error = exc
    if isinstance(error, ConnectionRefusedError):
        return f"{host}:{port} refused the connection"
    return f"cannot connect to {host}:{port} ({error.strerror if error else 'no address'})"


class OneLine(logging.Formatter):
    """A record's first line, without its traceback: the crawl's log file keeps the rest."""

    def format(self, record: logging.LogRecord) -> str:
        kept = record.exc_info, record.exc_text, record.stack_info
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            return super().format(record).split("\n", 1)[0]
        finally:
            record.exc_info, record.exc_text, record.stack_info = kept


class FirstError(logging.Handler):
    """The first error logged in the crawl, as one line naming its cause."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.cause: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.cause is not None:
            return
        try:
            cause = record.getMessage().split("\n", 1)[0].rstrip(". ")
            exc = record.exc_info[1] if record.exc_info else None
            if exc is not None and str(exc) not in cause:
                cause += f": {type(exc).__name__}: {exc}"
            self.cause = cause
        except Exception:  # a record that cannot be formatted is Python logging's to report
            self.handleError(record)


@contextmanager
def crawl_log(path: Path, level: str, shown: str | None = None) -> Iterator[FirstError]:
    """Logs to ``path`` at ``level`` in full, and to stderr a line a record at ``--log-level``,
    else at ``shown`` (a recipe's own LOG_LEVEL), else a warning or error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(path, encoding="utf-8")
    to_file.setLevel(level)
    # the crawl's log file and stderr read like every command's
    to_file.setFormatter(logging.Formatter(logs.TEXT))
    to_stderr = logs.stderr_handler(logs.level(shown or "WARNING"), OneLine(logs.TEXT))
    # what this module logs is raised as the CrawlError the user sees: not twice
    to_stderr.addFilter(lambda record: record.name != __name__)
    first = FirstError()
    root = logging.getLogger()
    was, before = root.level, root.handlers[:]
    root.setLevel(min(to_file.level, to_stderr.level))
    handlers = [to_file, to_stderr, first]
    root.handlers[:] = handlers  # the command's own stderr handler would print each twice
    try:
        yield first
    finally:
        for handler in handlers:
            handler.close()
        root.handlers[:] = before
        root.setLevel(was)


def no_response(
    recipe: Recipe, start_url: str | None, detail: str, log: Path | None = None
) -> CrawlError:
    urls = [start_url] if start_url else recipe.start_urls
    where = f" (log: {log})" if log is not None else ""
    return CrawlError(
        f"crawl of {recipe.name} got no response from {', '.join(urls)}: {detail}{where}"
    )
