"""The proxy pool and ban detection: its health logic alone, then crawls of the demo site's
guarded section through real tinyproxy processes into a real lake."""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from scrapy import Request
from scrapy.exceptions import DownloadConnectionRefusedError, IgnoreRequest, NotConfigured
from scrapy.http import HtmlResponse
from scrapy.utils.test import get_crawler

from harvest.demosite import DemoSite, Guard, Site, generate
from ingestion.lake import Lake
from spiders.middlewares.bans import BanDetector, parse_retry_after
from spiders.middlewares.proxypool import (
    Health,
    ProxyPool,
    ProxyPoolMiddleware,
    proxy_urls,
    redact,
)
from spiders.pace import NOT_BEFORE_META
from spiders.recipe import BanPolicy, parse_recipe
from spiders.recipe_spider import RecipeSpider
from tests import proxies
from tests.helpers import free_port, last_json, run_harvest, run_scrapy

# the BasicAuth user and password of the first tinyproxy
USER, SECRET = "pooluser", "s3cret-pw-7f2a"
# one client address gets this many guarded pages in the test; the site has more
GUARD_LIMIT = 70


class Clock:
    """A clock the test moves by hand, so backoffs can be checked without waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pool(n: int = 3, **kwargs: Any) -> tuple[ProxyPool, Clock]:
    clock = Clock()
    urls = [f"http://u{i}:p{i}@10.0.0.{i}:3128" for i in range(n)]
    return ProxyPool(urls, clock=clock, rng=random.Random(7), **kwargs), clock


def html(status: int = 200, body: str = "<p>ok</p>", **headers: str) -> HtmlResponse:
    return HtmlResponse("http://site/", status=status, body=body.encode(), headers=headers)


# --- the pool's health logic, without a crawl ------------------------------------------


def test_redact_keeps_only_host_and_port() -> None:
    assert redact("http://user:pa55@proxy.example:3128") == "proxy.example:3128"
    assert redact("http://proxy.example:3128/") == "proxy.example:3128"
    assert redact("127.0.0.1:8080") == "127.0.0.1:8080"


def test_a_bad_proxy_url_is_reported_without_its_password() -> None:
    with pytest.raises(ValueError) as info:
        ProxyPool(["http://user:pa55word@host"])  # no port
    assert "pa55word" not in str(info.value)
    good = ProxyPool(["http://user:pa55word@host:1"]).proxies[0]
    assert "pa55word" not in repr(good) and "host:1" in repr(good)


def test_backoff_grows_is_capped_and_jittered() -> None:
    p, clock = pool(1, backoff_base=1.0, backoff_max=16.0)
    proxy = p.proxies[0]
    delays = []
    for _ in range(8):
        delay = p.ban(proxy)
        assert delay is not None
        delays.append(delay)
        clock.now = proxy.ready_at  # the backoff is over: it may be tried, and banned, again
        assert p.ready() == [proxy]
    for n, delay in enumerate(delays):
        full = min(16.0, 2.0**n)
        assert full / 2 <= delay <= full, (n, delay)
    assert max(delays) <= 16.0
    assert delays[4] > delays[0] * 4  # grows
    assert len({round(d / min(16.0, 2.0**n), 6) for n, d in enumerate(delays)}) > 1  # jitter


def test_a_good_response_resets_the_backoff() -> None:
    p, clock = pool(1, backoff_base=1.0, backoff_max=100.0)
    proxy = p.proxies[0]
    for _ in range(5):
        p.ban(proxy)
        clock.now = proxy.ready_at
    p.succeed(proxy)
    assert proxy.health is Health.GOOD
    delay = p.ban(proxy)
    assert delay is not None and delay <= 1.0


def test_a_paced_ban_backs_off_for_the_paces_pause_capped() -> None:
    p, clock = pool(1, backoff_base=1.0, backoff_max=30.0)
    proxy = p.proxies[0]
    for n, paced in enumerate((0.4, 2.5, 7.0, 45.0)):
        assert p.ban(proxy, paced=paced) == min(paced, 30.0)  # no doubling of its own
        assert proxy.ready_at == clock.now + min(paced, 30.0) and proxy.bans == n + 1
        clock.now = proxy.ready_at
    assert p.ban(proxy, retry_after=60.0, paced=1.0) == 60.0


def test_retry_after_is_the_least_backoff() -> None:
    p, _ = pool(1, backoff_base=1.0, backoff_max=4.0)
    assert p.ban(p.proxies[0], retry_after=120.0) == 120.0


def test_one_ban_only_affects_the_proxy_that_served_it() -> None:
    p, clock = pool(3)
    banned = p.proxies[0]
    p.ban(banned)
    assert [x.health for x in p.proxies] == [Health.BANNED, Health.GOOD, Health.GOOD]
    assert p.ready() == [p.proxies[1], p.proxies[2]]
    # answers to requests already in flight through it do not stretch the backoff
    ready_at = banned.ready_at
    assert p.ban(banned) is None
    assert banned.ready_at == ready_at and banned.bans == 1
    clock.now = ready_at
    assert banned in p.ready()  # tried again after its backoff


def test_failed_connections_in_a_row_make_a_proxy_dead() -> None:
    p, clock = pool(2, max_failures=3)
    proxy = p.proxies[0]
    assert p.fail(proxy) is False
    assert p.fail(proxy) is False  # still backing off from the first: counted once
    clock.now = proxy.ready_at
    assert p.fail(proxy) is False
    clock.now = proxy.ready_at
    assert p.fail(proxy) is True
    assert proxy.health is Health.DEAD and p.proxies[1].health is Health.GOOD
    assert p.usable == [p.proxies[1]]


def test_the_pool_waits_while_all_back_off_and_gives_up_when_all_are_dead() -> None:
    p, clock = pool(2, backoff_base=10.0, max_failures=1)
    for proxy in p.proxies:
        p.ban(proxy)
    assert p.ready() == []
    wait = p.wait_time()
    assert wait is not None and 0 < wait <= 10.0
    clock.now += wait
    assert p.ready()
    clock.now += 10.0
    for proxy in p.proxies:
        p.fail(proxy)
    assert p.ready() == [] and p.wait_time() is None


def test_ban_detector_statuses_markers_and_retry_after() -> None:
    detector = BanDetector(BanPolicy())
    assert detector.check(html()) is None
    assert detector.check(html(404)) is None
    ban = detector.check(html(403))
    assert ban is not None and ban.reason == "status 403"
    captcha = detector.check(html(200, '<div class="captcha">Prove you are human</div>'))
    assert captcha is not None and "marker" in captcha.reason
    limited = detector.check(html(429, "slow down", **{"Retry-After": "7"}))
    assert limited is not None and limited.retry_after == 7.0
    date = html(503, "busy", **{"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert parse_retry_after(date) == 0.0  # in the past
    custom = BanDetector(BanPolicy(statuses=(418,), markers=(r"go away",)))
    assert custom.check(html(403)) is None
    assert custom.check(html(200, "please go away")) is not None


# --- the middleware, built the way Scrapy builds it --------------------------------------


def recipe_yaml(start_url: str, extra: str = "") -> str:
    return f"""
