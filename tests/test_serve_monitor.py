"""Drift monitoring in a real `harvest serve`: a steady stream of requests leaves the model
steady, a shifted one marks it drifted, and `retrain: on_drift` queues a run that labels
the drifted inputs and retrains."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from harvest.config import Config
from ingestion.lake import Lake
from tests.helpers import ROOT, run_harvest
from tests.service import Live
from tests.test_monitor import WINDOW, shifted, steady
from tests.test_tracking import labelled_lake


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("serve-monitor")
    live = Live(tmp)
    recipe = yaml.safe_load((ROOT / "sources" / "demo.yaml").read_text())
    recipe["monitor"] = {"window": WINDOW}
    # a crawl once a year: only drift queues a run here
    recipe["schedule"] = {"cron": "0 0 1 1 *", "retrain": "on_drift"}
    (live.sources / "demo.yaml").write_text(yaml.safe_dump(recipe))
    live.env["HARVEST_SERVE_MONITOR_EVERY"] = "1"
    cfg = Config(lake=live.env["HARVEST_LAKE"], reports=live.env["HARVEST_REPORTS"])
    labelled_lake(cfg, "demo", 120)
    run_harvest(["train", "--source", "demo", "--epochs", "2", "--model", "ngram"], live.env)
    run_harvest(["model", "promote", "harvest-demo", "1"], live.env)
    live.start()
    try:
        yield live
    finally:
        live.close()


def send(live: Live, texts: list[str]) -> None:
    for i in range(0, len(texts), 8):
        answer = live.post("/predict", json={"texts": texts[i : i + 8]})
        assert answer.status_code == 200, answer.text


def watched(live: Live, windows: int, timeout: float = 120) -> dict[str, Any]:
    """The model's drift status once ``windows`` windows were checked."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        summary = live.get("/api/summary", headers=live.auth).json()
        for m in summary.get("monitoring") or []:
            if m["model"] == "harvest-demo" and (m.get("status") or {}).get("windows") == windows:
                return dict(m)
        time.sleep(0.5)
    raise AssertionError(f"no window {windows} checked: {live.log()}")


def test_a_shifted_stream_marks_the_model_drifted_and_queues_a_retrain(live: Live) -> None:
    send(live, steady(WINDOW, seed=21))
    first = watched(live, 1)
    assert first["status"]["drifted"] is False, first
    assert [r for r in live.runs() if r["trigger"] == "drift"] == []

    send(live, shifted(WINDOW, seed=4))
    second = watched(live, 2)
    assert second["status"]["drifted"] is True, second
    assert "oov_share" in second["status"]["drifted_features"]
    # the service's own log measured every feature, the vectors encoded in its child
    logged = Lake(live.env["HARVEST_LAKE"]).read("predictions/harvest-demo")
    assert logged["centroid_distance"].null_count < logged.num_rows
    assert logged["oov_share"].null_count == 0
    assert [w["drifted"] for w in second["history"]][0] == []
    deadline = time.monotonic() + 30
    while not (queued := [r for r in live.runs() if r["trigger"] == "drift"]):
        assert time.monotonic() < deadline, live.log()
        time.sleep(0.5)
    (run,) = queued
    assert run["source"] == "demo"
    # the service logs no text here: the push of the drifted inputs fails the run, saying
    # why, and the run never crawled
    ended = live.wait_run(run["id"], lambda r: r["status"] in ("finished", "failed"))
    assert ended["status"] == "failed"
    steps = (live.tmp / "reports" / "runs" / f"{ended['id']}.log").read_text()
    assert steps.startswith("$ harvest label push demo --drifted harvest-demo"), steps
    assert "set serve.log_text = true" in steps and "harvest crawl" not in steps
    assert "Traceback" not in steps
    page = live.get("/", headers=live.auth)
    assert page.status_code == 200 and "drifted" in page.text
