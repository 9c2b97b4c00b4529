"""A crawl of a rate-limited site through the direct connection learns the site's pace."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
import yaml

from harvest.demosite import DemoSite, Guard, generate
from ingestion.lake import Lake
from tests.conftest import ROOT, last_json, run_harvest

pytestmark = pytest.mark.slow


def guarded_recipe(tmp_path: Path, **settings: object) -> Path:
    data = yaml.safe_load((ROOT / "sources" / "demo.yaml").read_text())
    data.update(
        name="paced",
        follow=[
            {"allow": r"/guarded/page/\d+$", "restrict_css": "nav.pagination"},
            {"allow": "/guarded/article/", "restrict_css": "ul.articles"},
        ],
        item_urls="/guarded/article/",
        settings=settings,
    )
    path = tmp_path / "paced.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def limited() -> tuple[DemoSite, int]:
    """A site whose limit the crawler is not told: 429 + Retry-After past it."""
    limit = random.randint(8, 15)
    site = generate(60, seed=limit)
    with DemoSite(site, guard=Guard(limit=limit, window=1.0, ban_seconds=0)) as server:
        yield server, limit


def test_default_settings_get_every_page_of_a_rate_limited_site(
    tmp_path: Path, limited: tuple[DemoSite, int], lake_env: dict[str, str]
) -> None:
    server, limit = limited
    args = ["crawl", str(guarded_recipe(tmp_path)), "--start-url", server.url + "/guarded/",
            "--no-curate"]  # fmt: skip
    summary = last_json(run_harvest(args, lake_env).stdout)
    stats = summary["stats"]
    assert isinstance(stats, dict)
    assert stats["harvest/pacing/throttled"] >= 1, f"limit {limit} was never reached"
    assert summary["account"]["given_up_total"] == 0  # type: ignore[index]
    urls = Counter(Lake(lake_env["HARVEST_LAKE"]).read("raw/paced")["url"].to_pylist())
    assert len(urls) == len(server.site.articles) and set(urls.values()) == {1}


def test_without_pacing_the_same_crawl_loses_pages_and_says_so(
    tmp_path: Path, limited: tuple[DemoSite, int], lake_env: dict[str, str]
) -> None:
    server, _ = limited
    recipe = guarded_recipe(tmp_path, HARVEST_PACING=False)
    args = ["crawl", str(recipe), "--start-url", server.url + "/guarded/", "--no-curate"]
    proc = run_harvest(args, lake_env, check=False)
    assert proc.returncode == 3
    account = last_json(proc.stdout)["account"]
    assert account["given_up"].get("http_429", 0) >= 1  # type: ignore[index]
    assert "account: gave up on" in proc.stderr
