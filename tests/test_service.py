"""`harvest serve` for real on loopback: triggers, the run history, 401s, 4xx, the webhook
secret, a service killed mid-run, a time limit and a clean SIGTERM."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from harvest.demosite import DemoSite
from harvest.service.runs import RunStore
from tests.service import DONE, SLOW, Live, write_recipe

pytestmark = pytest.mark.slow


def test_trigger_record_and_refuse(live: Live, demo_site: DemoSite) -> None:
    write_recipe(live.sources, "news", demo_site)
    live.start()
    body = {"source": "news"}

    # changes need the token: without it (or with a wrong one) 401 and no run
    assert live.post("/crawls", auth=False, json=body).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert live.post("/crawls", auth=False, json=body, headers=wrong).status_code == 401
    assert live.post("/datasets", auth=False, json={}).status_code == 401
    assert live.post("/exports", auth=False, json={"dataset": "x"}).status_code == 401
    assert live.runs() == []

    # bad requests: 4xx with a message, nothing started
    for bad, status in [
        ({"source": "nope"}, 404),
        ({"source": "../etc/passwd"}, 422),
        ({"sauce": "news"}, 422),
        ({}, 422),
    ]:
        answer = live.post("/crawls", json=bad)
        assert answer.status_code == status, (bad, answer.text)
        assert answer.json()["detail"]
    assert (
        live.post(
            "/crawls", data=b"{not json", headers={"Content-Type": "application/json"}
        ).status_code
        == 422
    )
    assert live.runs() == []
    assert live.get("/runs/12345").status_code == 404
    assert live.get("/runs/0").status_code == 422
    assert live.get("/runs", params={"status": "sleeping"}).status_code == 422
    assert live.get("/runs", params={"limit": 0}).status_code == 422
    assert live.get("/datasets/none").status_code == 404
    assert live.get("/models/none").status_code == 404
    assert live.get("/labels/none").status_code == 404
    answer = live.post("/exports", json={"dataset": "none"})
    assert answer.status_code == 404 and "none" in answer.json()["detail"]
    answer = live.post(
        "/datasets",
        json={"name": "d", "sources": ["news"], "labels": "news", "split": "0.9/0.9/0.9"},
    )
    assert answer.status_code == 422, answer.text

    # the webhook has its own secret: the API token is not it
    event = {"action": "ANNOTATION_CREATED", "project": {"id": 1}}
    assert live.post("/webhooks/label-studio", json=event).status_code == 401
    assert live.post("/webhooks/label-studio", auth=False, json=event).status_code == 401
    hook = {"Authorization": f"Bearer {live.secret}"}
    answer = live.post("/webhooks/label-studio", auth=False, data=b"{", headers=hook)
    assert answer.status_code == 400
    answer = live.post("/webhooks/label-studio", auth=False, json=event, headers=hook)
    assert answer.status_code == 404 and "no source's project" in answer.json()["detail"]

    started = live.post("/crawls", json=body)
    assert started.status_code == 202, started.text
    run = started.json()
    assert (run["source"], run["trigger"], run["status"]) == ("news", "manual", "queued")
    again = live.post("/crawls", json=body)
    assert again.status_code == 409 and f"run {run['id']}" in again.json()["detail"]

    done = live.wait_run(run["id"], lambda r: r["status"] in DONE)
    assert done["status"] == "finished", done
    counts = done["counts"]
    assert counts["requests"] > 0 and counts["items"] > 0 and counts["bans"] == 0
    assert counts["curated"] + counts["quarantined"] <= counts["items"]
    assert done["started_at"] <= done["ended_at"] and done["error"] is None
    log = Path(done["log_path"])
    assert log.parent == live.tmp / "reports" / "runs" and log.name == f"{run['id']}.log"
    assert "$ harvest crawl news" in log.read_text()
    assert [r["id"] for r in live.runs(source="news", status="finished")] == [run["id"]]
    assert live.runs(status="running") == []

    sources = live.get("/sources").json()
    assert [(s["source"], s["schedule"], s["next_run"]) for s in sources] == [("news", None, None)]
    assert sources[0]["last_run"]["id"] == run["id"]
    progress = live.get("/labels/news").json()
    assert progress["curated"] == counts["curated"] and progress["labelled"] == 0
    assert live.get("/datasets").json() == []
    assert live.get("/models").json() == []
    # the lock is released: the source runs again
    assert live.post("/crawls", json=body).status_code == 202
    assert live.stop() == 0


def test_killed_service_interrupted_run_time_limit_and_sigterm(
    live: Live, demo_site: DemoSite
) -> None:
    write_recipe(live.sources, "slow", demo_site, SLOW, pages=None)
    write_recipe(
        live.sources,
        "limited",
        demo_site,
        SLOW,
        pages=None,
        schedule={"cron": "0 0 1 1 *", "time_limit": 4},
    )
    live.start()
    run = live.post("/crawls", json={"source": "slow"}).json()
    running = live.wait_run(run["id"], lambda r: r["status"] == "running" and r["pid"])
    crawl_pid = running["pid"]
    # the crawl reports its progress while it runs
    seen = live.wait_run(run["id"], lambda r: r["progress"] is not None)
    assert seen["status"] == "running" and seen["progress"]["pages"] >= 0

    assert live.stop(signal.SIGKILL) == -signal.SIGKILL
    os.kill(crawl_pid, 0)  # the crawl outlived the service that started it

    live.start()
    after = live.get(f"/runs/{run['id']}").json()
    assert after["status"] == "interrupted" and after["ended_at"] and after["pid"] is None
    assert "stopped" in after["error"]
    # ... and the new service killed it, so it cannot crawl beside the next run
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(crawl_pid):
        time.sleep(0.1)
    assert not _alive(crawl_pid)

    # past its schedule's time limit a run is killed
    limited = live.post("/crawls", json={"source": "limited"}).json()
    timed = live.wait_run(limited["id"], lambda r: r["status"] in DONE)
    assert timed["status"] == "timed_out", timed
    assert "time limit of 4 s" in timed["error"]

    # SIGTERM: the running crawl stops gracefully, is recorded interrupted, exit 0
    second = live.post("/crawls", json={"source": "slow"}).json()
    live.wait_run(second["id"], lambda r: r["progress"] is not None)
    assert live.stop(signal.SIGTERM) == 0
    store = RunStore(live.tmp / "service" / "runs.db")
    stopped = store.get(second["id"])
    assert stopped is not None and stopped["status"] == "interrupted", stopped
    assert "the service stopped during crawl" in (stopped["error"] or "")
    log = Path(stopped["log_path"]).read_text()
    assert '"finish_reason": "shutdown"' in log  # Scrapy closed the crawl itself
    assert store.active() == []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except OSError:
        return False
    return state != "Z"
