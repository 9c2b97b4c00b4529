"""The recipe-authoring loop: `harvest crawl --pages N` for a quick look, and `harvest
recipe try` on one page."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from harvest.demosite import DemoSite, generate
from ingestion.lake import Lake
from tests.helpers import last_json, run_harvest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site() -> Iterator[DemoSite]:
    with DemoSite(generate(40, seed=17)) as server:
        yield server


def test_pages_stops_the_crawl_after_that_many(site: DemoSite, tmp_path: Path) -> None:
    pages = random.randint(1, 12)
    env = {"HARVEST_LAKE": str(tmp_path / "lake"), "HARVEST_REPORTS": str(tmp_path / "r")}
    before = len(site.requests)
    args = ["crawl", "demo", "--no-curate", "--pages", str(pages), "--start-url", site.url + "/"]
    summary = last_json(run_harvest(args, env).stdout)
    fetched = [p for _, p in site.requests[before:] if p != "/robots.txt"]
    assert len(fetched) == pages, pages
    assert summary["account"]["given_up_total"] == 0
    rows = Lake(env["HARVEST_LAKE"]).read("raw/demo", columns=["url"]).num_rows
    assert rows == summary["items"] == sum(p.startswith("/article/") for p in fetched)
