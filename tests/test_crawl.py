"""Crawls of the demo site over HTTP with Scrapy, into a real Delta lake, through the gate."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from deltalake import DeltaTable

from harvest.demosite import DemoSite, Site
from ingestion.lake import Lake
from tests.helpers import last_json, run_harvest, run_scrapy

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def crawled(
    demo_site: DemoSite, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, object], Lake, dict[str, str]]:
    base = tmp_path_factory.mktemp("crawl")
    env = {"HARVEST_LAKE": str(base / "lake"), "HARVEST_REPORTS": str(base / "reports")}
    proc = run_harvest(["crawl", "demo", "--start-url", demo_site.url + "/"], env)
    return last_json(proc.stdout), Lake(env["HARVEST_LAKE"]), env


def test_every_article_lands_in_raw_with_provenance(
    crawled: tuple[dict[str, object], Lake, dict[str, str]], site: Site
) -> None:
    summary, lake, _ = crawled
    raw = lake.read("raw/demo")
    assert summary["items"] == raw.num_rows == len(site.articles)
    assert len(set(raw["url"].to_pylist())) == len(site.articles)
    for column in ("source", "url", "crawl_id", "fetched_at", "http_status", "content_sha256"):
        assert raw[column].null_count == 0, column
    assert set(raw["crawl_id"].to_pylist()) == {summary["crawl_id"]}
    assert set(raw["http_status"].to_pylist()) == {200}
    assert set(raw["source"].to_pylist()) == {"demo"}


def test_gate_quarantines_planted_rows_with_reasons(
    crawled: tuple[dict[str, object], Lake, dict[str, str]], site: Site, demo_site: DemoSite
) -> None:
    summary, lake, _ = crawled
    invalid = {demo_site.url + a.path: a.planted for a in site.planted_invalid}
    assert summary["quarantined"] == len(invalid)
    quarantine = lake.read("quarantine/demo").to_pylist()
    reasons = {r["url"]: r["failed_expectations"] for r in quarantine}
    assert set(reasons) == set(invalid)
    expected = {
        "empty_body": "not_null(body)",
        "bad_date": "date_parses(published)",
        "too_long": "length_between(body)[30,20000]",
    }
    for url, kind in invalid.items():
        assert expected[kind] in reasons[url], (url, reasons[url])


def test_gate_drops_exact_duplicates(
    crawled: tuple[dict[str, object], Lake, dict[str, str]], site: Site, demo_site: DemoSite
) -> None:
    summary, lake, _ = crawled
    n_dup = len(site.planted_duplicates)
    assert summary["duplicates_dropped"] == n_dup
    n_near = len(site.planted_near_duplicates)
    assert summary["near_duplicates_dropped"] == n_near
    assert summary["batch_status"] == "published"
    assert summary["curated"] == len(site.articles) - len(site.planted_invalid) - n_dup - n_near
    curated = lake.read("curated/demo")
    hashes = curated["content_sha256"].to_pylist()
    assert len(hashes) == len(set(hashes))
    urls = set(curated["url"].to_pylist())
    for copy in site.planted_duplicates:
        pair = {demo_site.url + copy.path, f"{demo_site.url}/article/{copy.original}"}
        assert len(pair & urls) == 1
    assert str(curated.schema.field("published").type) == "date32[day]"


def test_curated_is_readable_without_the_project(
    crawled: tuple[dict[str, object], Lake, dict[str, str]],
) -> None:
    summary, lake, _ = crawled
    files = DeltaTable(lake.uri("curated/demo")).file_uris()
    con = duckdb.connect()
    n, labelled = con.execute(
        "select count(*), count(distinct content_sha256) from read_parquet(?)", [files]
    ).fetchone()  # type: ignore[misc]
    assert n == labelled == summary["curated"]


def test_report_is_written(crawled: tuple[dict[str, object], Lake, dict[str, str]]) -> None:
    summary, _, _ = crawled
    report = Path(str(summary["report"]))
    html = report.read_text()
    assert "date_parses(published)" in html
    figures = json.loads(report.with_suffix(".json").read_text())
    assert figures["summary"]["quarantined"] == summary["quarantined"]


def test_curate_again_finds_nothing_new(
    crawled: tuple[dict[str, object], Lake, dict[str, str]],
) -> None:
    _, lake, env = crawled
    before = lake.version("curated/demo")
    again = last_json(run_harvest(["curate", "demo"], env).stdout)
    assert again["rows_in"] == 0
    assert lake.version("curated/demo") == before


def test_recrawl_of_unchanged_pages_adds_nothing(
    crawled: tuple[dict[str, object], Lake, dict[str, str]], site: Site, demo_site: DemoSite
) -> None:
    """Unchanged pages answer 304 to a recrawl: nothing new in raw, nothing to curate."""
    _, lake, env = crawled
    raw_before = lake.read("raw/demo").num_rows
    curated_before = lake.read("curated/demo").num_rows
    args = ["crawl", "demo", "--start-url", demo_site.url + "/"]
    second = last_json(run_harvest(args, env).stdout)
    assert second["items"] == 0
    assert second["stats"]["harvest/incremental/unchanged"] == len(site.articles)  # type: ignore[index]
    assert second["curated"] == 0
    assert lake.read("raw/demo").num_rows == raw_before
    assert lake.read("curated/demo").num_rows == curated_before


def test_unreachable_site_is_a_clear_error(lake_env: dict[str, str]) -> None:
    from tests.helpers import free_port

    url = f"http://127.0.0.1:{free_port()}/"
    proc = run_harvest(["crawl", "demo", "--start-url", url], lake_env, check=False)
    assert proc.returncode == 69  # unavailable: retry later (README: exit codes)
    assert f"got no response from {url}" in proc.stderr


def test_hand_written_spider_runs_with_scrapy_crawl(
    demo_site: DemoSite, site: Site, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    proc = run_scrapy(
        [
            "crawl",
            "demo_news",
            "-a",
            f"url={demo_site.url}/",
            "-s",
            f"HARVEST_LAKE={lake}",
            "-s",
            "LOG_LEVEL=WARNING",
        ]
    )
    assert proc.returncode == 0, proc.stderr
    raw = Lake(lake).read("raw/demo_news")
    assert raw.num_rows == len(site.articles)
    assert set(raw["source"].to_pylist()) == {"demo_news"}
