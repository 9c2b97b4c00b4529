"""Crawls of a rate-limited site learn its pace through every exit, and say what they lost.

The site's limit is picked at random and never told to the crawler. How long a crawl takes
against the least time the limit allows is measured by ``bench/crawl.py --rows g``, since
tests never assert a duration.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harvest.demosite import DemoSite, Guard, generate
from harvest.demosite.guard import REGIMES
from harvest.workers import free_port
from ingestion.lake import Lake
from tests import proxies
from tests.helpers import last_json, run_harvest, section_recipe

pytestmark = pytest.mark.slow


def crawl(
    path: Path, server: DemoSite, env: dict[str, str], section: str = "/guarded"
) -> tuple[int, dict[str, Any], str]:
    args = ["crawl", str(path), "--start-url", f"{server.url}{section}/", "--no-curate"]
    proc = run_harvest(args, env, check=False)
    return proc.returncode, last_json(proc.stdout), proc.stderr


def assert_retry_after_waited(guard: Guard, in_flight: int = 0, margin: float = 0.5) -> None:
    """After a 429 (Retry-After is at least 1 s on the demo site) an address sends nothing
    for that second, but for requests already on their way when the 429 came: through a
    proxy, up to a download slot's worth may still be queued there; direct, the one request
    a pace may let go as a stalled crawler resumes, before it has read the 429 (``margin``
    covers the usual delay in reading it)."""
    for at, address, status in guard.answers:
        if status != 429:
            continue
        early = [
            t for t, a, _ in guard.answers if a == address and at + margin < t < at + 1.0 - 0.01
        ]
        assert len(early) <= in_flight, f"{address} sent {len(early)} within a Retry-After"


def assert_every_article_once(lake_env: dict[str, str], articles: int) -> None:
    urls = Counter(Lake(lake_env["HARVEST_LAKE"]).read("raw/paced")["url"].to_pylist())
    assert len(urls) == articles and set(urls.values()) == {1}


@pytest.fixture
def limited() -> Iterator[tuple[DemoSite, int]]:
    """A site allowing each client address ``limit`` requests a second, 429 past it."""
    limit = random.randint(6, 15)
    with DemoSite(generate(90, seed=limit), guard=Guard(limit, 1.0, ban_seconds=0)) as server:
        yield server, limit


@pytest.fixture(scope="module")
def tinyproxies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[proxies.TinyProxy]]:
    with proxies.running(3, tmp_path_factory.mktemp("tinyproxy")) as started:
        yield started


def test_default_settings_get_every_page_through_the_direct_connection(
    tmp_path: Path, limited: tuple[DemoSite, int], lake_env: dict[str, str]
) -> None:
    server, limit = limited
    code, summary, _ = crawl(section_recipe(tmp_path, "paced"), server, lake_env)
    account = summary["account"]
    assert code == 0 and account["given_up_total"] == 0
    assert_every_article_once(lake_env, len(server.site.articles))
    direct = account["exits"]["direct"]
    assert direct["throttled"] >= 1, f"limit {limit} was never reached"
    # it learned a rate near the limit, and did not hammer the site to get there: past the
    # first burst (16 requests at once, before anything is known), throttles are rare
    assert 0.5 * limit <= direct["rate_per_s"] <= 1.3 * limit, (direct, limit)
    assert account["throttled_responses"] <= 16 + 0.1 * account["fetched"], account
    assert_retry_after_waited(server.guard, in_flight=1)


def test_several_proxies_each_learn_their_own_pace_and_a_dead_one_is_dropped(
    tmp_path: Path,
    limited: tuple[DemoSite, int],
    tinyproxies: list[proxies.TinyProxy],
    lake_env: dict[str, str],
) -> None:
    server, limit = limited
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there, for good
    urls = [p.url for p in tinyproxies] + [dead]
    # short backoffs, so the dead proxy fails its three times well within the crawl
    path = section_recipe(tmp_path, "paced", proxies={"urls": urls}, ban={"backoff_base": 0.05})
    code, summary, _ = crawl(path, server, lake_env)
    account = summary["account"]
    assert code == 0 and account["given_up_total"] == 0, account
    assert_every_article_once(lake_env, len(server.site.articles))
    exits = account["exits"]
    assert exits[dead.removeprefix("http://")]["dead"] == 1
    learned = [exits[p.name] for p in tinyproxies if "rate_per_s" in exits[p.name]]
    assert len(learned) >= 2, exits
    for figures in learned:
        assert 0.5 * limit <= figures["rate_per_s"] <= 1.3 * limit, (figures, limit)
    # the site saw the crawl from every live proxy's address, never from the crawler's own
    clients = {address for _, address, _ in server.guard.answers}
    assert clients == {p.bind for p in tinyproxies}
    assert_retry_after_waited(server.guard, in_flight=8)


def test_without_pacing_the_same_crawl_loses_pages_and_says_so(
    tmp_path: Path, limited: tuple[DemoSite, int], lake_env: dict[str, str]
) -> None:
    server, _ = limited
    path = section_recipe(tmp_path, "paced", settings={"HARVEST_PACING": False})
    code, summary, stderr = crawl(path, server, lake_env)
    assert code == 3
    assert summary["account"]["given_up"].get("http_429", 0) >= 1
    assert "account: gave up on" in stderr


def test_every_exit_banned_for_good_ends_non_zero_and_the_account_says_so(
    tmp_path: Path, tinyproxies: list[proxies.TinyProxy], lake_env: dict[str, str]
) -> None:
    guard = Guard(limit=4, window=3600, ban_seconds=3600)  # a few pages each, then a captcha
    with DemoSite(generate(60, seed=3), guard=guard) as server:
        path = section_recipe(
            tmp_path,
            "paced",
            proxies={"urls": [p.url for p in tinyproxies[:2]]},
            ban={"backoff_base": 0.05, "backoff_max": 0.2},
            settings={"HARVEST_BAN_MAX_RETRIES": 3, "HARVEST_LISTING_BACKOFF": 0.05},
        )
        code, summary, stderr = crawl(path, server, lake_env)
    account = summary["account"]
    assert code == 3, stderr[-2000:]
    assert account["given_up"]["banned"] >= 1 and account["banned_responses"] >= 1
    assert account["broken_chains"], account  # the listing pages behind the ban were lost
    assert "broken chain: listing page" in stderr
    assert all(f["bans"] >= 1 for name, f in account["exits"].items()), account["exits"]


@pytest.fixture
def open_site() -> Iterator[DemoSite]:
    with DemoSite(generate(100, seed=11)) as server:
        yield server


def test_a_listing_page_that_keeps_failing_is_named_a_broken_chain(
    tmp_path: Path, open_site: DemoSite, lake_env: dict[str, str]
) -> None:
    open_site.failing["/page/3"] = -1
    path = section_recipe(tmp_path, "paced", section="", settings={"HARVEST_LISTING_BACKOFF": 0.05})
    code, summary, stderr = crawl(path, open_site, lake_env, section="")
    account = summary["account"]
    assert code == 3
    broken = f"{open_site.url}/page/3"
    # pages 1 and 2 led to 21 pages each: the lost page hid about as many
    assert account["broken_chains"] == {broken: 21}
    assert f"broken chain: listing page {broken} lost, at least about 21 pages" in stderr
    tries = sum(path == "/page/3" for _, path in open_site.requests)
    assert tries == 3 + 6  # RetryMiddleware's three tries, then six after growing pauses
    assert account["given_up"] == {"http_500": 1}
    # what the lost page led to was never seen, and the account does not pretend otherwise
    rows = Lake(lake_env["HARVEST_LAKE"]).read("raw/paced").num_rows
    assert rows == 40 == account["items"]


def test_a_listing_page_that_fails_for_a_while_is_waited_for(
    tmp_path: Path, open_site: DemoSite, lake_env: dict[str, str]
) -> None:
    # RetryMiddleware's three tries fail, then two more after a pause; the third gets it
    open_site.failing["/page/2"] = 5
    path = section_recipe(tmp_path, "paced", section="", settings={"HARVEST_LISTING_BACKOFF": 0.05})
    code, summary, _ = crawl(path, open_site, lake_env, section="")
    assert code == 0 and summary["account"]["broken_chains"] == {}
    assert summary["stats"]["harvest/listing/retries"] == 3
    assert_every_article_once(lake_env, len(open_site.site.articles))


def draw_guard(rng: random.Random) -> tuple[Guard, str]:
    """A limit regime of the family the demo site serves, with its parameters, and what it
    is, in words. Soft blocks (200 look-alikes) are the page checks' concern: not drawn."""
    limit, window = rng.randint(5, 12), rng.choice([1.0, 2.0])
    regime, status = rng.choice(REGIMES), rng.choice([0, 429, 403])
    block = round(rng.uniform(3, 5) * window, 1) if status else 0.0
    listing = rng.choice([None, rng.randint(2, 4)])
    key = rng.choice(["address", "cookie"])
    guard = Guard(limit, window, block, regime, status or 403, listing, key)
    words = f"{regime} {limit}/{window:g}s per {key}, listings {listing or 'alike'}, "
    words += f"then blocked {block:g}s with {status}" if status else "then 429 + Retry-After"
    return guard, words


