"""Crawls a recipe of ``kind: api``: a JSON API, page by page, with httpx on asyncio.

No Scrapy engine here: an API crawl is a loop over pages, not a frontier of links. What
HTML crawls and API crawls share is shared code: the pace of each exit (``Pacer``: waits
for it, learns from 429/503 and ``Retry-After``), the proxy pool's health rules, the lake
writer and the ``runs`` records, and the stats the account is built from, under the same
keys, so that the summary, the account, exit 3, curate and the service read an API crawl
as they read an HTML one.

Each page is committed after the pages before it, with the position of the page after it
in the commit's metadata (``api_position``). A crawl killed at any point, SIGKILL
included, resumes from the last position committed, and skips any record whose URL the
crawl id already committed: each record lands once. Page and offset paging fetch up to
``api.concurrency`` pages at once and commit them in order; cursors and next URLs come
one page at a time.

Incremental: with ``api.since`` each crawl asks only for records past the high-water mark
of the last finished one (recorded in ``runs``); with ``api.etag`` the first page is
asked for with the last crawl's ``ETag``, and a 304 ends the crawl with nothing to do.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urljoin, urlsplit, urlunsplit

import httpx
from scrapy.settings import BaseSettings

from ingestion.lake import LINEAGE_KEY, Lake
from ingestion.runs import (
    CRAWL_STAGE,
    FINISHED,
    INTERRUPTED,
    RUNNING,
    last_run,
    record_run,
    runs_of,
)
from ingestion.schema import PROVENANCE_COLUMNS, content_sha256
from spiders import apinet, apipath
from spiders.account import BROKEN_CHAIN, account
from spiders.apiauth import Credentials, credentials, redacted, refused, strip_query
from spiders.apicommit import POSITION_KEY, PageCommits
from spiders.apipaging import Paginator, Position
from spiders.middlewares.proxypool import STOP_REASON, ProxyPool
from spiders.pace import DIRECT, Pacer, PaceSettings
from spiders.recipe import Recipe
from spiders.recipe_spider import FIRST_FAILURE, convert
from spiders.resume import committed_urls

logger = logging.getLogger(__name__)
THROTTLED = (429, 503)
REFUSED = (401, 403)
AHEAD = 4  # answered pages, per request at once, that may wait for the one before them
SHUTDOWN, FINISHED_REASON, FAILED = "shutdown", "finished", "failed"
PAGE_LIMIT = "closespider_pagecount"  # the reason Scrapy gives a crawl its page limit ended


class PageGaveUpError(Exception):
    """A page the crawl stopped trying to get; ``reason`` is how the account names it."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class UnchangedError(Exception):
    """The first page answered 304: nothing changed since the last crawl."""


class NoExitError(Exception):
    """Every proxy is dead."""


def _trusted() -> ssl.SSLContext | bool:
    """Certificates trusted: SSL_CERT_FILE's when set (an internal API's own authority),
    else httpx's bundle; trust_env=False would drop the variable with the proxy ones."""
    cafile = os.environ.get("SSL_CERT_FILE")
    return ssl.create_default_context(cafile=cafile) if cafile else True


@dataclass
class Page:
    position: Position
    records: list[Any]
    after: Position  # the next page's position; None after the last
    status: int
    # when its body came: the time of each of its records, all fetched at once
    fetched_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass
class Stats:
    """Scrapy's stats' shape: a flat mapping the account reads (spiders/account.py)."""

    values: dict[str, Any] = field(default_factory=dict)

    def inc(self, key: str, n: float = 1) -> None:
        self.values[key] = self.values.get(key, 0) + n

    def set(self, key: str, value: Any) -> None:
        self.values[key] = value


