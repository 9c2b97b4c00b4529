"""Suspected blocks: 200 look-alike pages are told by what they lack, sent again, and
never end a crawl quietly; a page that is empty for real still reaches the gate."""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from scrapy import Request
from scrapy.exceptions import NotConfigured
from scrapy.http import HtmlResponse
from scrapy.utils.test import get_crawler

from harvest.demosite import DemoSite, Guard, generate
from ingestion.lake import Lake
from spiders import settings as defaults
from spiders.account import account, describe
from spiders.middlewares.bans import SUSPECT_FLAG, BanDetector
from spiders.middlewares.suspect import (
    FIRST_META,
    TRIES_META,
    Page,
    PageReader,
    PatternModel,
    SuspectMiddleware,
)
from spiders.pace import NOT_BEFORE_META
from spiders.recipe import BanPolicy, Field, Follow, Recipe, parse_recipe
from spiders.recipe_spider import RecipeSpider
from tests import proxies
from tests.helpers import last_json, run_harvest, section_recipe

LAYOUT = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title} - Loopback Ledger</title></head>
<body><header><a href="/page/1">Loopback Ledger</a></header>
<main>{main}</main><footer>All the news that fits.</footer></body></html>"""
PHRASES = (
    None,
    "Checking your browser before you reach the site.",
    "Please verify you are human to continue.",
    "Enable JavaScript and cookies to continue.",
)
# pages of each kind a new client gets whole: the crawl's learning, with room for answers
# that arrive out of order
WARM = defaults.HARVEST_SUSPECT_LEARN + 2
RETRIES = defaults.HARVEST_SUSPECT_RETRIES


def listing(page: int, pages: int, articles: list[str]) -> str:
    items = "".join(f'<li><a href="/article/{a}">Story {escape(a)}</a></li>' for a in articles)
    nav = f'<a class="next" href="/page/{page + 1}">Next</a>' if page < pages else ""
    main = (
        f'<h1>Page {page}</h1><ul class="articles">{items}</ul><nav class="pagination">{nav}</nav>'
    )
    return LAYOUT.format(title=f"Page {page}", main=main)


def article(slug: str, words: int) -> str:
    body = " ".join(f"word{n % 37}" for n in range(words))
    main = (
        f'<article><h1 class="title">Story {slug}</h1><p class="byline">By '
        f'<span class="author">Ada Lovelace</span></p><div class="body"><p>{body}</p></div>'
        "</article>"
    )
    return LAYOUT.format(title=f"Story {slug}", main=main)


def lookalike(phrase: str | None, filler: int) -> str:
    """The site's frame with a notice and none of the content: no links, no fields."""
    notice = f"<p>{phrase}</p>" if phrase else ""
    return LAYOUT.format(title="One moment", main=f"<h1>One moment</h1>{notice}" + " " * filler)


def empty_article() -> str:
    return LAYOUT.format(title="Story", main="<article></article>")


@dataclass
class Plan:
    """The site, drawn from a seed: its shape, its look-alike and which pages it doubts."""

    seed: int
    pages: int
    per_page: int
    rate: float
    phrase: str | None
    filler: int
    # path -> look-alikes it answers before the page itself (-1: for ever)
    blocks: dict[str, int] = field(default_factory=dict)
    empty: set[str] = field(default_factory=set)  # article pages empty for real

    @classmethod
    def draw(cls, seed: int) -> Plan:
        rng = random.Random(seed)
        plan = cls(
            seed,
            rng.randint(7, 8),
            rng.randint(3, 4),
            rng.uniform(0.15, 0.4),
            rng.choice(PHRASES),
            rng.randint(0, 600),
        )
        for path in plan.paths():
            plan.blocks[path] = rng.randint(1, RETRIES) if rng.random() < plan.rate else 0
        plan.blocks[f"/page/{plan.pages}"] = 1  # at least one, whatever the draw
        return plan

    def slugs(self, page: int) -> list[str]:
        return [f"p{page}-{n}" for n in range(self.per_page)]

    def paths(self) -> list[str]:
        out = []
        for page in range(1, self.pages + 1):
            out += [f"/page/{page}"] + [f"/article/{s}" for s in self.slugs(page)]
        return out

    def __str__(self) -> str:
        return (
            f"seed {self.seed}: {self.pages} pages of {self.per_page}, soft-block rate "
            f"{self.rate:.2f}, phrase {self.phrase!r}, filler {self.filler}"
        )


