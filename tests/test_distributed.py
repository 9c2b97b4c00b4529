"""Several crawl processes share one frontier in a real Redis and crawl the site once."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml
from scrapy import Request, Spider
from scrapy.core.downloader import Slot
from scrapy.core.engine import ExecutionEngine
from scrapy.exceptions import DontCloseSpider
from scrapy.utils.test import get_crawler
from twisted.internet.defer import Deferred

from harvest.demosite import DemoSite, Site
from harvest.workers import private_redis
from ingestion.lake import Lake
from spiders import settings as defaults
from spiders.frontier import RedisFrontier, delete_frontier, frontier_keys
from tests.helpers import ROOT, alive, free_port, last_json, run_harvest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A real redis-server on a free loopback port, stopped by its process id."""
    with private_redis() as url:
        yield url


@pytest.fixture
def env(lake_env: dict[str, str]) -> dict[str, str]:
    return {**lake_env, "HARVEST_CRAWL_BATCH_SIZE": "10"}


def paced_recipe(tmp_path: Path) -> Path:
    """The demo recipe, paced so that every worker is up before the site is crawled."""
    data = yaml.safe_load((ROOT / "sources" / "demo.yaml").read_text())
    data["settings"] = {"CONCURRENT_REQUESTS": 2, "DOWNLOAD_DELAY": 0.05}
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def article_fetches(demo_site: DemoSite, since: int) -> Counter[str]:
    return Counter(p for _, p in demo_site.requests[since:] if p.startswith("/article/"))


def assert_each_article_once(lake: Lake, site: Site, demo_site: DemoSite) -> str:
    raw = lake.read("raw/demo")
    counts = Counter(raw["url"].to_pylist())
    assert set(counts) == {demo_site.url + a.path for a in site.articles}
    assert set(counts.values()) == {1}
    crawl_ids = set(raw["crawl_id"].to_pylist())
    assert len(crawl_ids) == 1
    return crawl_ids.pop()


def test_two_workers_crawl_every_article_once(
    redis_url: str, demo_site: DemoSite, site: Site, tmp_path: Path, env: dict[str, str]
) -> None:
    since = len(demo_site.requests)
    args = [
        "crawl",
        str(paced_recipe(tmp_path)),
        "--workers",
        "2",
        "--redis",
        redis_url,
        "--start-url",
        demo_site.url + "/",
    ]
    summary = last_json(run_harvest(args, env).stdout)

    crawl_id = assert_each_article_once(Lake(env["HARVEST_LAKE"]), site, demo_site)
    assert summary["crawl_id"] == crawl_id
    assert summary["items"] == summary["rows_committed"] == len(site.articles)
    fetched = article_fetches(demo_site, since)
    assert set(fetched) == {a.path for a in site.articles}
    assert set(fetched.values()) == {1}
    workers = summary["workers"]
    assert isinstance(workers, list) and len(workers) == 2
    for worker in workers:
        assert worker["finish_reason"] == "finished"
        assert worker["requests"] > 0 and worker["items"] > 0, worker
    assert sum(w["items"] for w in workers) == len(site.articles)
    n_dup = len(site.planted_duplicates) + len(site.planted_near_duplicates)
    assert summary["curated"] == len(site.articles) - len(site.planted_invalid) - n_dup
    # the frontier is gone once the crawl finished
    client = redis.Redis.from_url(redis_url)
    assert client.keys(f"harvest:demo:{crawl_id}:*") == []


@pytest.mark.requires_redis
def test_workers_without_redis_start_their_own(
    demo_site: DemoSite, site: Site, tmp_path: Path, env: dict[str, str]
) -> None:
    since = len(demo_site.requests)
    args = ["crawl", "demo", "--workers", "2", "--no-curate", "--start-url", demo_site.url + "/"]
    summary = last_json(run_harvest(args, env).stdout)
    assert summary["items"] == len(site.articles)
    assert summary["crawl_id"] == assert_each_article_once(
        Lake(env["HARVEST_LAKE"]), site, demo_site
    )
    assert set(article_fetches(demo_site, since).values()) == {1}