name: guarded
start_urls: [{start_url}]
allowed_domains: [127.0.0.1]
allow_private: true  # the demo site runs on loopback
follow:
  - {{allow: /guarded/page/\\d+$, restrict_css: nav.pagination}}
  - {{allow: /guarded/article/, restrict_css: ul.articles}}
item_urls: /guarded/article/
fields:
  title: {{css: "h1.title::text", type: str}}
  body: {{css: "div.body p::text", type: text}}
  published: {{css: "time::attr(datetime)", type: date, format: "%Y-%m-%d"}}
text_field: body
{extra}"""


def middleware(recipe_extra: str = "", **settings: Any) -> ProxyPoolMiddleware:
    crawler = get_crawler(RecipeSpider, settings)
    recipe = parse_recipe(yaml.safe_load(recipe_yaml("http://127.0.0.1:1/", recipe_extra)), "t")
    crawler.spider = RecipeSpider(recipe=recipe)
    return ProxyPoolMiddleware.from_crawler(crawler)


def test_no_proxies_anywhere_leaves_the_middleware_off() -> None:
    with pytest.raises(NotConfigured):
        middleware()


def test_proxies_come_from_the_recipe_its_file_or_the_settings(tmp_path: Path) -> None:
    listed = tmp_path / "proxies.txt"
    listed.write_text("# the pool\nhttp://a:b@10.0.0.1:1  # first\n\nhttp://10.0.0.2:2\n")
    mw = middleware(f"proxies: {{file: {listed}}}", HARVEST_PROXIES=["http://10.9.9.9:9"])
    assert [p.name for p in mw.pool.proxies] == ["10.0.0.1:1", "10.0.0.2:2"]
    mw = middleware(HARVEST_PROXIES="http://10.0.0.3:3, http://10.0.0.4:4")
    assert [p.name for p in mw.pool.proxies] == ["10.0.0.3:3", "10.0.0.4:4"]
    mw = middleware(HARVEST_PROXY_FILE=str(listed))
    assert len(mw.pool) == 2
    crawler = get_crawler(settings_dict={"HARVEST_PROXIES": ["http://10.0.0.5:5"]})
    assert proxy_urls(None, crawler.settings) == ["http://10.0.0.5:5"]


def test_plain_requests_carry_credentials_in_a_header_only() -> None:
    mw = middleware(HARVEST_PROXIES=["http://bob:hunter2@10.0.0.1:3128", "http://10.0.0.2:3128"])
    first, second = Request("http://site/a"), Request("http://site/b")
    asyncio.run(mw.process_request(first))
    asyncio.run(mw.process_request(second))
    assert first.meta["proxy"] == "http://10.0.0.1:3128"
    assert first.headers[b"Proxy-Authorization"] == b"Basic Ym9iOmh1bnRlcjI="
    assert second.meta["proxy"] == "http://10.0.0.2:3128"
    assert b"Proxy-Authorization" not in second.headers
    stats = mw.crawler.stats.get_stats()  # type: ignore[union-attr]
    assert stats["harvest/proxy/requests/10.0.0.1:3128"] == 1
    assert "hunter2" not in repr(stats)


def test_browser_requests_get_one_context_per_proxy() -> None:
    mw = middleware(HARVEST_PROXIES=["http://bob:hunter2@10.0.0.1:3128", "http://10.0.0.2:3128"])
    requests = [Request(f"http://site/{i}", meta={"playwright": True}) for i in range(3)]
    for request in requests:
        asyncio.run(mw.process_request(request))
    assert [r.meta["playwright_context"] for r in requests] == ["proxy-0", "proxy-1", "proxy-0"]
    assert requests[0].meta["playwright_context_kwargs"] == {
        "proxy": {"server": "http://10.0.0.1:3128", "username": "bob", "password": "hunter2"}
    }
    assert requests[1].meta["playwright_context_kwargs"] == {
        "proxy": {"server": "http://10.0.0.2:3128"}
    }
    assert all("proxy" not in r.meta for r in requests)


def test_a_request_held_back_takes_its_exit_when_it_goes() -> None:
    """Its exit's pace counts it sent when it leaves: taken before the wait, it would go
    out of turn, bunched with the requests the exit sent meanwhile."""
    mw = middleware(HARVEST_PROXIES=["http://10.0.0.1:1"])
    held = Request("http://site/a", meta={NOT_BEFORE_META: time.time() + 0.3})
    before = mw.pacer.clock()
    asyncio.run(mw.process_request(held))
    sends = mw.pacer.pace(held.meta["harvest_exit"], "site").windows.sends
    assert len(sends) == 1 and sends[0] >= before + 0.29


def test_a_banned_response_is_retried_through_another_proxy_and_capped() -> None:
    mw = middleware(HARVEST_PROXIES=["http://10.0.0.1:1", "http://10.0.0.2:2"])
    request = Request("http://site/a")
    asyncio.run(mw.process_request(request))
    block = HtmlResponse(request.url, status=403, body=b"Access denied", request=request)
    retry = mw.process_response(request, block)
    assert isinstance(retry, Request) and retry.dont_filter
    asyncio.run(mw.process_request(retry))
    assert retry.meta["proxy"] == "http://10.0.0.2:2"
    assert mw.pool.proxies[0].health is Health.BANNED
    assert mw.pool.proxies[1].health is Health.GOOD

    retry.meta["harvest_ban_retries"] = mw.max_retries
    with pytest.raises(IgnoreRequest):
        mw.process_response(retry, block.replace(request=retry))
    stats = mw.crawler.stats.get_stats()  # type: ignore[union-attr]
    assert stats["harvest/proxy/gave_up"] == 1 and stats["harvest/proxy/retries"] == 1


def test_mock_refusals_kill_every_proxy_and_stop_the_pool(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Refused connections built by hand; the crawls below cause them for real."""
    mw = middleware(HARVEST_PROXIES=["http://a:hunter2@10.0.0.1:1", "http://10.0.0.2:2"])
    mw.pool.max_failures = 1
    for proxy in mw.pool.proxies:
        request = Request("http://site/", meta={"harvest_proxy": proxy.index})
        mw.process_exception(request, DownloadConnectionRefusedError())
    with pytest.raises(IgnoreRequest, match="no_usable_proxy"):
        asyncio.run(mw.process_request(Request("http://site/next")))
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [
        "all 2 proxies are banned or dead (2 dead): stopping the crawl (no_usable_proxy)"
    ]
    assert "hunter2" not in caplog.text