class DoubtingSite:
    """A small news site on loopback that answers some requests of a client it has seen for
    a while with a 200 look-alike page; what it answered is kept for the tests to check."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.lock = threading.Lock()
        # per (client address, kind), pages requested so far
        self.first_seen: Counter[tuple[str, str]] = Counter()
        self.left: dict[str, int] = {}  # path -> look-alikes still to answer
        self.lookalikes = 0
        self.hits: Counter[str] = Counter()
        handler = type("Handler", (_Handler,), {"site": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def answer(self, client: str, path: str) -> tuple[int, str]:
        plan = self.plan
        kind = client, "page" if path.startswith("/page/") else "article"
        with self.lock:
            self.hits[path] += 1
            if path not in self.left:
                # a new client is not doubted at once: its first pages of a kind come whole
                doubted = self.first_seen[kind] >= WARM or plan.blocks.get(path, 0) < 0
                self.first_seen[kind] += 1
                self.left[path] = plan.blocks.get(path, 0) if doubted else 0
            if self.left[path]:
                self.left[path] -= self.left[path] > 0
                self.lookalikes += 1
                return 200, lookalike(plan.phrase, plan.filler)
        if path.startswith("/page/"):
            page = int(path.rsplit("/", 1)[1])
            if 1 <= page <= plan.pages:
                return 200, listing(page, plan.pages, plan.slugs(page))
        slug = path.rsplit("/", 1)[1]
        if path.startswith("/article/") and slug in {
            s for p in range(plan.pages + 1) for s in plan.slugs(p)
        }:
            if path in plan.empty:
                return 200, empty_article()
            return 200, article(slug, 40 + sum(map(ord, slug)) % 120)
        return 404, LAYOUT.format(title="Not found", main="<h1>Not found</h1>")


class _Handler(BaseHTTPRequestHandler):
    site: DoubtingSite

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/robots.txt":
            status, body = 200, "User-agent: *\nAllow: /\n"
        else:
            status, body = self.site.answer(self.client_address[0], self.path)
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serving(plan: Plan) -> Iterator[DoubtingSite]:
    site = DoubtingSite(plan)
    site.thread.start()
    try:
        yield site
    finally:
        site.httpd.shutdown()
        site.httpd.server_close()


RECIPE: dict[str, Any] = {
    "allowed_domains": ["127.0.0.1"],
    "allow_private": True,
    "follow": [
        {"allow": r"/page/\d+$", "restrict_css": "nav.pagination"},
        {"allow": "/article/", "restrict_css": "ul.articles"},
    ],
    "item_urls": "/article/",
    "fields": {
        "title": {"css": "h1.title::text", "type": "str"},
        "body": {"css": "div.body p::text", "type": "text"},
        "author": {"css": "span.author::text", "type": "str"},
    },
    "text_field": "body",
    # short pauses keep the crawl small; how long they are does not change what is judged
    "settings": {
        "HARVEST_SUSPECT_PAUSE": 0.05,
        "HARVEST_SUSPECT_PATIENCE": 0.0,
        "HARVEST_PACING_PAUSE": 0.05,
        "CONCURRENT_REQUESTS": 4,
    },
}


def write_recipe(tmp_path: Path, name: str, site: DoubtingSite, **extra: Any) -> Path:
    data = {**RECIPE, "name": name, "start_urls": [f"{site.url}/page/1"], **extra}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def crawl(path: Path, env: dict[str, str], *extra: str) -> tuple[int, dict[str, Any], str]:
    proc = run_harvest(["crawl", str(path), *extra], env, check=False, timeout=240)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, last_json(proc.stdout), proc.stderr


def seed() -> int:
    return random.randrange(1_000_000)


# the pattern model, on pages built here


def reader() -> PageReader:
    recipe = Recipe(
        name="t",
        path="t.yaml",
        start_urls=["http://site.test/page/1"],
        allowed_domains=["site.test"],
        follow=[Follow(r"/page/\d+$", "nav.pagination"), Follow("/article/", "ul.articles")],
        item_urls="/article/",
        fields={
            "title": Field("title", "str", css="h1.title::text"),
            "author": Field("author", "str", css="span.author::text"),
            "tags": Field("tags", "list", css="li.tag::text", required=False),
        },
        text_field="title",
    )
    return PageReader(recipe, defaults.HARVEST_SUSPECT_MARKERS)


def page_of(url: str, html: str) -> tuple[str, Page]:
    r = reader()
    return r.pattern(url), r.read(HtmlResponse(url, body=html.encode(), encoding="utf-8"))


def taught(model: PatternModel, n: int, kind: str = "page") -> PatternModel:
    for i in range(1, n + 1):
        if kind == "page":
            model.good(*page_of(f"http://site.test/page/{i}", listing(i, 99, [f"a{i}", "b"])))
        else:
            model.good(*page_of(f"http://site.test/article/a{i}", article(f"a{i}", 60)))
    return model


def test_a_listing_page_without_the_links_its_siblings_had_is_suspected() -> None:
    model = taught(PatternModel(learn=3), 3)
    key, lookalike_page = page_of("http://site.test/page/9", lookalike(None, 0))
    assert key == "follow[0]"
    reason = model.judge(key, lookalike_page)
    assert reason is not None and "none of the links 3 of its 3 pages had" in reason
    assert model.judge(*page_of("http://site.test/page/9", listing(9, 99, ["z"]))) is None
    # the last page of a chain has article links, if no next link: not suspected
    assert model.judge(*page_of("http://site.test/page/99", listing(99, 99, ["z"]))) is None


def test_an_item_page_missing_every_required_field_is_suspected_and_one_missing_is_not() -> None:
    model = taught(PatternModel(learn=3), 4, kind="article")
    assert model.judge(*page_of("http://site.test/article/x", empty_article())) is not None
    no_author = article("x", 60).replace('<span class="author">Ada Lovelace</span>', "")
    assert model.judge(*page_of("http://site.test/article/x", no_author)) is None


def test_nothing_is_suspected_before_a_pattern_is_learned_but_a_challenge_phrase() -> None:
    model = taught(PatternModel(learn=3), 2)
    plain = page_of("http://site.test/page/9", lookalike(None, 0))
    assert model.judge(*plain) is None
    phrased = page_of("http://site.test/page/9", lookalike(PHRASES[1], 0))
    reason = model.judge(*phrased)
    assert reason is not None and "challenge phrase" in reason
    # a phrase on a page with everything its pattern has is no evidence at all
    full = listing(9, 99, ["z"]).replace("<footer>", f"<footer>{PHRASES[3]}")
    assert model.judge(*page_of("http://site.test/page/9", full)) is None


def test_a_body_far_smaller_than_its_patterns_usual_is_suspected() -> None:
    model = taught(PatternModel(learn=3, size_ratio=0.25), 3, kind="article")
    key, page = page_of("http://site.test/article/x", article("x", 60))
    small = Page(links=0, fields=2, size=page.size // 20)
    reason = model.judge(key, small)
    assert reason is not None and "bytes where its pattern's pages have about" in reason
    assert model.judge(key, Page(0, 2, page.size // 2)) is None


def test_a_few_large_pages_first_do_not_make_every_usual_one_a_suspect_for_good() -> None:
    model = PatternModel(learn=3, size_ratio=0.25)
    key, usual = page_of("http://site.test/article/x", article("x", 60))
    for size in (usual.size * 60, usual.size * 60, usual.size):  # two huge pages first
        model.good(key, Page(links=0, fields=2, size=size))
    kept = 0
    while model.judge(key, usual) is not None:
        model.kept(key, usual)  # sent again, came back the same: its size is the pattern's
        kept += 1
        assert kept < 10, "usual pages stay suspects"
    assert kept >= 1  # it was suspected at first


def test_a_pattern_whose_pages_are_often_empty_stops_expecting_what_they_lack() -> None:
    model = taught(PatternModel(learn=3, share=0.8), 4, kind="article")
    key, empty = page_of("http://site.test/article/x", empty_article())
    kept = 0
    while model.judge(key, empty) is not None:
        model.kept(key, empty)
        kept += 1
    # fields on 4 pages of 5 are still the rule (share 0.8), on 4 of 6 no longer
    assert kept == 2


def test_the_pool_takes_a_flagged_response_for_a_ban() -> None:
    response = HtmlResponse("http://site.test/page/2", body=b"<html></html>")
    assert BanDetector(BanPolicy()).check(response) is None
    flagged = response.replace(flags=[f"{SUSPECT_FLAG}: none of the links"])
    ban = BanDetector(BanPolicy()).check(flagged)
    assert ban is not None and ban.reason.startswith(SUSPECT_FLAG)


def test_the_account_counts_suspects_and_names_those_kept() -> None:
    url = "http://site.test/article/x"
    stats = {
        "harvest/suspect/blocks": 5,
        "harvest/suspect/retries": 4,
        "harvest/failed/suspected_block": 1,
        f"harvest/suspect/kept/{url}": 4,
    }
    acc = account(stats)
    assert acc.suspected_blocks == 5 and acc.suspects_kept == [url]
    assert acc.given_up == {"suspected_block": 1} and acc.retries == 4
    lines = describe(acc)
    assert "gave up on 1 pages: 1 suspected_block" in lines
    assert any(line.startswith("suspected blocks: 5 responses") and url in line for line in lines)
    assert "suspected blocks" not in " ".join(describe(account({})))


def middleware(**settings: Any) -> SuspectMiddleware:
    named = {k: getattr(defaults, k) for k in dir(defaults) if k.startswith("HARVEST_SUSPECT")}
    crawler = get_crawler(RecipeSpider, {**named, "HARVEST_PACING": True, **settings})
    data = {**RECIPE, "name": "t", "start_urls": ["http://site.test/page/1"]}
    crawler.spider = RecipeSpider(recipe=parse_recipe(data, "t.yaml"))
    return SuspectMiddleware.from_crawler(crawler)


def answer(url: str, html: str, **meta: Any) -> tuple[Request, HtmlResponse]:
    request = Request(url, meta=meta)
    return request, HtmlResponse(url, body=html.encode(), encoding="utf-8", request=request)


def test_the_middleware_sends_a_suspect_again_then_keeps_it_as_a_broken_chain() -> None:
    with pytest.raises(NotConfigured):
        middleware(HARVEST_SUSPECT=False)
    mw = middleware()
    for n in range(1, 4):
        request, response = answer(f"http://site.test/page/{n}", listing(n, 9, [f"a{n}"]))
        assert mw.process_response(request, response) is response
    request, response = answer("http://site.test/page/4", lookalike(PHRASES[0], 0))
    retry = mw.process_response(request, response)
    assert isinstance(retry, Request) and retry.dont_filter and retry.meta[TRIES_META] == 1
    assert retry.meta[NOT_BEFORE_META] > time.time()
    # through a proxy the pool sends it again: the response goes on to it, flagged
    request, response = answer("http://site.test/page/4", lookalike(None, 0), harvest_proxy=0)
    flagged = mw.process_response(request, response)
    assert isinstance(flagged, HtmlResponse) and flagged.flags[0].startswith(SUSPECT_FLAG)
    assert NOT_BEFORE_META not in request.meta  # at once, through another proxy
    # its quick tries spent but doubted only a moment: a block may outlast quick tries
    # through every proxy, so it waits a growing pause and goes again
    meta = {TRIES_META: RETRIES, FIRST_META: time.time(), "harvest_proxy": 0}
    request, response = answer("http://site.test/page/4", lookalike(None, 0), **meta)
    flagged = mw.process_response(request, response)
    assert flagged is not response and flagged.flags[0].startswith(SUSPECT_FLAG)
    assert request.meta[NOT_BEFORE_META] > time.time()
    # its retries spent and doubted for the patience's length, it goes on as it came,
    # counted and named
    meta = {TRIES_META: RETRIES, FIRST_META: time.time() - mw.patience}
    request, response = answer("http://site.test/page/4", lookalike(None, 0), **meta)
    assert mw.process_response(request, response) is response
    stats = mw.crawler.stats.get_stats()  # type: ignore[union-attr]
    assert stats["harvest/failed/suspected_block"] == 1 and stats["harvest/suspect/blocks"] == 4
    # what lies behind it: as many pages as its siblings linked to (an article, the next)
    assert stats["harvest/broken_chain/http://site.test/page/4"] == 2
    acc = account(stats)
    assert acc.suspects_kept == ["http://site.test/page/4"] and acc.retries == 1


# crawls of a real site on loopback


@pytest.mark.slow
def test_transient_soft_blocks_are_sent_again_and_every_item_lands(
    tmp_path: Path, lake_env: dict[str, str]
) -> None:
    plan = Plan.draw(seed())
    with serving(plan) as site:
        path = write_recipe(tmp_path, "doubted", site)
        code, summary, stderr = crawl(path, lake_env, "--no-curate")
        acc = summary["account"]
        assert code == 0, f"{plan}\n{stderr}"
        rows = Lake(lake_env["HARVEST_LAKE"]).read("raw/doubted").to_pylist()
        assert len(rows) == plan.pages * plan.per_page, f"{plan}\n{stderr}"
        assert all(r["title"] for r in rows), plan
        # every look-alike served was taken for one, and sent again
        assert acc["suspected_blocks"] == site.lookalikes >= 1, f"{plan}\n{stderr}"
        assert acc["given_up_total"] == 0 and not acc["broken_chains"], plan
        assert "account: gave up on no page" in stderr
        said = f"account: suspected blocks: {site.lookalikes} responses lacked what their "
        assert said + "pattern's pages had; each page came back whole when sent again" in stderr


@pytest.mark.slow
def test_soft_blocks_that_never_lift_fail_the_crawl_and_name_what_was_lost(
    tmp_path: Path, lake_env: dict[str, str]
) -> None:
    plan = Plan.draw(s := seed())
    rng = random.Random(s + 1)
    lost_page = rng.randint(WARM + 1, plan.pages)  # its articles and all behind it unseen
    plan.blocks[f"/page/{lost_page}"] = -1
    doomed = rng.sample([s for p in range(4, lost_page) for s in plan.slugs(p)], 2)
    for slug in doomed:
        plan.blocks[f"/article/{slug}"] = -1
    with serving(plan) as site:
        path = write_recipe(tmp_path, "doubted", site)
        code, summary, stderr = crawl(path, lake_env, "--no-curate")
        acc = summary["account"]
        why = f"{plan}, lost page {lost_page}, doomed {doomed}\n{stderr}"
        assert code == 3, why
        assert "gave up on no page" not in stderr, why
        assert acc["given_up"] == {"suspected_block": 3}, why
        lost_url = f"{site.url}/page/{lost_page}"
        assert list(acc["broken_chains"]) == [lost_url], why
        assert f"account: broken chain: listing page {lost_url} lost" in stderr, why
        kept = {f"{site.url}/article/{slug}" for slug in doomed}
        assert set(acc["suspects_kept"]) == kept | {lost_url}, why
        for url in kept:
            assert url in stderr, why
        # sent again until its retries ran out, then no more: no loop
        assert site.hits[f"/page/{lost_page}"] == RETRIES + 1, why
        rows = Lake(lake_env["HARVEST_LAKE"]).read("raw/doubted").to_pylist()
        assert len(rows) == (lost_page - 1) * plan.per_page, why
        assert {r["url"] for r in rows if r["title"] is None} == kept, why


@pytest.mark.slow
def test_a_page_empty_for_real_goes_to_the_gate_after_its_retries(
    tmp_path: Path, lake_env: dict[str, str]
) -> None:
    plan = Plan.draw(seed())
    plan.blocks.clear()  # a site that doubts no one
    empty = f"/article/{plan.slugs(plan.pages)[-1]}"
    plan.empty.add(empty)
    with serving(plan) as site:
        path = write_recipe(tmp_path, "empty", site, limits={"give_up": 1})
        code, summary, stderr = crawl(path, lake_env)
        acc = summary["account"]
        why = f"{plan}\n{stderr}"
        assert code == 0, why
        assert site.hits[empty] == RETRIES + 1, why
        assert acc["suspected_blocks"] == RETRIES + 1, why
        assert acc["suspects_kept"] == [site.url + empty], why
        assert acc["given_up"] == {"suspected_block": 1} and not acc["broken_chains"], why
        assert f"kept as they came (an item page goes to the gate): {site.url + empty}" in stderr
        lake = Lake(lake_env["HARVEST_LAKE"])
        assert lake.read("raw/empty").num_rows == plan.pages * plan.per_page, why
        assert site.url + empty in lake.read("quarantine/empty")["url"].to_pylist(), why
        assert summary["quarantined"] >= 1, why


@pytest.fixture(scope="module")
def tinyproxies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[proxies.TinyProxy]]:
    with proxies.running(3, tmp_path_factory.mktemp("tinyproxy")) as started:
        yield started


@pytest.mark.slow
def test_through_proxies_a_suspected_block_bans_its_proxy_and_every_item_lands(
    tmp_path: Path, lake_env: dict[str, str], tinyproxies: list[proxies.TinyProxy]
) -> None:
    plan = Plan.draw(seed())
    with serving(plan) as site:
        urls = [p.url for p in tinyproxies]
        path = write_recipe(tmp_path, "proxied", site, proxies=urls, ban={"backoff_base": 0.1})
        code, summary, stderr = crawl(path, lake_env, "--no-curate")
        acc = summary["account"]
        why = f"{plan}\n{stderr}"
        assert code == 0 and acc["given_up_total"] == 0, why
        rows = Lake(lake_env["HARVEST_LAKE"]).read("raw/proxied").to_pylist()
        assert sorted(r["url"] for r in rows if r["title"]) == sorted(
            f"{site.url}/article/{s}" for p in range(1, plan.pages + 1) for s in plan.slugs(p)
        ), why
        assert acc["suspected_blocks"] == site.lookalikes >= 1, why
        # each one taken for a ban of the proxy it came through, and sent through another
        assert acc["banned_responses"] == site.lookalikes, why


@pytest.mark.slow
def test_a_site_that_soft_blocks_a_client_past_its_rate_gives_every_item(
    tmp_path: Path, lake_env: dict[str, str]
) -> None:
    """The demo site's guarded section, answering a client past its limit with its own
    frame and a notice for a while: the crawl slows to the site's pace and gets it all."""
    limit = random.randint(6, 12)
    guard = Guard(limit, 1.0, ban_seconds=2.0, ban_status=200)
    with DemoSite(generate(60, seed=limit), guard=guard) as server:
        path = section_recipe(tmp_path, "guarded")
        start = f"{server.url}/guarded/"
        code, summary, stderr = crawl(path, lake_env, "--start-url", start, "--no-curate")
        acc = summary["account"]
        why = f"limit {limit}/s\n{stderr}"
        # answers of the guarded section that never reached the spider: the look-alikes
        whole = acc["fetched"] - server.hits.count("/robots.txt")
        soft = sum(1 for _, _, status in guard.answers if status == 200) - whole
        assert code == 0 and acc["given_up_total"] == 0, why
        assert Lake(lake_env["HARVEST_LAKE"]).read("raw/guarded").num_rows == 60, why
        assert acc["suspected_blocks"] == soft >= 1, why


