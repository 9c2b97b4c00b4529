"""Suspected blocks: a 200 page that lacks what the pages of its pattern have had.

Some sites answer a client they doubt with status 200 and a look-alike page: the site's
own layout, a "checking your browser" notice, none of the content. No status or marker
list can tell it apart for every site, so each crawl learns its own: a page's pattern is
the recipe's item pattern or the first ``follow`` rule its URL matches, and for each
pattern the crawl counts what its pages yield (links found by the follow rules, required
fields present) and how large they are. Once ``HARVEST_SUSPECT_LEARN`` pages of a pattern
came back and most of them (``HARVEST_SUSPECT_SHARE``) had links, or required fields, a
page of that pattern with none of them is a suspected block; so is one far smaller than
its pattern's median (``HARVEST_SUSPECT_SIZE_RATIO``). A challenge phrase
(``HARVEST_SUSPECT_MARKERS``) adds to this: on a page that yields nothing it is enough,
even before the pattern is learned, but on its own it proves nothing (a site may print
"enable JavaScript" on every page).

A suspected block is taken as a 429 and a ban at once: its exit's pace pauses and slows
(spiders/pace.py), since such sites mostly doubt a client that goes too fast; through a
proxy the pool also backs that proxy off and retries elsewhere (it sees the response
flagged, see ``bans.SUSPECT_FLAG``); on the direct connection the page waits a pause of
its own that doubles with each try (``HARVEST_SUSPECT_PAUSE``). After
``HARVEST_SUSPECT_RETRIES`` tries, and once it has been doubted for
``HARVEST_SUSPECT_PATIENCE`` seconds (a block outlasts quick tries through every proxy at
once; past the tries, a proxied page waits the same growing pauses), the page is kept as
it came, since a page may be empty for real: an item page goes on to the gate, a listing
page to the spider. Either way it
is counted as given up (``harvest/failed/suspected_block``) and named in the account,
a listing page as a broken chain, so a block that never lifts never ends a crawl quietly.
"""

from __future__ import annotations

import logging
import re
import statistics
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured
from scrapy.http import Response, TextResponse
from scrapy.utils.httpobj import urlparse_cached

from spiders import readonce
from spiders.account import BROKEN_CHAIN, SUSPECT_KEPT
from spiders.middlewares.bans import SUSPECT_FLAG
from spiders.middlewares.pacing import SENT_META
from spiders.middlewares.proxypool import PROXY_META
from spiders.pace import EXIT_META, NOT_BEFORE_META, pacer_for
from spiders.recipe import Recipe

logger = logging.getLogger(__name__)

TRIES_META = "harvest_suspect_tries"
FIRST_META = "harvest_suspect_first"  # time.time() the page was first suspected
SIZES_KEPT = 200  # sizes a pattern remembers for its median: the latest ones


@dataclass(frozen=True)
class Page:
    """What one page yields, as far as telling a look-alike goes."""

    links: int  # links the recipe's follow rules find on it
    fields: int  # required fields with a value
    size: int  # body bytes
    marker: str | None = None  # the first challenge phrase found, if any


@dataclass
class Pattern:
    """What the pages of one pattern have yielded so far in the crawl."""

    pages: int = 0
    with_links: int = 0
    with_fields: int = 0
    links: int = 0
    sizes: deque[int] = field(default_factory=lambda: deque(maxlen=SIZES_KEPT))


class PatternModel:
    """Learns each pattern from its pages and judges a new page against it."""

    def __init__(self, learn: int = 3, share: float = 0.8, size_ratio: float = 0.25):
        self.learn, self.share, self.size_ratio = learn, share, size_ratio
        self.patterns: dict[str, Pattern] = {}

    def judge(self, key: str, page: Page) -> str | None:
        """Why ``page`` looks like a block of pattern ``key``; None when it does not."""
        p = self.patterns.get(key) or Pattern()
        # what: (pages of the pattern that had it, what this page has)
        traits = {
            "links": (p.with_links, page.links),
            "required fields": (p.with_fields, page.fields),
        }
        expected = [what for what, (had, _) in traits.items() if self._expected(p, had)]
        lacking = [
            f"none of the {what} {traits[what][0]} of its {p.pages} pages had"
            for what in expected
            if not traits[what][1]
        ]
        if expected and len(lacking) == len(expected):
            return "; ".join(lacking)
        if len(p.sizes) >= self.learn:
            median = statistics.median(p.sizes)
            if page.size < self.size_ratio * median:
                return f"{page.size} bytes where its pattern's pages have about {median:.0f}"
        if page.marker is not None and (lacking or page.links == page.fields == 0):
            on = "; ".join(lacking) if lacking else "no link and no required field"
            return f"challenge phrase {page.marker!r}, {on}"
        return None

    def good(self, key: str, page: Page) -> None:
        """A page taken as it is: it teaches its pattern."""
        p = self._count(key, page)
        p.links += page.links
        p.sizes.append(page.size)

    def kept(self, key: str, page: Page) -> None:
        """A suspect kept after its retries: if its pattern's pages are often like it, the
        pattern stops expecting what they lack, and its size joins theirs: a few large
        pages first must not make every usual one look like a block for good."""
        self._count(key, page).sizes.append(page.size)

    def links_per_page(self, key: str) -> int:
        p = self.patterns.get(key)
        return max(1, round(p.links / p.with_links)) if p and p.with_links else 1

    def _count(self, key: str, page: Page) -> Pattern:
        p = self.patterns.setdefault(key, Pattern())
        p.pages += 1
        p.with_links += page.links > 0
        p.with_fields += page.fields > 0
        return p

    def _expected(self, p: Pattern, having: int) -> bool:
        return having >= self.learn and having >= self.share * p.pages


