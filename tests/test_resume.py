"""A crawl killed with SIGKILL is resumed by the next crawl and ends with each page once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from harvest.demosite import DemoSite, Site
from ingestion.lake import Lake
from tests.helpers import ROOT, last_json, run_harvest

pytestmark = pytest.mark.slow


def slow_recipe(tmp_path: Path) -> Path:
    data = yaml.safe_load((ROOT / "sources" / "demo.yaml").read_text())
    data["name"] = "resume"
    # one page at a time, so the kill lands mid-crawl
    data["settings"] = {"CONCURRENT_REQUESTS": 1, "DOWNLOAD_DELAY": 0.03}
    path = tmp_path / "resume.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_killed_crawl_resumes_with_each_article_once(
    tmp_path: Path, demo_site: DemoSite, site: Site
) -> None:
    env = {
        "HARVEST_LAKE": str(tmp_path / "lake"),
        "HARVEST_REPORTS": str(tmp_path / "reports"),
        "HARVEST_CRAWL_BATCH_SIZE": "10",
    }
    recipe = slow_recipe(tmp_path)
    args = ["crawl", str(recipe), "--start-url", demo_site.url + "/", "--no-curate"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "harvest.cli", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    lake = Lake(env["HARVEST_LAKE"])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (lake.version("raw/resume") or 0) < 3:
        assert proc.poll() is None, "the crawl finished before it could be killed"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = lake.read("raw/resume")
    committed = set(before["url"].to_pylist())
    assert 30 <= len(committed) < len(site.articles)
    seen_at_kill = len(demo_site.requests)

    summary = last_json(run_harvest(args, env).stdout)
    assert summary["resumed"] is True
    assert summary["crawl_id"] == before["crawl_id"][0].as_py()
    raw = lake.read("raw/resume")
    counts = Counter(raw["url"].to_pylist())
    assert len(counts) == len(site.articles)
    assert set(counts.values()) == {1}
    assert set(raw["crawl_id"].to_pylist()) == {summary["crawl_id"]}
    refetched = {path for _, path in demo_site.requests[seen_at_kill:]}
    assert not {u.removeprefix(demo_site.url) for u in committed} & refetched

    again = last_json(run_harvest(args, env).stdout)
    assert again["resumed"] is False and again["crawl_id"] != summary["crawl_id"]