# --- crawls through real tinyproxy processes --------------------------------------------


@pytest.fixture(scope="module")
def tinyproxies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[proxies.TinyProxy]]:
    with proxies.running(4, tmp_path_factory.mktemp("tinyproxy"), {0: (USER, SECRET)}) as started:
        yield started


@pytest.fixture
def guarded(site: Site) -> Iterator[DemoSite]:
    """A fresh guarded site: each crawl starts with no address banned."""
    with DemoSite(site, guard=Guard(limit=GUARD_LIMIT, window=3600, ban_seconds=3600)) as server:
        yield server


def write_recipe(
    tmp_path: Path, site: DemoSite, proxy_lines: list[str] | None, backoff_base: float = 0.02
) -> Path:
    extra = f"ban: {{backoff_base: {backoff_base}, backoff_max: 2}}\n"
    if proxy_lines is not None:
        listed = tmp_path / "proxies.txt"
        listed.write_text("# proxies for the guarded section\n" + "\n".join(proxy_lines) + "\n")
        extra += f"proxies: {{file: {listed}}}\n"
    path = tmp_path / "guarded.yaml"
    path.write_text(recipe_yaml(site.url + "/guarded/", extra))
    return path


def pool_lines(tinyproxies: list[proxies.TinyProxy], guarded: DemoSite) -> tuple[list[str], str]:
    """The four tinyproxies, the third one banned by the site already, and a dead proxy."""
    guarded.guard.banned_until[tinyproxies[2].bind] = time.monotonic() + 3600
    dead = f"127.0.0.1:{free_port()}"
    lines = [p.url + ("  # BasicAuth" if p.auth else "") for p in tinyproxies]
    lines.insert(3, f"http://{dead}  # nothing listens here")
    return lines, dead


