"""Proxy pool: rotates requests over proxies, backs banned ones off, drops dead ones.

Proxies come from the recipe (``proxies: {urls, file}``) or from the settings
``HARVEST_PROXIES`` and ``HARVEST_PROXY_FILE``; with none the middleware is off. A proxy
is shown only as ``host:port`` (see ``redact``): its credentials travel in a
``Proxy-Authorization`` header or in a browser context's proxy settings, never in a URL
that Scrapy logs.
"""

from __future__ import annotations

import base64
import enum
import logging
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.exceptions import IgnoreRequest, NotConfigured
from scrapy.http import Response
from scrapy.settings import BaseSettings
from scrapy.utils.asyncio import sleep
from scrapy.utils.defer import deferred_from_coro
from scrapy.utils.httpobj import urlparse_cached

from ingestion.errors import ConfigurationError
from spiders.account import GaveUp
from spiders.middlewares.bans import PROXY_AUTH_REQUIRED, BanDetector
from spiders.pace import EXIT_META, exit_slot, not_before, pacer_for, slot_full
from spiders.recipe import BanPolicy, Recipe, proxy_url_problem

logger = logging.getLogger(__name__)

PROXY_META = "harvest_proxy"  # index of the proxy a request went through
RETRIES_META = "harvest_ban_retries"
STOP_REASON = "no_usable_proxy"


class ProxyListError(ConfigurationError):
    """A proxy list that cannot be used: names where it came from, never a password."""


def shown(url: str) -> str:
    """As much of a proxy URL, well-formed or not, as may be shown: no user name or password.

    Without an ``@`` a password may still sit where the port belongs (``http://user:pass``):
    then only the scheme is shown.
    """
    scheme, sep, rest = url.strip().partition("://")
    if not sep:
        scheme, rest = "", url.strip()
    credentials, at, host_port = rest.split("/", 1)[0].rpartition("@")
    port = host_port.rpartition("]")[2].rpartition(":")[2] if ":" in host_port else ""
    prefix = f"{scheme}://" if scheme else ""
    if port and not port.isdigit():
        return f"{prefix}***"
    return f"{prefix}{'***@' if at else ''}{host_port}"


def redact(url: str) -> str:
    """``host:port`` of a proxy URL: all of it that may be shown in logs, stats or errors."""
    parts = urlsplit(url if "://" in url else f"//{url}")
    host = parts.hostname or "?"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{host}:{port}" if port else host


class Health(enum.Enum):
    GOOD = "good"
    BANNED = "banned"  # backing off, tried again once ``ready_at`` has passed
    DEAD = "dead"  # never tried again in this crawl


@dataclass(eq=False)  # one object per proxy: identity is equality
class Proxy:
    index: int
    server: str  # scheme://host:port, no credentials
    username: str | None = None
    password: str | None = None
    health: Health = Health.GOOD
    bans: int = 0  # in a row, sets the next backoff
    failures: int = 0  # connection failures in a row
    ready_at: float = 0.0
    exit: str = ""  # its name for pacing and the account

    @classmethod
    def parse(cls, index: int, url: str) -> Proxy:
        if proxy_url_problem(url) is not None:
            # never echo the value: it may carry a password
            raise ValueError(f"proxy {index}: not a proxy URL like http://user:pass@host:port")
        parts = urlsplit(url)
        user = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        return cls(index, f"{parts.scheme}://{parts.hostname}:{parts.port}", user, password)

    @property
    def name(self) -> str:
        return redact(self.server)

    @property
    def auth_header(self) -> bytes | None:
        if self.username is None:
            return None
        creds = f"{self.username}:{self.password or ''}".encode("latin-1")
        return b"Basic " + base64.b64encode(creds)

    def __repr__(self) -> str:  # keeps credentials out of tracebacks and debug output
        return f"Proxy({self.index}, {self.name}, {self.health.value})"


