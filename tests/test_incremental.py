"""A recrawl fetches only what changed and records what was new, changed or gone."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pytest

from harvest.demosite import DemoSite, generate
from ingestion.lake import Lake
from tests.helpers import last_json, run_harvest

pytestmark = pytest.mark.slow


def crawl(server: DemoSite, env: dict[str, str]) -> dict[str, object]:
    args = ["crawl", "demo", "--start-url", server.url + "/", "--no-curate"]
    return last_json(run_harvest(args, env).stdout)


def changes(lake: Lake, crawl_id: object) -> dict[str, str]:
    table = lake.read("changes/demo")
    mine = table.filter(pc.equal(table["crawl_id"], crawl_id)).to_pylist()
    return {r["url"]: r["change"] for r in mine}


@pytest.mark.parametrize("etags", [True, False], ids=["conditional", "content-hash"])
def test_recrawl_fetches_and_records_only_changes(
    tmp_path: Path, lake_env: dict[str, str], etags: bool
) -> None:
    site = generate(60, seed=9)
    lake = Lake(lake_env["HARVEST_LAKE"])
    with DemoSite(site, etags=etags) as server:
        first = crawl(server, lake_env)
        assert first["items"] == 60
        assert set(changes(lake, first["crawl_id"]).values()) == {"new"}

        valid = [a for a in site.articles if not a.planted and a.paragraphs]
        edited, removed = valid[:2], valid[2]
        for article in edited:
            article.paragraphs = [*article.paragraphs, "A correction was appended."]
        server.remove(removed.slug)
        before = len(server.requests)
        second = crawl(server, lake_env)

    stats = second["stats"]
    assert isinstance(stats, dict)
    assert stats["harvest/incremental/unchanged"] == 57
    assert stats["harvest/incremental/changed"] == 2
    assert stats["harvest/incremental/gone"] == 1
    assert "harvest/incremental/new" not in stats
    # with validators the unchanged pages come back empty, as 304; without, they are compared
    assert stats.get("downloader/response_status_count/304", 0) == (57 if etags else 0)
    assert second["rows_committed"] == 2
    raw = lake.read("raw/demo")
    assert raw.num_rows == 62
    urls = {server.url + a.path: a for a in edited}
    assert changes(lake, second["crawl_id"]) == {
        **dict.fromkeys(urls, "changed"),
        server.url + removed.path: "gone",
    }
    article_fetches = [p for _, p in server.requests[before:] if p.startswith("/article/")]
    assert len(article_fetches) == 59  # every page still listed was asked for once
