"""Crawls that meet hostile pages, private addresses and their own bounds end cleanly."""

from __future__ import annotations

import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import yaml

from harvest.demosite import DemoSite
from ingestion.lake import Lake
from spiders.middlewares.privateaddress import is_private
from tests.helpers import ROOT, last_json, run_harvest, serving

pytestmark = pytest.mark.slow
DEMO = yaml.safe_load((ROOT / "sources" / "demo.yaml").read_text())


def recipe(tmp_path: Path, name: str, **changes: object) -> Path:
    data = {**DEMO, "name": name, **changes}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def crawl_stats(path: Path, start: str, env: dict[str, str]) -> tuple[dict[str, object], str]:
    proc = run_harvest(["crawl", str(path), "--start-url", start, "--no-curate"], env)
    return last_json(proc.stdout), proc.stderr


def test_private_addresses_are_refused_unless_allowed(
    tmp_path: Path, demo_site: DemoSite, lake_env: dict[str, str]
) -> None:
    path = recipe(tmp_path, "private", allow_private=False)
    before = len(demo_site.requests)
    proc = run_harvest(["crawl", str(path), "--start-url", demo_site.url + "/"], lake_env, False)
    assert proc.returncode == 69  # the site gave no response (README: exit codes)
    assert "127.0.0.1 is a private address" in proc.stderr
    assert len(demo_site.requests) == before


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.1.1", "::1"])
def test_is_private(address: str) -> None:
    assert is_private(address)


def test_public_address_is_not_private() -> None:
    assert not is_private("8.8.8.8")


def test_hostile_pages_are_counted_and_skipped(
    tmp_path: Path, demo_site: DemoSite, lake_env: dict[str, str]
) -> None:
    path = recipe(
        tmp_path,
        "hostile",
        follow=[{"allow": "/hostile/"}],
        item_urls="/hostile/(ok|slow|bomb|latin1|broken|binary)$",
        limits={"timeout": 3, "bytes": 4 * 1024 * 1024, "give_up": 10},
    )
    summary, stderr = crawl_stats(path, demo_site.url + "/hostile/", lake_env)
    assert summary["finish_reason"] == "finished"
    stats = summary["stats"]
    assert isinstance(stats, dict)
    assert stats.get("harvest/skipped/not_text") == 1
    assert stats.get("harvest/skipped/bad_encoding") == 1
    assert stats.get("harvest/skipped/too_large") == 1
    assert stats.get("retry/reason_count/scrapy.exceptions.DownloadTimeoutError", 0) >= 1
    assert stats.get("retry/max_reached") == 1  # the page that never finishes, given up
    assert stats.get("harvest/failed/DownloadTimeoutError") == 1
    assert f"gave up on {demo_site.url}/hostile/slow" in stderr
    assert "Traceback" not in stderr
    account = summary["account"]
    assert isinstance(account, dict)
    assert account["given_up"] == {
        "DownloadTimeoutError": 1,
        "bad_encoding": 1,
        "not_text": 1,
        "too_large": 1,
    }
    assert "account: gave up on 4 pages" in stderr
    raw = Lake(lake_env["HARVEST_LAKE"]).read("raw/hostile")
    urls = sorted(u.rsplit("/", 1)[1] for u in raw["url"].to_pylist())
    assert urls == ["broken", "ok"]  # broken HTML still parses; the gate judges it


def test_a_crawl_that_gave_up_on_pages_fails_with_its_account(
    tmp_path: Path, demo_site: DemoSite, lake_env: dict[str, str]
) -> None:
    path = recipe(
        tmp_path,
        "giveup",
        follow=[{"allow": "/hostile/(binary|latin1)$"}],
        item_urls="/hostile/",
    )
    args = ["crawl", str(path), "--start-url", demo_site.url + "/hostile/", "--no-curate"]
    proc = run_harvest(args, lake_env, check=False)
    assert proc.returncode == 3
    assert "account: gave up on 2 pages: 1 bad_encoding, 1 not_text" in proc.stderr
    assert "more than its limits.give_up (0)" in proc.stderr
    assert last_json(proc.stdout)["account"]["given_up_total"] == 2  # type: ignore[index]
    runs = Lake(lake_env["HARVEST_LAKE"]).read("runs").to_pylist()
    (stored,) = [d for d in map(json.loads, (r["details"] for r in runs)) if "account" in d]
    assert stored["account"]["given_up"] == {"bad_encoding": 1, "not_text": 1}


def test_page_and_depth_limits_bound_a_crawl(
    tmp_path: Path, demo_site: DemoSite, lake_env: dict[str, str]
) -> None:
    path = recipe(tmp_path, "bounded", limits={"depth": 1})
    summary, _ = crawl_stats(path, demo_site.url + "/", lake_env)
    # depth 1: the first listing's articles and page 2, nothing behind it
    assert summary["items"] == 20


class Counting(BaseHTTPRequestHandler):
    """A listing of articles that each take a while to answer; counts the most answers
    under way at once."""

    articles = 40
    lock = threading.Lock()
    now = 0
    most = 0

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path in ("/", ""):
            links = "".join(
                f'<li><a href="/article/{n}">{n}</a></li>' for n in range(self.articles)
            )
            return self.answer(f'<ul class="articles">{links}</ul><nav class="pagination"></nav>')
        if not self.path.startswith("/article/"):
            self.send_error(404)
            return None
        cls = type(self)
        with cls.lock:
            cls.now += 1
            cls.most = max(cls.most, cls.now)
        try:
            time.sleep(random.uniform(0.02, 0.08))
            n = self.path.rsplit("/", 1)[1]
            self.answer(
                f'<h1 class="title">Article {n}</h1><span class="author">A. Writer</span>'
                f'<time datetime="2026-01-0{int(n) % 9 + 1}"></time>'
                f'<div class="body"><p>{"The text of an article, long enough. " * 3}</p></div>'
            )
        finally:
            with cls.lock:
                cls.now -= 1

    def answer(self, body: str) -> None:
        data = f"<html><body>{body}</body></html>".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def test_a_site_never_gets_more_requests_at_once_than_its_limit(
    tmp_path: Path, lake_env: dict[str, str]
) -> None:
    # Scrapy 2.19 alone started every request waiting in a site's queue at once
    limit = random.randint(1, 4)
    path = recipe(tmp_path, "polite", settings={"CONCURRENT_REQUESTS_PER_DOMAIN": limit})
    Counting.now = Counting.most = 0
    with serving(Counting) as url:
        summary, _ = crawl_stats(path, url + "/", lake_env)
    assert summary["items"] == Counting.articles
    assert 1 <= Counting.most <= limit, f"{Counting.most} at once against a limit of {limit}"
