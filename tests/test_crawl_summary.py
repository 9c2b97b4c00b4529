"""The crawl summary and account as `harvest crawl` prints them: the same keys, whichever
way the crawl ran (one process, one worker of several, several merged)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

from harvest.crawl import CrawlSummary
from harvest.workers import merge
from spiders.account import account

STATS = {
    "response_received_count": 12,
    "item_scraped_count": 10,
    "harvest/rows_committed": 9,
    "finish_reason": "finished",
    "start_time": datetime(2024, 5, 1, tzinfo=UTC),
    "harvest/resume": True,
    "scheduler/dequeued/redis": 14,
    "downloader/response_bytes": 5120.5,
}
HEADLINE = ["crawl_id", "resumed", "pages", "items", "rows_committed", "finish_reason", "stats"]


def test_one_process_and_one_worker_print_what_they_always_printed() -> None:
    one = CrawlSummary.from_stats(STATS, "c1", resumed=False)
    printed = one.to_dict()
    assert list(printed) == HEADLINE
    assert (printed["pages"], printed["items"], printed["rows_committed"]) == (12, 10, 9)
    # only numbers, bools and times left out, sorted by name
    assert printed["stats"] == {
        "downloader/response_bytes": 5120.5,
        "harvest/rows_committed": 9,
        "item_scraped_count": 10,
        "response_received_count": 12,
        "scheduler/dequeued/redis": 14,
    }
    worker = replace(one, requests=14)
    line = json.loads(json.dumps(worker.to_dict()))
    assert list(line) == [*HEADLINE, "requests"]
    # the parent reads a worker's last line back into the summary it printed
    assert CrawlSummary.from_dict(line) == worker


def test_workers_merge_into_their_sum_and_each_ones_share() -> None:
    a = replace(CrawlSummary.from_stats(STATS, "c", resumed=False), requests=14)
    b = CrawlSummary(
        "c", False, 3, 2, 2, "shutdown", {"item_scraped_count": 2, "retry/count": 1}, 4
    )
    merged = replace(merge([(1, 101, a), (2, 102, b)]), crawl_id="c", resumed=True)
    printed = merged.to_dict()
    assert list(printed) == [*HEADLINE, "workers"]
    assert (merged.pages, merged.items, merged.rows_committed) == (15, 12, 11)
    assert merged.finish_reason == "finished,shutdown"
    assert printed["stats"]["item_scraped_count"] == 12 and printed["stats"]["retry/count"] == 1
    assert printed["workers"][1] == {
        "worker": 2,
        "pid": 102,
        "pages": 3,
        "requests": 4,
        "items": 2,
        "rows_committed": 2,
        "finish_reason": "shutdown",
    }


def test_the_account_prints_every_figure_under_its_name() -> None:
    printed = account({**STATS, "harvest/failed/timeout": 2}).to_dict()
    assert list(printed) == [
        "scheduled",
        "fetched",
        "items",
        "rows",
        "retries",
        "throttled_responses",
        "banned_responses",
        "robots_disallowed",
        "offsite",
        "unchanged",
        "given_up",
        "given_up_total",
        "broken_chains",
        "suspected_blocks",
        "suspects_kept",
        "exits",
        "stalled_for",
        "forced_stop",
        "hook_errors",
    ]
    assert printed["given_up"] == {"timeout": 2} and printed["fetched"] == 12