def test_unreachable_redis_is_a_clear_error_without_the_password(env: dict[str, str]) -> None:
    port = free_port()
    url = f"redis://:s3cret@127.0.0.1:{port}/0"
    proc = run_harvest(["crawl", "demo", "--workers", "2", "--redis", url], env, check=False)
    assert proc.returncode == 69  # unavailable: retry later (README: exit codes)
    assert f"cannot reach Redis at redis://:***@127.0.0.1:{port}/0" in proc.stderr
    assert "s3cret" not in proc.stderr + proc.stdout


def test_missing_redis_server_is_a_clear_error(env: dict[str, str]) -> None:
    # a PATH holding only the virtualenv: no redis-server on it
    path = {"PATH": str(Path(sys.executable).parent)}
    proc = run_harvest(["crawl", "demo", "--workers", "2"], {**env, **path}, check=False)
    assert proc.returncode == 69  # a crawl that cannot go on (README: exit codes)
    assert "redis-server is not installed" in proc.stderr


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def killable_crawl(tmp_path: Path, redis_url: str, demo_site: DemoSite) -> list[str]:
    """A paced crawl of the demo site by 2 workers on the shared Redis, not curated: the
    arguments of ``harvest``."""
    return [
        "crawl",
        str(paced_recipe(tmp_path)),
        "--workers",
        "2",
        "--redis",
        redis_url,
        "--start-url",
        demo_site.url + "/",
        "--no-curate",
    ]