@pytest.mark.parametrize("draw", range(3))
def test_a_regime_drawn_at_random_is_crawled_whole_through_proxies(
    draw: int, tmp_path: Path, tinyproxies: list[proxies.TinyProxy], lake_env: dict[str, str]
) -> None:
    """The crawler is told nothing of the regime; HARVEST_TEST_SEED replays a draw."""
    seed = int(os.environ.get("HARVEST_TEST_SEED") or random.randrange(2**32)) + draw
    guard, words = draw_guard(random.Random(seed))
    said = f"seed {seed}: {words}"
    with DemoSite(generate(60, seed=seed % 1000), guard=guard) as server:
        path = section_recipe(tmp_path, "paced", proxies={"urls": [p.url for p in tinyproxies]})
        code, summary, stderr = crawl(path, server, lake_env)
        articles = len(server.site.articles)
    account = summary.get("account", {})
    assert code == 0 and account.get("given_up_total") == 0, f"{said}: {account or stderr[-2000:]}"
    urls = Counter(Lake(lake_env["HARVEST_LAKE"]).read("raw/paced")["url"].to_pylist())
    assert len(urls) == articles and set(urls.values()) == {1}, said
    clients = {address for _, address, _ in guard.answers}
    assert clients <= {p.bind for p in tinyproxies}, said