class ProxyPool:
    """Which proxies may be used, and what a ban or a failed connection does to a proxy.

    Proxies backing off are skipped; which of the ready ones a request takes is the
    pacer's choice (spiders/pace.py): the one that can send soonest. A ban backs a proxy off for
    its pace's pause, which looks at a block's end where the site's blocks have ended
    before; with pacing off, for ``base * 2**n`` seconds (n: bans in a row), jittered down
    to half of that. Either is capped at ``backoff_max``. ``max_failures`` connection
    failures in a row make a proxy dead.
    """

    def __init__(
        self,
        urls: Iterable[str],
        backoff_base: float = 1.0,
        backoff_max: float = 300.0,
        max_failures: int = 3,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ):
        self.proxies = [Proxy.parse(i, url) for i, url in enumerate(urls)]
        # one exit a proxy; the same host:port twice (a provider that picks the address by
        # user name, say) is told apart by its place in the list
        names = [p.name for p in self.proxies]
        for p in self.proxies:
            p.exit = p.name if names.count(p.name) == 1 else f"{p.name}#{p.index}"
        self.by_exit = {p.exit: p for p in self.proxies}
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.max_failures = max_failures
        self.clock = clock
        self.rng = rng or random.Random()

    def __len__(self) -> int:
        return len(self.proxies)

    @property
    def usable(self) -> list[Proxy]:
        return [p for p in self.proxies if p.health is not Health.DEAD]

    def ready(self) -> list[Proxy]:
        """The proxies a request may go through now: neither dead nor backing off."""
        now = self.clock()
        return [p for p in self.proxies if p.health is not Health.DEAD and p.ready_at <= now]

    def wait_time(self) -> float | None:
        """Seconds until a proxy is ready again; None when every proxy is dead."""
        usable = self.usable
        if not usable:
            return None
        return max(0.0, min(p.ready_at for p in usable) - self.clock())

    def backoff(self, n: int) -> float:
        delay = min(self.backoff_max, self.backoff_base * 2**n)
        # jitter, so that proxies banned together do not all come back together
        return float(delay / 2 + self.rng.uniform(0, delay / 2))

    def ban(
        self, proxy: Proxy, retry_after: float = 0.0, paced: float | None = None
    ) -> float | None:
        """Backs ``proxy`` off; returns the delay, or None if it was backing off already.
        ``paced``: the pause its pace chose (spiders/pace.py), which knows when a block
        ends better than doubling does; capped at ``backoff_max`` all the same."""
        if proxy.health is Health.DEAD or self._backing_off(proxy):
            return None  # answers to requests sent before the ban: one ban, one backoff
        backoff = self.backoff(proxy.bans) if paced is None else min(self.backoff_max, paced)
        delay = max(backoff, retry_after)
        proxy.bans += 1
        proxy.health, proxy.ready_at = Health.BANNED, self.clock() + delay
        return delay

    def fail(self, proxy: Proxy) -> bool:
        """Counts a failed connection through ``proxy``; True if that made it dead."""
        if proxy.health is Health.DEAD or self._backing_off(proxy):
            return False
        proxy.failures += 1
        if proxy.failures >= self.max_failures:
            proxy.health = Health.DEAD
            return True
        proxy.health = Health.BANNED
        proxy.ready_at = self.clock() + self.backoff(proxy.failures - 1)
        return False

    def succeed(self, proxy: Proxy) -> None:
        if proxy.health is not Health.DEAD:
            proxy.health, proxy.bans, proxy.failures = Health.GOOD, 0, 0

    def _backing_off(self, proxy: Proxy) -> bool:
        return proxy.health is Health.BANNED and proxy.ready_at > self.clock()


def checked(urls: Iterable[str], origin: str) -> list[str]:
    """``urls`` without blanks, each a proxy URL, or a ProxyListError naming ``origin``."""
    urls = [u.strip() for u in urls if u.strip()]
    return [_check(url, f"{origin}: proxy {n}") for n, url in enumerate(urls, 1)]


def _check(url: str, where: str) -> str:
    if (problem := proxy_url_problem(url)) is not None:
        raise ProxyListError(
            f"{where} ({shown(url)}) is not a proxy URL like http://user:pass@host:port: {problem}"
        )
    return url


