"""Schedules of the real service: a cron a couple of seconds apart fires and never overlaps
itself; slots missed while the service was down make one run when it starts again."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from harvest.demosite import DemoSite
from harvest.service.runs import RunStore
from tests.service import DONE, SLOW, Live, write_recipe

pytestmark = pytest.mark.slow


def test_schedule_fires_and_never_overlaps(live: Live, demo_site: DemoSite) -> None:
    # every 2 seconds, with a crawl that takes longer than that
    write_recipe(
        live.sources,
        "every2",
        demo_site,
        SLOW,
        pages=4,
        schedule={"cron": "*/2 * * * * *", "timezone": "Europe/Paris"},
    )
    live.start()
    source = live.get("/sources").json()[0]
    assert source["schedule"]["cron"] == "*/2 * * * * *"
    assert source["next_run"] is not None

    busy_answers = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        runs = live.runs(source="every2")
        active = [r for r in runs if r["status"] in ("queued", "running")]
        assert len(active) <= 1, runs
        if active:
            # a manual trigger meets the same lock as the schedule
            answer = live.post("/crawls", json={"source": "every2"})
            busy_answers += answer.status_code == 409
            assert answer.status_code in (202, 409), answer.text
        if sum(r["status"] == "finished" and r["trigger"] == "schedule" for r in runs) >= 2:
            break
        time.sleep(0.25)
    assert live.stop() == 0
    runs = sorted(RunStore(live.tmp / "service" / "runs.db").list(), key=lambda r: r["id"])
    scheduled = [r for r in runs if r["trigger"] == "schedule"]
    assert len(scheduled) >= 2, runs
    assert all(r["status"] in DONE for r in runs)
    assert busy_answers > 0
    # one run at a time: each starts after the one before it ended
    for before, after in zip(runs, runs[1:], strict=False):
        if before["status"] == "finished":
            assert before["ended_at"] <= after["started_at"], (before, after)
    assert all(r["counts"]["items"] for r in scheduled if r["status"] == "finished")


def test_missed_slots_run_once_after_a_restart(live: Live, demo_site: DemoSite) -> None:
    # three slots two seconds apart, in one minute, after the first service has stopped:
    # written once it runs (a changed recipe is rescheduled, GET /sources looks first), so
    # 12 s need only cover stopping it on a loaded 2-core machine
    live.start()
    first = (datetime.now(UTC) + timedelta(seconds=12)).replace(microsecond=0)
    if first.second > 55:
        first = first.replace(second=0) + timedelta(minutes=1)
    slots = [first + timedelta(seconds=2 * i) for i in range(3)]
    seconds = ",".join(str(s.second) for s in slots)
    cron = f"{seconds} {first.minute} {first.hour} * * *"
    write_recipe(
        live.sources, "daily", demo_site, pages=4, schedule={"cron": cron, "timezone": "UTC"}
    )
    source = live.get("/sources").json()[0]
    assert datetime.fromisoformat(source["next_run"]) == slots[0]
    assert live.stop() == 0
    assert datetime.now(UTC) < slots[0], "the first service stopped too late for this test"
    assert RunStore(live.tmp / "service" / "runs.db").list() == []

    time.sleep(max(0.0, (slots[-1] - datetime.now(UTC)).total_seconds()) + 1.5)
    live.start()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not live.runs():
        time.sleep(0.2)
    runs = live.runs()
    assert len(runs) == 1, runs
    assert runs[0]["trigger"] == "schedule"
    done = live.wait_run(runs[0]["id"], lambda r: r["status"] in DONE)
    assert done["status"] == "finished", done
    time.sleep(3)  # long enough for a second catch-up run to have started
    assert len(live.runs()) == 1
    # the next slot is tomorrow's
    source = live.get("/sources").json()[0]
    assert datetime.fromisoformat(source["next_run"]) == slots[0] + timedelta(days=1)
    assert live.stop() == 0
