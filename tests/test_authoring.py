"""The recipe-authoring loop: `harvest crawl --pages N` for a quick look, and `harvest
recipe try` on one page."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harvest.demosite import DemoSite, generate
from ingestion.lake import Lake
from tests.helpers import free_port, last_json, run_harvest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site() -> Iterator[DemoSite]:
    with DemoSite(generate(40, seed=17)) as server:
        yield server


@pytest.fixture
def browser_env_try() -> dict[str, str]:
    # the browser kept off every host but loopback, as in test_render
    return {"HARVEST_BROWSER_ARGS": '--host-resolver-rules="MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"'}


def test_pages_stops_the_crawl_after_that_many(site: DemoSite, tmp_path: Path) -> None:
    pages = random.randint(1, 12)
    env = {"HARVEST_LAKE": str(tmp_path / "lake"), "HARVEST_REPORTS": str(tmp_path / "r")}
    before = len(site.requests)
    args = ["crawl", "demo", "--no-curate", "--pages", str(pages), "--start-url", site.url + "/"]
    summary = last_json(run_harvest(args, env).stdout)
    fetched = [p for _, p in site.requests[before:] if p != "/robots.txt"]
    assert len(fetched) == pages, pages
    assert summary["account"]["given_up_total"] == 0
    lake = Lake(env["HARVEST_LAKE"])
    rows = lake.read("raw/demo", columns=["url"]).num_rows if lake.exists("raw/demo") else 0
    assert rows == summary["items"] == sum(p.startswith("/article/") for p in fetched)


def try_page(args: list[str], env: dict[str, str] | None = None) -> tuple[dict[str, Any], str]:
    proc = run_harvest(["recipe", "try", *args], env or {})
    return last_json(proc.stdout), proc.stderr


def test_try_shows_each_field_and_what_each_rule_follows(site: DemoSite, tmp_path: Path) -> None:
    article = random.choice(site.site.articles)
    found, said = try_page(["demo", site.url + article.path])
    assert found["item"] and not found["rendered"]
    fields = found["fields"]
    assert (fields["title"]["value"], fields["author"]["value"]) == (article.title, article.author)
    assert f"  author: {article.author!r}" in said
    listing, _ = try_page(["demo", site.url + "/"])
    assert not listing["item"] and "item_urls" in listing["item_why_not"]
    assert fields["title"]["value"] not in (None, "")
    assert listing["fields"]["title"] == {"value": None, "why": "'h1.title::text' matched nothing"}
    pagination, articles = listing["follow"]
    assert articles["links"] and all("/article/" in u for u in articles["links"])
    assert pagination["links"] == [site.url + "/page/2"]


def test_try_renders_what_the_recipe_renders(
    site: DemoSite, browser_env_try: dict[str, str]
) -> None:
    article = random.choice(site.site.articles)
    found, _ = try_page(["demo_js", f"{site.url}/js{article.path}"], browser_env_try)
    assert found["rendered"]
    assert found["fields"]["body"]["value"]  # only a browser sees the body
    plain, _ = try_page(
        ["demo_js", f"{site.url}/js{article.path}", "--render", "http"], browser_env_try
    )
    assert plain["fields"]["body"]["value"] is None


def test_try_of_a_page_that_does_not_answer_says_so(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/article/x"
    proc = run_harvest(["recipe", "try", "demo", url], {}, check=False)
    assert proc.returncode == 69
    assert f"recipe try of {url}: " in proc.stderr
    assert "error" in last_json(proc.stdout)