@pytest.mark.slow
def test_through_proxies_a_soft_block_that_outlasts_quick_tries_gives_every_item(
    tmp_path: Path, lake_env: dict[str, str], tinyproxies: list[proxies.TinyProxy]
) -> None:
    """Every proxy soft-blocked at once, for longer than a few quick tries take: the pages
    wait for the block to lift rather than being kept as look-alikes."""
    seed = int(os.environ.get("HARVEST_TEST_SEED") or random.randrange(2**32))
    rng = random.Random(seed)
    limit, block = rng.randint(6, 12), round(rng.uniform(8.0, 12.0), 1)
    guard = Guard(limit, 1.0, ban_seconds=block, ban_status=200)
    with DemoSite(generate(40, seed=seed % 1000), guard=guard) as server:
        urls = [p.url for p in tinyproxies]
        path = section_recipe(tmp_path, "softproxied", proxies={"urls": urls})
        start = f"{server.url}/guarded/"
        code, summary, stderr = crawl(path, lake_env, "--start-url", start, "--no-curate")
    acc = summary["account"]
    why = f"seed {seed}: {limit}/s, soft-blocked {block:g}s\n{stderr[-3000:]}"
    assert code == 0 and acc["given_up_total"] == 0, why
    rows = Lake(lake_env["HARVEST_LAKE"]).read("raw/softproxied").to_pylist()
    assert len(rows) == 40 and all(r["title"] for r in rows), why
    assert acc["suspected_blocks"] >= 1, why