def test_a_killed_worker_is_named_and_the_crawl_resumes(
    redis_url: str, demo_site: DemoSite, site: Site, tmp_path: Path, env: dict[str, str]
) -> None:
    args = killable_crawl(tmp_path, redis_url, demo_site)
    proc = subprocess.Popen(
        [sys.executable, "-m", "harvest.cli", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lake = Lake(env["HARVEST_LAKE"])
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (lake.version("raw/demo") or 0) < 2:
            assert proc.poll() is None, "the crawl finished before a worker could be killed"
            time.sleep(0.05)
        victim = children(proc.pid)[0]
        os.kill(victim, signal.SIGKILL)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 69  # rerun later: the crawl resumes (README: exit codes)
    assert re.search(rf"worker [12] \(pid {victim}\) of 2 failed with exit code -9", stderr)
    killed_id = lake.read("raw/demo")["crawl_id"][0].as_py()

    summary = last_json(run_harvest(args, env).stdout)
    assert summary["resumed"] is True and summary["crawl_id"] == killed_id
    assert assert_each_article_once(lake, site, demo_site) == killed_id


def test_workers_of_a_killed_command_commit_and_end_and_the_crawl_resumes(
    redis_url: str, demo_site: DemoSite, site: Site, tmp_path: Path, env: dict[str, str]
) -> None:
    # the workers run in process groups of their own: only their command's death
    # tells them to stop
    args = killable_crawl(tmp_path, redis_url, demo_site)
    proc = subprocess.Popen(
        [sys.executable, "-m", "harvest.cli", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    lake = Lake(env["HARVEST_LAKE"])
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while (lake.version("raw/demo") or 0) < 2:
            assert proc.poll() is None, "the crawl finished before its command could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        workers = children(proc.pid)
        assert len(workers) == 2
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 60
        while any(alive(pid) for pid in workers):
            assert time.monotonic() < deadline, "a worker outlived its killed command"
            time.sleep(0.1)
    finally:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    killed_id = lake.read("raw/demo")["crawl_id"][0].as_py()

    summary = last_json(run_harvest(args, env).stdout)
    assert summary["resumed"] is True and summary["crawl_id"] == killed_id
    assert assert_each_article_once(lake, site, demo_site) == killed_id


def frontier(redis_url: str, crawl_id: str, worker: str) -> RedisFrontier:
    """A worker's frontier on a real crawler and engine that never run: the test steps it."""
    crawler = get_crawler(
        Spider,
        {
            "HARVEST_REDIS_URL": redis_url,
            "HARVEST_CRAWL_ID": crawl_id,
            "HARVEST_REDIS_WORKER": worker,
            "HARVEST_REDIS_PREFIX": defaults.HARVEST_REDIS_PREFIX,
            "HARVEST_REDIS_DONE_TTL": defaults.HARVEST_REDIS_DONE_TTL,
            "HARVEST_REDIS_PREFETCH": defaults.HARVEST_REDIS_PREFETCH,
            "DOWNLOAD_HANDLERS": {"http": None, "https": None},
        },
    )
    spider = crawler.spider = crawler._create_spider("demo")
    crawler.engine = ExecutionEngine(crawler, lambda _: None)
    result = RedisFrontier.from_crawler(crawler)
    result.open(spider)
    return result


def test_a_worker_leaves_what_it_cannot_send_now_to_the_others(redis_url: str) -> None:
    a, b = (frontier(redis_url, "prefetch", name) for name in "ab")
    try:
        for n in (1, 2):
            a.enqueue_request(Request(f"http://site.example/{n}"))
        a.flush()
        # a's download slot already holds a request waiting for a free transfer
        assert a.crawler.engine is not None
        slot = a.crawler.engine.downloader.slots["site.example"] = Slot(8, 0, jitter=0)
        slot.queue.append((Request("http://site.example/0"), Deferred()))
        assert a.next_request() is None
        taken = b.next_request()
        assert taken is not None and taken.url == "http://site.example/1"
        slot.queue.clear()  # its transfer started: a takes the next one
        taken = a.next_request()
        assert taken is not None and taken.url == "http://site.example/2"
    finally:
        for f in (a, b):
            f.close("finished")
        delete_frontier(redis.Redis.from_url(redis_url), "harvest", "demo", "prefetch")


def test_an_idle_worker_waits_for_a_busy_one_and_they_end_together(redis_url: str) -> None:
    a, b = (frontier(redis_url, "idle", name) for name in "ab")
    client = redis.Redis.from_url(redis_url)
    try:
        a.enqueue_request(Request("http://site.example/"))
        a.flush()  # as the reactor does at the end of its turn
        assert b.next_request() is not None  # b is busy with the only page
        with pytest.raises(DontCloseSpider):  # a has nothing, but b's page may lead further
            a.spider_idle(a.spider)  # type: ignore[arg-type]
        for _ in range(2):  # sent together, the second found a duplicate in the same round trip
            b.enqueue_request(Request("http://site.example/next"))
        b.flush()
        assert b.crawler.stats is not None
        assert b.crawler.stats.get_value("dupefilter/filtered") == 1
        assert client.llen(frontier_keys("harvest", "demo", "idle")["queue"]) == 1
        assert a.next_request() is not None
        with pytest.raises(DontCloseSpider):
            b.spider_idle(b.spider)  # type: ignore[arg-type]
        a.spider_idle(a.spider)  # type: ignore[arg-type]  # the last busy one: the end
        b.spider_idle(b.spider)  # type: ignore[arg-type]  # and b sees it
        keys = frontier_keys("harvest", "demo", "idle")
        assert client.exists(keys["done"]) and not client.exists(keys["queue"], keys["busy"])
        a.enqueue_request(Request("http://site.example/late"))
        a.flush()  # the crawl has ended: nothing is queued again
        assert not client.exists(keys["queue"])
    finally:
        for f in (a, b):
            f.close("finished")
        delete_frontier(client, "harvest", "demo", "idle")


@pytest.mark.parametrize("pagination", ["numbered", "chain"])
def test_four_workers_crawl_either_pagination_once(
    pagination: str, redis_url: str, site: Site, tmp_path: Path, env: dict[str, str]
) -> None:
    with DemoSite(site, pagination=pagination) as shaped:
        args = [
            "crawl",
            str(paced_recipe(tmp_path)),
            "--workers",
            "4",
            "--redis",
            redis_url,
            "--start-url",
            shaped.url + "/",
            "--no-curate",
        ]
        summary = last_json(run_harvest(args, env).stdout)
        fetched = Counter(shaped.hits)
    assert_each_article_once(Lake(env["HARVEST_LAKE"]), site, shaped)
    assert summary["items"] == len(site.articles)
    listings = {"/", *(f"/page/{n}" for n in range(2, site.pages + 1))}
    assert {p for p in fetched if not p.startswith("/article/")} - {"/robots.txt"} == listings
    assert {fetched[p] for p in listings} == {1}
    assert {fetched[a.path] for a in site.articles} == {1}