def committed_position(lake: Lake, source: str, crawl_id: str) -> tuple[bool, Position]:
    """Whether ``crawl_id`` committed a page of ``source``, and the position after it."""
    table = f"raw/{source}"
    if not lake.exists(table):
        return False, None
    for entry in lake.table(table).history():  # newest first
        meta = json.loads(entry.get(LINEAGE_KEY, "{}") or "{}")
        if meta.get("crawl_id") == crawl_id and POSITION_KEY in meta:
            return True, json.loads(meta[POSITION_KEY])
    return False, None


def retry_after(value: str | None) -> float:
    """Seconds from a ``Retry-After`` value (seconds or an HTTP date); 0 when absent or bad
    (``spiders.middlewares.bans.parse_retry_after`` reads it off a Scrapy response)."""
    if not value:
        return 0.0
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 0.0
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class ApiCrawl:
    """One crawl of an API recipe into ``raw/<source>``; ``run`` returns its stats."""

    def __init__(
        self,
        recipe: Recipe,
        settings: BaseSettings,
        lake: Lake,
        crawl_id: str,
        resumed: bool,
        start_url: str | None = None,
        proxies: list[str] | None = None,
        progress: Callable[[dict[str, int]], None] | None = None,
    ):
        assert recipe.api is not None
        self.recipe, self.api = recipe, recipe.api
        self.lake, self.crawl_id, self.resumed = lake, crawl_id, resumed
        self.start_url = start_url or recipe.start_urls[0]
        self.host = urlsplit(self.start_url).hostname or ""
        self.batch_size = settings.getint("HARVEST_BATCH_SIZE", 100)
        self.timeout = settings.getfloat("DOWNLOAD_TIMEOUT", 30.0)
        self.retries = settings.getint("RETRY_TIMES", 2)
        self.max_throttles = settings.getint("HARVEST_PACING_MAX_TRIES", 20)
        self.progress_every = settings.getfloat("HARVEST_PROGRESS_INTERVAL", 5.0)
        # limits.pages, as Scrapy's CLOSESPIDER_PAGECOUNT: pages taken, at most (0: none)
        self.max_pages = settings.getint("CLOSESPIDER_PAGECOUNT", 0)
        self.pages = 0
        self.pacer = Pacer(
            PaceSettings(
                pause=settings.getfloat("HARVEST_PACING_PAUSE", 1.0),
                max_pause=settings.getfloat("HARVEST_PACING_MAX_PAUSE", 60.0),
            )
        )
        self.pool = (
            ProxyPool(
                proxies,
                backoff_base=recipe.ban.backoff_base,
                backoff_max=recipe.ban.backoff_max,
                max_failures=settings.getint("HARVEST_PROXY_MAX_FAILURES", 3),
            )
            if proxies
            else None
        )
        self.paginator = Paginator(self.api.paging, self.start_url)
        # each record's URL: the template joined to the start URL once, {id} kept
        self.url_template = (
            self.start_url.split("?", 1)[0].rstrip("/") + "/{id}"
            if self.api.item_url is None
            else urljoin(self.start_url, self.api.item_url)
        )
        self.fields = [
            (name, f, f.path or "")
            for name, f in recipe.fields.items()
            if name not in PROVENANCE_COLUMNS
        ]
        self.progress = progress
        self.stats = Stats()
        self.creds = Credentials()
        self.clients: dict[str, apinet.Clients] = {}
        self.in_flight: dict[str, int] = {}
        self.seen: set[str] = set()
        self.high_water: Any = None
        self.etag: str | None = None
        self.since: Any = None
        self.reason = FINISHED_REASON

    # -- the run -------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        self.creds = credentials(self.api.auth, self.recipe.path or self.recipe.name)
        started = time.monotonic()
        position, last = self._where_to_start()
        self.high_water = self.since  # a crawl that finds nothing new keeps the mark
        self.commits = PageCommits(
            self.lake,
            f"raw/{self.recipe.name}",
            self.recipe.field_types,
            self.crawl_id,
            self.batch_size,
        )
        self.stats.set("harvest/crawl_id", self.crawl_id)
        record_run(
            self.lake,
            CRAWL_STAGE,
            self.recipe.name,
            {"crawl_id": self.crawl_id, "state": RUNNING, "kind": "api", "since": self.since},
        )
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()
        assert main is not None
        stopping: list[int] = []

        def stop(signum: int) -> None:
            # the first signal cancels the crawl; what it committed stays, and the rest of
            # its complete pages land below
            if not stopping:
                logger.warning("signal %d: ending the crawl; it resumes on the next one", signum)
                stopping.append(signum)
                self.reason = SHUTDOWN
                main.cancel()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop, signum)
        ticker = asyncio.create_task(self._tick()) if self.progress else None
        try:
            with redacted(self.creds):
                await self._crawl(position, last)
        except asyncio.CancelledError:
            if not stopping:
                raise
            main.uncancel()  # stopped by a signal, not cancelled from outside
        except NoExitError as exc:
            logger.error("%s: stopping the crawl (%s)", exc, STOP_REASON)
            self.reason = STOP_REASON
        except UnchangedError:
            self.stats.inc("harvest/incremental/unchanged")
            self.high_water, self.etag = (last or {}).get("high_water"), (last or {}).get("etag")
        except Exception:
            self.reason = FAILED  # refused credentials, say: resumed once they are fixed
            raise
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
            if ticker is not None:
                ticker.cancel()
            await self._close_clients()
            await self._finish(started)
        return self.stats.values

    def _where_to_start(self) -> tuple[Position, dict[str, Any] | None]:
        """The first position, and the last finished crawl's record (for since and ETag)."""
        source = self.recipe.name
        runs = last_run(self.lake, CRAWL_STAGE, source)
        if self.resumed:
            self.since = (runs or {}).get("since")
            self.seen = committed_urls(self.lake, source, self.crawl_id)
            found, position = committed_position(self.lake, source, self.crawl_id)
            logger.warning(
                "resuming crawl %s: %d records already in the lake", self.crawl_id, len(self.seen)
            )
            self.stats.set("harvest/resume/skipped", 0)
            return (position if found else self.paginator.first()), None
        finished = runs if runs is not None and runs.get("state") == FINISHED else None
        if finished is None:
            done = [r for r in runs_of(self.lake, CRAWL_STAGE, source) if r["state"] == FINISHED]
            finished = done[-1] if done else None
        if self.api.since is not None and finished is not None:
            self.since = finished.get("high_water")
        return self.paginator.first(), finished

    async def _crawl(self, position: Position, last: dict[str, Any] | None) -> None:
        if position is None:
            return  # resumed after its last page was committed
        fresh = position == self.paginator.first()
        etag = (last or {}).get("etag") if self.api.etag and fresh else None
        first = await self._page(position, etag=etag)
        if not await self._take(first):
            return
        if self.paginator.concurrent:
            await self._concurrent(first.after)
        else:
            # an API whose next page is one already seen would be crawled for ever
            seen = {json.dumps(position)}
            position = first.after
            while position is not None and json.dumps(position) not in seen:
                seen.add(json.dumps(position))
                page = await self._page(position)
                position = page.after if await self._take(page) else None
            if position is not None:
                logger.error("the API's next page %s is one already fetched: ending", position)

    async def _concurrent(self, position: Position) -> None:
        """Pages fetched ``concurrency`` at a time, committed in order; the first short or
        empty page ends the crawl and what was asked for past it is dropped. A slow page
        holds up its commit, not the requests after it: up to ``AHEAD`` times the
        concurrency may wait, answered, for the pages before them."""
        tasks: dict[Position, asyncio.Task[Page]] = {}
        order: list[Position] = []
        nxt: Position = position
        limit = self.api.concurrency
        try:
            while order or nxt is not None:
                running = sum(not t.done() for t in tasks.values())
                while nxt is not None and running < limit and len(order) < AHEAD * limit:
                    tasks[nxt] = asyncio.create_task(self._page(nxt))
                    order.append(nxt)
                    nxt = self.paginator.ahead(nxt)
                    running += 1
                if not tasks[order[0]].done():
                    waiting = [t for t in tasks.values() if not t.done()]
                    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                while order and tasks[order[0]].done():
                    page = tasks.pop(order.pop(0)).result()
                    if not await self._take(page):
                        nxt = None
                        for task in tasks.values():
                            task.cancel()
                        order.clear()
        finally:
            for task in tasks.values():
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks.values(), return_exceptions=True)

    # -- one page ------------------------------------------------------------------------

    async def _page(self, position: Position, etag: str | None = None) -> Page:
        """``position``'s page, fetched through the exit free first, tried again after a
        throttle (paced), a 5xx or a dropped connection; given up after its tries. A page
        given up is counted and, past it, the crawl goes on where it can: a page or offset
        after it, nothing after a cursor or next URL (a broken chain)."""
        url, params, first = self.paginator.request(position)
        try:
            return await self._fetch(position, url, params, first, etag)
        except PageGaveUpError as exc:
            self.stats.inc(f"harvest/failed/{exc.reason}")
            if self.stats.values.get(FIRST_FAILURE) is None:
                self.stats.set(FIRST_FAILURE, f"{self.creds.redact(url)}: {exc}")
            logger.warning("gave up on %s: %s", self.creds.redact(url), exc)
            if self.paginator.concurrent:
                after = self.paginator.ahead(position) if self.paginator.full else None
                return Page(position, [], after, 0)
            self.stats.set(f"{BROKEN_CHAIN}{self.creds.redact(url)}", 1)
            logger.error(
                "broken chain: gave up on page %s; the pages after it were never seen",
                self.creds.redact(url),
            )
            return Page(position, [], None, 0)

    async def _fetch(
        self, position: Position, url: str, params: dict[str, str], first: bool, etag: str | None
    ) -> Page:
        names = set(self.creds.params)
        url = strip_query(url, names)
        query: dict[str, Any] = {}
        if first:  # a next URL carries what the first request asked for
            query = {k: _scalar(v) for k, v in self.api.params.items()}
            if self.api.since is not None and self.since is not None:
                query[self.api.since.param] = str(self.since)
        query.update(params)
        query.update(self.creds.params)
        headers = {"Accept": "application/json", **self.api.headers, **self.creds.headers}
        if etag:
            headers["If-None-Match"] = etag
        failures = throttles = 0
        while True:
            exit_ = await self._exit()
            client = self._client(exit_)
            pace = self.pacer.pace(exit_, self.host)
            sent = self.pacer.clock()
            self.stats.inc("scheduler/enqueued")
            self.stats.inc("downloader/request_count")
            self.in_flight[exit_] = self.in_flight.get(exit_, 0) + 1
            try:
                async with asyncio.timeout(self.timeout):
                    response = await client.get(with_query(url, query), headers=headers)
                    body = response.content
            except (httpx.TransportError, TimeoutError) as exc:
                name = "TimeoutError" if isinstance(exc, TimeoutError) else type(exc).__name__
                self.stats.inc(f"downloader/exception_type_count/{name}")
                self.stats.inc("downloader/exception_count")
                pace.failed(sent)
                proxy = self.pool.by_exit.get(exit_) if self.pool is not None else None
                if proxy is not None and self.pool is not None and self.pool.fail(proxy):
                    self.stats.set(f"harvest/proxy/dead/{exit_}", 1)
                failures += 1
                if failures > self.retries:
                    # the cause, such as a certificate that failed verification
                    detail = self.creds.redact(str(exc))[:300]
                    why = f"{name} ({detail})" if detail else name
                    raise PageGaveUpError(name, f"{why} after {failures} tries") from None
                self.stats.inc("retry/count")
                continue
            finally:
                self.in_flight[exit_] -= 1
            self.stats.inc("response_received_count")
            self.stats.inc(f"downloader/response_status_count/{response.status_code}")
            status = response.status_code
            if status in THROTTLED:
                throttles += 1
                pause = pace.throttled(sent, retry_after(response.headers.get("Retry-After")))
                self.stats.inc(f"harvest/pace/throttled/{exit_}")
                if throttles > self.max_throttles:
                    raise PageGaveUpError("throttled", f"still throttled after {throttles} tries")
                logger.debug("throttled (%d): pausing %.1fs", status, pause)
                continue
            if status in REFUSED:
                raise refused(self.recipe.name, status, self.creds, str(response.url))
            if status == 304:
                pace.ok(sent, response.elapsed.total_seconds())
                raise UnchangedError
            if status >= 500:
                failures += 1
                if failures > self.retries:
                    raise PageGaveUpError(
                        f"http_{status}", f"HTTP status {status} after {failures} tries"
                    )
                self.stats.inc("retry/count")
                # a server error is not a pace to learn: tried again at once, as Scrapy's
                # RetryMiddleware does, unless the API says when
                if wait := retry_after(response.headers.get("Retry-After")):
                    await asyncio.sleep(min(wait, self.pacer.settings.max_pause))
                continue
            if status >= 400:
                raise PageGaveUpError(f"http_{status}", f"HTTP status {status}")
            pace.ok(sent, response.elapsed.total_seconds())
            if self.pool is not None and exit_ in self.pool.by_exit:
                self.pool.succeed(self.pool.by_exit[exit_])
            try:
                doc = json.loads(body)
            except ValueError:
                raise PageGaveUpError("not_json", "the body is not JSON") from None
            records = apipath.records(doc, self.api.records)
            if not records and not apipath.find(doc, self.api.records):
                # a body without the path at all is likely not what the recipe expects
                self.stats.inc("harvest/api/no_records_path")
                logger.warning(
                    "%s: nothing at api.records %r in the body: no records taken",
                    self.creds.redact(str(response.url)),
                    self.api.records,
                )
            if first and position == self.paginator.first():
                self.etag = response.headers.get("ETag")
            links = {str(k): dict(v) for k, v in response.links.items()}
            after = self.paginator.after(position, doc, links, len(records))
            if isinstance(after, str) and self.paginator.style in ("next", "link"):
                after = strip_query(after, names)
            return Page(position, records, after, status)

    async def _exit(self) -> str:
        """The exit that may send soonest, waited for at its pace."""
        while True:
            found = await self.pacer.acquire(self.host, self._exits, self._full)
            if found is not None:
                return found
            assert self.pool is not None
            wait = self.pool.wait_time()
            if wait is None:
                raise NoExitError("every proxy is banned or dead")
            await asyncio.sleep(max(wait, 0.05))

    def _exits(self) -> list[str]:
        if self.pool is None:
            return [DIRECT]
        return [p.exit for p in self.pool.ready()]

    def _full(self, exit_: str) -> bool:
        return self.in_flight.get(exit_, 0) >= self.api.concurrency

    def _client(self, exit_: str) -> apinet.Clients:
        if exit_ not in self.clients:
            proxy = None
            if self.pool is not None and exit_ in self.pool.by_exit:
                p = self.pool.by_exit[exit_]
                proxy = httpx.Proxy(
                    p.server, auth=(p.username, p.password or "") if p.username else None
                )
            verify = _trusted()

            def make(connections: int) -> httpx.AsyncClient:
                return apinet.AsyncClient(
                    transport=apinet.transport(
                        http2=self.api.http2,
                        limits=httpx.Limits(
                            max_connections=connections,
                            max_keepalive_connections=connections,
                        ),
                        proxy=proxy,
                        verify=verify,
                        # the recipe's proxies, not HTTP(S)_PROXY, choose the way out
                        trust_env=False,
                    ),
                    timeout=httpx.Timeout(self.timeout),
                    follow_redirects=True,
                    trust_env=False,
                )

            self.clients[exit_] = apinet.Clients(make, self.api.concurrency)
        return self.clients[exit_]

    async def _close_clients(self) -> None:
        for client in self.clients.values():
            try:
                async with asyncio.timeout(5):
                    await client.aclose()
            except (TimeoutError, httpx.HTTPError):
                pass

    # -- the lake ------------------------------------------------------------------------

    async def _take(self, page: Page) -> bool:
        """The page's records to the lake, after the pages before it; whether the crawl
        goes on past it (a next page, and ``limits.pages`` not reached)."""
        rows = [row for record in page.records if (row := self._row(record, page))]
        self.stats.inc("item_scraped_count", len(rows))
        self.commits.add(rows, page.after)
        await self.commits.step()
        self.stats.set("harvest/rows_committed", self.commits.rows_committed)
        self.pages += 1
        if self.max_pages and self.pages >= self.max_pages and page.after is not None:
            self.reason = PAGE_LIMIT
            return False
        return page.after is not None

    def _row(self, record: Any, page: Page) -> dict[str, Any] | None:
        ident = apipath.first(record, self.api.id)
        if ident is None or ident == "":
            self.stats.inc("harvest/skipped/no_id")
            return None
        url = self._item_url(ident)
        if url in self.seen:
            self.stats.inc("harvest/resume/skipped")
            return None
        self.seen.add(url)
        if self.api.since is not None:
            mark = apipath.first(record, self.api.since.field)
            if mark is not None and (self.high_water is None or _later(mark, self.high_water)):
                self.high_water = mark
        content = {name: convert(f, apipath.strings(record, path)) for name, f, path in self.fields}
        return {
            **content,
            "source": self.recipe.name,
            "url": url,
            "crawl_id": self.crawl_id,
            "fetched_at": page.fetched_at,
            "http_status": page.status,
            "content_sha256": content_sha256(content),
        }

    def _item_url(self, ident: Any) -> str:
        return self.url_template.replace("{id}", quote(str(ident), safe=""))

    async def _finish(self, started: float) -> None:
        """Lands the complete pages held, then records the crawl's end."""
        try:
            await self.commits.close()
        finally:
            self.stats.set("finish_reason", self.reason)
            self.stats.set("elapsed_time_seconds", round(time.monotonic() - started, 3))
            self.stats.set("harvest/rows_committed", self.commits.rows_committed)
            self.stats.set("harvest/batches_committed", self.commits.batches_committed)
            for name, figures in self.pacer.figures().items():
                self.stats.set(f"harvest/pace/sent/{name}", figures["sent"])
                if rates := figures.get("rate_per_s"):
                    self.stats.set(f"harvest/pace/rate_per_s/{name}", round(sum(rates.values()), 2))
            state = FINISHED if self.reason in (FINISHED_REASON, PAGE_LIMIT) else INTERRUPTED
            details = {
                "crawl_id": self.crawl_id,
                "state": state,
                "reason": self.reason,
                "kind": "api",
                "rows": self.commits.rows_committed,
                "since": self.since,
                "high_water": self.high_water,
                "etag": self.etag,
                "account": account(self.stats.values).to_dict(),
            }
            record_run(self.lake, CRAWL_STAGE, self.recipe.name, details)
            if self.progress is not None:
                self.progress(self.counts())

    def counts(self) -> dict[str, int]:
        v = self.stats.values
        return {
            "pages": int(v.get("response_received_count", 0)),
            "items": int(v.get("item_scraped_count", 0)),
            "committed": int(v.get("harvest/rows_committed", 0)),
            "errors": 0,
        }

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.progress_every)
            assert self.progress is not None
            self.progress(self.counts())


def with_query(url: str, query: dict[str, Any]) -> str:
    """``url`` with ``query`` added to its own: httpx's ``params`` would replace it."""
    if not query:
        return url
    parts = urlsplit(url)
    pairs = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in query]
    return urlunsplit(parts._replace(query=urlencode([*pairs, *query.items()])))


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _later(a: Any, b: Any) -> bool:
    try:
        return bool(a > b)
    except TypeError:
        return str(a) > str(b)