def test_a_block_drawn_at_random_is_waited_out_on_the_direct_connection(
    tmp_path: Path, lake_env: dict[str, str]
) -> None:
    """Direct, a block page or a bare 429 has nowhere else to go: it is waited out and sent
    again, never handed on as a lost page."""
    seed = int(os.environ.get("HARVEST_TEST_SEED") or random.randrange(2**32))
    rng = random.Random(seed)
    limit, window = rng.randint(8, 15), rng.choice([1.0, 2.0])
    status, block = rng.choice([403, 429]), round(rng.uniform(2, 4) * window, 1)
    guard = Guard(limit, window, block, rng.choice(REGIMES), status)
    said = f"seed {seed}: {guard.regime} {limit}/{window:g}s, blocked {block:g}s with {status}"
    with DemoSite(generate(40, seed=seed % 1000), guard=guard) as server:
        code, summary, stderr = crawl(section_recipe(tmp_path, "paced"), server, lake_env)
        articles = len(server.site.articles)
    account = summary.get("account", {})
    assert code == 0 and account.get("given_up_total") == 0, f"{said}: {account or stderr[-2000:]}"
    assert_every_article_once(lake_env, articles)
    blocked = sum(status == s for _, _, s in guard.answers)
    assert blocked >= 1, f"{said}: never blocked"
    direct = account["exits"]["direct"]
    assert direct.get("bans" if status == 403 else "throttled", 0) >= 1, f"{said}: {direct}"
