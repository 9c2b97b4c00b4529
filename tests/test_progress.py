"""Crawl progress for programs: `harvest crawl --progress-file` appends its counts as JSON
lines, and the service reads the latest whole one."""

from __future__ import annotations

import json
from pathlib import Path

from harvest.demosite import DemoSite
from harvest.recipe import load_recipe
from harvest.service.runner import steps
from harvest.service.runs import progress_path, read_progress
from tests.helpers import last_json, run_harvest
from tests.service import write_recipe

KEYS = {"pages", "items", "committed", "errors"}


def test_the_service_reads_the_last_whole_line(tmp_path: Path) -> None:
    path = progress_path(tmp_path / "7.log")
    assert path.name == "7.progress.jsonl"
    assert read_progress(path) is None  # the crawl has not written yet
    path.write_text(
        '{"pages": 3, "items": 2, "committed": 0, "errors": 0}\n'
        '{"pages": 9, "items": 8, "committed": 5, "errors": 1}\n'
        '{"pages": 12, "ite'  # the crawl is writing its next line
    )
    assert read_progress(path) == {"pages": 9, "items": 8, "committed": 5, "errors": 1}
    path.write_text("not counts\n")
    assert read_progress(path) is None


def test_a_run_s_crawl_writes_beside_its_log(tmp_path: Path, demo_site: DemoSite) -> None:
    recipe = load_recipe(write_recipe(tmp_path / "sources", "news", demo_site))
    log = tmp_path / "runs" / "3.log"
    beside = str(tmp_path / "runs" / "3.progress.jsonl")
    assert steps(recipe, "news", progress_path(log))[0][2:] == ["--progress-file", beside]


def test_a_crawl_appends_its_counts_as_json_lines(tmp_path: Path, demo_site: DemoSite) -> None:
    settings = {"HARVEST_PROGRESS_INTERVAL": 0.2, "CONCURRENT_REQUESTS": 1, "DOWNLOAD_DELAY": 0.2}
    write_recipe(tmp_path / "sources", "news", demo_site, settings, pages=8)
    env = {
        "HARVEST_LAKE": str(tmp_path / "lake"),
        "HARVEST_REPORTS": str(tmp_path / "reports"),
        "HARVEST_SOURCES": str(tmp_path / "sources"),
    }
    path = tmp_path / "progress" / "news.jsonl"
    proc = run_harvest(["crawl", "news", "--no-curate", "--progress-file", str(path)], env)
    summary = last_json(proc.stdout)

    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) >= 2  # while it ran, and once more as it closed
    assert all(set(line) == KEYS for line in lines)
    assert [line["pages"] for line in lines] == sorted(line["pages"] for line in lines)
    last = lines[-1]
    assert [last["pages"], last["items"], last["committed"]] == [
        summary[k] for k in ("pages", "items", "rows_committed")
    ]
    # the human line stays for people, with the same counts; the file has one more, the end
    human = [line for line in proc.stderr.splitlines() if line.startswith("crawl news: ")]
    assert human == [
        "crawl news: " + " ".join(f"{k}={v}" for k, v in line.items()) for line in lines[:-1]
    ]

    # a crawl of several processes has no one place to count
    proc = run_harvest(
        ["crawl", "news", "--workers", "2", "--progress-file", str(path)], env, check=False
    )
    assert proc.returncode == 2 and "--progress-file" in proc.stderr