def article_urls(site: Site, server: DemoSite) -> set[str]:
    return {f"{server.url}/guarded{a.path}" for a in site.articles}


def assert_no_ban_page_in(lake: Lake) -> None:
    raw = lake.read("raw/guarded")
    assert set(raw["http_status"].to_pylist()) == {200}
    for row in raw.to_pylist():
        text = " ".join(str(v) for v in row.values())
        assert "captcha" not in text and "Access denied" not in text, row["url"]


@pytest.mark.slow
def test_without_proxies_the_site_bans_the_crawl(
    guarded: DemoSite, site: Site, tmp_path: Path, lake_env: dict[str, str]
) -> None:
    recipe = write_recipe(tmp_path, guarded, None)
    # banned for an hour: waited for (paced, probed) only so long, then given up
    with recipe.open("a") as f:
        f.write("settings: {HARVEST_BAN_MAX_WAIT: 3}\n")
    proc = run_harvest(["crawl", str(recipe), "--no-curate"], lake_env, check=False)
    summary = last_json(proc.stdout)
    raw = Lake(lake_env["HARVEST_LAKE"]).read("raw/guarded")
    assert summary["items"] == raw.num_rows < len(site.articles)
    # the crawl does not pass for a success: its account names the banned pages
    assert proc.returncode == 3
    assert summary["account"]["given_up"]["banned"] >= 1  # type: ignore[index]
    assert summary["account"]["exits"]["direct"]["bans"] >= 1  # type: ignore[index]
    assert "127.0.0.1" in guarded.guard.banned_until
    assert_no_ban_page_in(Lake(lake_env["HARVEST_LAKE"]))