def read_proxy_file(path: str | Path, origin: str = "") -> list[str]:
    """One proxy URL a line; blank lines and ``#`` comments are skipped. ``origin`` says
    where the file was named, for the ProxyListError a missing or bad file raises."""
    file = Path(path)
    named = f"proxy file {file}" + (f" ({origin})" if origin else "")
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProxyListError(f"{named} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ProxyListError(f"{named} cannot be read: {reason}") from None
    lines = (re.sub(r"(^|\s)#.*$", "", line).strip() for line in text.splitlines())
    return [_check(url, f"{named}, line {n}") for n, url in enumerate(lines, 1) if url]


def proxy_urls(
    recipe: Recipe | None, settings: BaseSettings, origins: Mapping[str, str] | None = None
) -> list[str]:
    """The recipe's proxies; the settings' when the spider has no recipe or it lists none.

    A missing file or a malformed URL raises a ProxyListError naming where it came from:
    ``origins`` names the settings HARVEST_PROXIES and HARVEST_PROXY_FILE in the user's
    terms (by default, by the settings' own names).
    """
    names = {"HARVEST_PROXIES": "HARVEST_PROXIES", "HARVEST_PROXY_FILE": "HARVEST_PROXY_FILE"}
    names.update(origins or {})
    if recipe is not None:
        urls = list(recipe.proxies.urls)
        if recipe.proxies.file:
            urls += read_proxy_file(recipe.proxies.file, f"{recipe.path}: proxies.file")
        if urls:
            return urls
    urls = checked(settings.getlist("HARVEST_PROXIES"), names["HARVEST_PROXIES"])
    if file := settings.get("HARVEST_PROXY_FILE"):
        urls += read_proxy_file(file, names["HARVEST_PROXY_FILE"])
    return urls


class ProxyPoolMiddleware:
    """Sends each request through a proxy of the pool and retries banned ones elsewhere."""

    def __init__(self, crawler: Crawler, pool: ProxyPool, detector: BanDetector, max_retries: int):
        self.crawler = crawler
        self.pacer = pacer_for(crawler)
        self.pool = pool
        self.detector = detector
        self.max_retries = max_retries
        self.pacing = crawler.settings.getbool("HARVEST_PACING")
        self.stopping = False

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ProxyPoolMiddleware:
        settings = crawler.settings
        recipe: Recipe | None = getattr(crawler.spider, "recipe", None)
        urls = proxy_urls(recipe, settings)
        if not urls:
            raise NotConfigured  # a direct crawl, the usual one: nothing to warn about
        policy = recipe.ban if recipe is not None else BanPolicy()
        pool = ProxyPool(
            urls,
            backoff_base=policy.backoff_base,
            backoff_max=policy.backoff_max,
            max_failures=settings.getint("HARVEST_PROXY_MAX_FAILURES", 3),
        )
        max_retries = settings.getint("HARVEST_BAN_MAX_RETRIES", 10)
        logger.info("proxy pool of %d: %s", len(pool), ", ".join(p.name for p in pool.proxies))
        return cls(crawler, pool, BanDetector(policy), max_retries)

    async def process_request(self, request: Request) -> None:
        # a request held back waits before it takes an exit, not in the exit's turn
        await not_before(request)
        host = urlparse_cached(request).hostname or ""
        proxy = await self._choose(host)
        if proxy is None:
            raise IgnoreRequest(f"{STOP_REASON}: all {len(self.pool)} proxies are dead")
        request.meta[PROXY_META] = proxy.index
        request.meta[EXIT_META] = proxy.exit
        # a download slot per exit: each proxy gets its own concurrency to the site
        request.meta["download_slot"] = exit_slot(host, proxy.exit)
        self._inc(f"requests/{proxy.exit}")
        if request.meta.get("playwright"):
            # one browser context per proxy: the browser takes the credentials itself
            browser_proxy = {"server": proxy.server}
            if proxy.username is not None:
                browser_proxy |= {"username": proxy.username, "password": proxy.password or ""}
            request.meta["playwright_context"] = f"proxy-{proxy.index}"
            request.meta["playwright_context_kwargs"] = {"proxy": browser_proxy}
            return
        request.meta["proxy"] = proxy.server
        # HttpProxyMiddleware drops a header it thinks belongs to the previous proxy
        request.meta.pop("_auth_proxy", None)
        if (auth := proxy.auth_header) is not None:
            request.headers[b"Proxy-Authorization"] = auth
        else:
            request.headers.pop(b"Proxy-Authorization", None)

    def process_response(self, request: Request, response: Response) -> Request | Response:
        proxy = self._proxy_of(request)
        if proxy is None:
            return response
        if response.status == PROXY_AUTH_REQUIRED:
            return self._failed(request, proxy, "proxy refused the credentials (407)") or response
        ban = self.detector.check(response)
        if ban is None:
            self.pool.succeed(proxy)
            return response
        self._inc(f"bans/{proxy.exit}")
        delay = self.pool.ban(proxy, ban.retry_after, self._paced(request, proxy))
        if delay is not None:
            logger.info("proxy %s banned (%s): backing off %.1fs", proxy.name, ban.reason, delay)
        retry = self._retry(request, f"banned through {proxy.name} ({ban.reason})")
        if retry is None:  # a ban page must never reach the spider
            raise GaveUp("banned", f"gave up on a banned page: {request.url}")
        return retry

    def _paced(self, request: Request, proxy: Proxy) -> float | None:
        """The pause the exit's pace set on this ban (the pacing and suspect middlewares
        see the answer first), or None with pacing off."""
        if not self.pacing:
            return None
        return self.pacer.pace(proxy.exit, urlparse_cached(request).hostname or "").paused_for()

    def process_exception(self, request: Request, exception: Exception) -> Request | None:
        proxy = self._proxy_of(request)
        if proxy is None or not self.detector.is_connection_failure(exception):
            return None
        return self._failed(request, proxy, type(exception).__name__)

    async def _choose(self, host: str) -> Proxy | None:
        while not self.stopping:
            ready = await self.pacer.acquire(
                host, lambda: [p.exit for p in self.pool.ready()], slot_full(self.crawler, host)
            )
            if ready is not None:
                return self.pool.by_exit[ready]
            wait = self.pool.wait_time()
            if wait is None:
                self._stop()
                break
            self._inc("waits")
            await sleep(wait)
        return None

    def _failed(self, request: Request, proxy: Proxy, reason: str) -> Request | None:
        self._inc(f"failures/{proxy.exit}")
        if self.pool.fail(proxy):
            self.crawler.stats.set_value(f"harvest/proxy/dead/{proxy.exit}", 1)
            logger.warning(
                "proxy %s is dead after %d failures in a row (last: %s)",
                proxy.name,
                proxy.failures,
                reason,
            )
            if not self.pool.usable:
                self._stop()
                return None
        return self._retry(request, f"failed through {proxy.name} ({reason})")

    def _retry(self, request: Request, reason: str) -> Request | None:
        if self.stopping:  # the crawl is closing: nothing to retry through
            return None
        retries = request.meta.get(RETRIES_META, 0) + 1
        if retries > self.max_retries:
            self._inc("gave_up")
            logger.warning("gave up on %s after %d tries: %s", request.url, retries, reason)
            return None
        self._inc("retries")
        logger.debug("retrying %s: %s", request.url, reason)
        retry = request.copy()
        retry.meta[RETRIES_META] = retries
        retry.meta.pop(PROXY_META, None)
        retry.meta.pop(EXIT_META, None)
        retry.meta.pop("download_slot", None)
        retry.dont_filter = True
        return retry

    def _stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        dead = sum(p.health is Health.DEAD for p in self.pool.proxies)
        logger.error(
            "all %d proxies are banned or dead (%d dead): stopping the crawl (%s)",
            len(self.pool),
            dead,
            STOP_REASON,
        )
        if self.crawler.crawling:
            deferred_from_coro(self.crawler.engine.close_spider_async(reason=STOP_REASON))

    def _proxy_of(self, request: Request) -> Proxy | None:
        index = request.meta.get(PROXY_META)
        return None if index is None else self.pool.proxies[index]

    def _inc(self, key: str) -> None:
        self.crawler.stats.inc_value(f"harvest/proxy/{key}")