class PageReader:
    """Reads a response the way the recipe's spider will: its pattern, links and fields."""

    def __init__(self, recipe: Recipe, markers: Iterable[str]):
        self.item_re = re.compile(recipe.item_urls)
        self.follow = [re.compile(f.allow) for f in recipe.follow]
        self.rules = [(f.allow, f.restrict_css) for f in recipe.follow]
        # a field a parse: hook fills has no selector to look for here
        self.required = [f for f in recipe.fields.values() if f.required and (f.css or f.xpath)]
        self.markers = [re.compile(m) for m in markers]

    def pattern(self, url: str) -> str:
        if self.item_re.search(url):
            return "item"
        rule = next((n for n, r in enumerate(self.follow) if r.search(url)), None)
        return "other" if rule is None else f"follow[{rule}]"

    def read(self, response: TextResponse) -> Page:
        links = {link.url for rule in self.rules for link in readonce.links(response, *rule)}
        fields = sum(1 for f in self.required if readonce.values(response, f.css, f.xpath))
        text = response.text
        marker = next((m.pattern for m in self.markers if m.search(text)), None)
        return Page(len(links), fields, len(response.body), marker)


class SuspectMiddleware:
    """Sends suspected blocks again, and keeps and counts those that never come back whole."""

    def __init__(
        self,
        crawler: Crawler,
        reader: PageReader,
        model: PatternModel,
        retries: int = 3,
        pause: float = 1.0,
        patience: float = 30.0,
    ):
        self.crawler = crawler
        self.reader, self.model = reader, model
        self.retries, self.pause, self.patience = retries, pause, patience
        self.pacer = pacer_for(crawler)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> SuspectMiddleware:
        s = crawler.settings
        recipe: Recipe | None = getattr(crawler.spider, "recipe", None)
        if not s.getbool("HARVEST_SUSPECT") or recipe is None:
            raise NotConfigured  # a spider without a recipe has no patterns to learn
        model = PatternModel(
            learn=s.getint("HARVEST_SUSPECT_LEARN"),
            share=s.getfloat("HARVEST_SUSPECT_SHARE"),
            size_ratio=s.getfloat("HARVEST_SUSPECT_SIZE_RATIO"),
        )
        reader = PageReader(recipe, s.getlist("HARVEST_SUSPECT_MARKERS"))
        retries, pause = s.getint("HARVEST_SUSPECT_RETRIES"), s.getfloat("HARVEST_SUSPECT_PAUSE")
        patience = s.getfloat("HARVEST_SUSPECT_PATIENCE")
        return cls(crawler, reader, model, retries, pause, patience)

    def process_response(self, request: Request, response: Response) -> Request | Response:
        if (
            not isinstance(response, TextResponse)
            or not 200 <= response.status < 300
            or request.url.endswith("/robots.txt")
        ):
            return response
        key = self.reader.pattern(request.url)
        page = self.reader.read(response)
        reason = self.model.judge(key, page)
        if reason is None:
            self.model.good(key, page)
            return response
        tries = request.meta.get(TRIES_META, 0) + 1
        first = request.meta.setdefault(FIRST_META, time.time())
        self._inc("blocks")
        # a block outlasts a few quick tries through every exit at once: the page is kept
        # only once it has also been doubted for the patience's length
        if tries > self.retries and time.time() - first >= self.patience:
            return self._keep(request, response, key, page, reason)
        logger.info("suspected block of %s (%s): try %d", request.url, reason, tries + 1)
        request.meta[TRIES_META] = tries
        if (exit_ := request.meta.get(EXIT_META)) is not None:
            # a look-alike is how such a site says "slow down": like a 429, the exit pauses
            # and its pace learns (spiders/pace.py)
            pace = self.pacer.pace(exit_, urlparse_cached(request).hostname or "")
            pace.throttled(request.meta.get(SENT_META, 0.0))
        if PROXY_META in request.meta:
            # the pool, next, takes it for a ban: backs that proxy off, retries (and counts
            # the retry) through another, at once while the quick tries last, then after
            # pauses that grow, as on the direct connection
            past = tries - self.retries
            if past > 0:
                request.meta[NOT_BEFORE_META] = time.time() + self.pause * 2 ** (past - 1)
            return response.replace(flags=[*response.flags, f"{SUSPECT_FLAG}: {reason}"])
        self._inc("retries")
        retry = request.copy()
        for key_ in (EXIT_META, "download_slot", "download_latency"):
            retry.meta.pop(key_, None)
        # the pacing middleware holds it back; with pacing off it goes at once
        retry.meta[NOT_BEFORE_META] = time.time() + self.pause * 2 ** (tries - 1)
        retry.dont_filter = True
        return retry

    def _keep(
        self, request: Request, response: Response, key: str, page: Page, reason: str
    ) -> Response:
        stats = self.crawler.stats
        assert stats is not None
        self.model.kept(key, page)
        stats.inc_value("harvest/failed/suspected_block")
        stats.set_value(f"{SUSPECT_KEPT}{request.url}", self.retries + 1)
        if key != "item" and page.links == 0:
            # a listing page with no links: whatever lies behind it is never seen
            behind = self.model.links_per_page(key)
            stats.set_value(f"{BROKEN_CHAIN}{request.url}", behind)
        logger.warning(
            "suspected block of %s never lifted after %d tries (%s): kept as it came",
            request.url,
            self.retries + 1,
            reason,
        )
        return response

    def _inc(self, key: str) -> None:
        assert self.crawler.stats is not None
        self.crawler.stats.inc_value(f"harvest/suspect/{key}")