@pytest.mark.slow
def test_through_the_pool_every_article_lands_once_and_no_ban_page(
    tinyproxies: list[proxies.TinyProxy],
    guarded: DemoSite,
    site: Site,
    tmp_path: Path,
    lake_env: dict[str, str],
) -> None:
    lines, _ = pool_lines(tinyproxies, guarded)
    recipe = write_recipe(tmp_path, guarded, lines)
    proc = run_harvest(["crawl", str(recipe), "--no-curate"], lake_env)
    summary = last_json(proc.stdout)
    assert summary["finish_reason"] == "finished"
    lake = Lake(lake_env["HARVEST_LAKE"])
    urls = lake.read("raw/guarded")["url"].to_pylist()
    assert len(urls) == len(set(urls)) and set(urls) == article_urls(site, guarded)
    assert_no_ban_page_in(lake)
    # the site saw the crawl from the proxies' own addresses, never from the crawler's
    clients = {address for address, path in guarded.requests if path.startswith("/guarded")}
    assert clients <= {p.bind for p in tinyproxies} and len(clients) >= 3
    assert SECRET not in proc.stdout + proc.stderr and USER not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_logs_and_stats_hide_credentials_and_show_the_dead_proxy(
    tinyproxies: list[proxies.TinyProxy],
    guarded: DemoSite,
    site: Site,
    tmp_path: Path,
) -> None:
    """A ``scrapy crawl`` at DEBUG: every request logged, and the stats dumped at the end."""
    lines, dead = pool_lines(tinyproxies, guarded)
    recipe = write_recipe(tmp_path, guarded, lines)
    lake = tmp_path / "lake"
    proc = run_scrapy(
        [
            "crawl",
            "recipe",
            "-a",
            f"source={recipe}",
            "-s",
            f"HARVEST_LAKE={lake}",
            "-s",
            "LOG_LEVEL=DEBUG",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "Dumping Scrapy stats" in log
    assert SECRET not in log and USER not in log
    stats = dict(re.findall(r"'(harvest/proxy/[^']+)': (\d+)", log))
    banned_by_site = tinyproxies[2].name
    assert int(stats[f"harvest/proxy/bans/{banned_by_site}"]) >= 1
    assert stats[f"harvest/proxy/dead/{dead}"] == "1"
    assert int(stats["harvest/proxy/retries"]) >= 1
    for key in stats:
        assert re.fullmatch(r"harvest/proxy/(\w+|\w+/127\.0\.0\.1:\d+)", key), key
    for proxy in tinyproxies:
        if proxy is not tinyproxies[2]:
            assert int(stats[f"harvest/proxy/requests/{proxy.name}"]) > 0
    assert len(set(Lake(lake).read("raw/guarded")["url"].to_pylist())) == len(site.articles)


@pytest.mark.slow
def test_rate_limits_are_waited_out_as_retry_after_asks(
    tinyproxies: list[proxies.TinyProxy], tmp_path: Path
) -> None:
    """The site answers 429 with Retry-After to a fast client: the pool waits, loses nothing.

    Two proxies may fetch 5 pages in 2 seconds each; any crawl is faster than that. With
    pacing off (it takes 429s first, see test_pacing.py) the pool bans the proxy for them.
    """
    site = generate(40, seed=5)
    with DemoSite(site, guard=Guard(limit=5, window=2, ban_seconds=0)) as limited:
        lines = [p.url for p in tinyproxies[:2]]
        recipe = write_recipe(tmp_path, limited, lines, backoff_base=0.05)
        lake = tmp_path / "lake"
        settings = ["-s", f"HARVEST_LAKE={lake}", "-s", "HARVEST_BAN_MAX_RETRIES=1000"]
        settings += ["-s", "HARVEST_PACING=False"]
        proc = run_scrapy(["crawl", "recipe", "-a", f"source={recipe}", *settings])
    assert proc.returncode == 0, proc.stderr[-3000:]
    backoffs = [
        float(s) for s in re.findall(r"banned \(status 429\): backing off ([\d.]+)s", proc.stderr)
    ]
    assert backoffs and min(backoffs) >= 1.0  # the site's Retry-After, not the 0.05 s base
    assert "'harvest/proxy/waits'" in proc.stderr  # every proxy was backing off at times
    raw = Lake(lake).read("raw/guarded")
    assert sorted(raw["url"].to_pylist()) == sorted(article_urls(site, limited))
    assert set(raw["http_status"].to_pylist()) == {200}


@pytest.mark.slow
def test_when_every_proxy_is_dead_the_crawl_stops_with_a_clear_error(
    tinyproxies: list[proxies.TinyProxy],
    guarded: DemoSite,
    tmp_path: Path,
    lake_env: dict[str, str],
) -> None:
    """One proxy wants credentials we lack (407), nothing listens behind the other."""
    no_creds = f"http://127.0.0.1:{tinyproxies[0].port}"
    nothing = f"http://{USER}:{SECRET}@127.0.0.1:{free_port()}"
    recipe = write_recipe(tmp_path, guarded, [no_creds, nothing])
    proc = run_harvest(["crawl", str(recipe), "--no-curate"], lake_env, check=False)
    assert proc.returncode == 69  # unavailable: retry later (README: exit codes)
    assert "all 2 proxies are banned or dead (2 dead)" in proc.stderr
    assert "stopped: every proxy is banned or dead" in proc.stderr
    assert SECRET not in proc.stdout + proc.stderr and USER not in proc.stdout + proc.stderr
    assert not guarded.requests  # nothing reached the site, through a proxy or around it
