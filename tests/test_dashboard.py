"""The summary the dashboard and `harvest status` show, the page, and the page in Chromium."""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml

from harvest.config import Config
from harvest.service import dashboard, summary
from ingestion.lake import Lake
from ingestion.runs import CRAWL_STAGE, CURATE_STAGE, record_run
from labeling.store import LabelStore
from labeling.tasktypes import SINGLE
from spiders.render import CHROMIUM, CHROMIUM_ARGS
from tests.helpers import ROOT, last_json, run_harvest

SOURCE = "shop"
CLASSES = ["World", "Sports", "Business", "Sci/Tech"]
# (curated, quarantined) of each curate run, oldest first
CURATES = [(90, 10), (45, 5), (38, 12)]


class ListStore:
    """Run history held in a list, newest last, answering as the service's RunStore does."""

    def __init__(self, runs: list[dict[str, Any]] | None = None):
        self.runs = list(runs or [])
        self.lock = threading.Lock()

    def add(self, **run: Any) -> dict[str, Any]:
        with self.lock:
            row = {
                "id": len(self.runs) + 1,
                "source": SOURCE,
                "trigger": "manual",
                "started_at": datetime.now(UTC).isoformat(),
                "ended_at": None,
                "status": "finished",
                "counts": {"requests": 0, "items": 0, "curated": 0, "quarantined": 0, "bans": 0},
                "log_path": None,
                "error": None,
                "progress": None,
                **run,
            }
            self.runs.append(row)
            return row

    def list(
        self, limit: int = 50, source: str | None = None, status: str | None = None
    ) -> list[dict[str, Any]]:
        with self.lock:
            mine = [
                r
                for r in reversed(self.runs)
                if (source is None or r["source"] == source)
                and (status is None or r["status"] == status)
            ]
        return mine[:limit]

    def get(self, run_id: int) -> dict[str, Any] | None:
        return next((r for r in self.runs if r["id"] == run_id), None)


def write_recipe(folder: Path, name: str, schedule: dict[str, Any] | None) -> None:
    recipe = yaml.safe_load((ROOT / "sources" / "demo.yaml").read_text())
    recipe["name"] = name
    if schedule:
        recipe["schedule"] = schedule
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(recipe))


def fill_lake(lake: Lake) -> None:
    """A source crawled once and curated three times, with quarantine and labels."""
    record_run(lake, CRAWL_STAGE, SOURCE, {"crawl_id": "c1", "state": "finished", "rows": 200})
    for i, (curated, quarantined) in enumerate(CURATES):
        record_run(
            lake,
            CURATE_STAGE,
            SOURCE,
            {
                "raw_version": i,
                "rows_in": curated + quarantined,
                "curated": curated,
                "quarantined": quarantined,
                "batch_status": "published",
            },
        )
    total = sum(c for c, _ in CURATES)
    lake.append(
        f"curated/{SOURCE}",
        pa.table({"url": [f"http://shop/{i}" for i in range(total)], "body": ["text"] * total}),
    )
    lake.append(
        f"quarantine/{SOURCE}",
        pa.table(
            {
                "url": ["http://shop/q1", "http://shop/q2"],
                "failed_expectations": [["length_between:body"], ["length_between:body"]],
            }
        ),
    )
    # six labelled tasks: three World, two Sports, one Business; task 1 relabelled
    labels = ["World", "World", "World", "Sports", "Sports", "Business"]
    annotations = [
        {
            "task_id": t,
            "annotation_id": t,
            "row_id": f"r{t}",
            "url": f"http://shop/{t}",
            "annotator": 1 + t % 2,
            "value": label,
            "updated_at": f"2024-05-0{t}T10:00:00Z",
        }
        for t, label in enumerate(labels, start=1)
    ]
    annotations.append(
        {
            **annotations[0],
            "annotation_id": 99,
            "value": "Sci/Tech",
            "updated_at": "2024-05-01T09:00:00Z",
        }
    )
    LabelStore.for_source(lake, SOURCE, SINGLE).replace(annotations)


def register_model(config: Config, folder: Path) -> None:
    """A trained model as train_tracked records one: epochs, test metrics, the report's
    metrics.json with the confusion matrix, registered and promoted to champion."""
    from training import registry
    from training.tracking import Store, run

    store = Store(config.tracking)
    report = folder / "report"
    report.mkdir(parents=True)
    confusion = [[40, 3, 2, 1], [2, 45, 1, 0], [4, 1, 38, 6], [1, 0, 5, 41]]
    (report / "metrics.json").write_text(
        json.dumps({"test": {"confusion": confusion, "classes": CLASSES, "macro_f1": 0.86}})
    )
    name = registry.model_name("news")
    with run(store, name, "news-v1", {"harvest.dataset": "news"}) as r:
        for epoch, (train, val, f1) in enumerate(
            [(1.2, 1.1, 0.55), (0.8, 0.85, 0.71), (0.5, 0.7, 0.80), (0.35, 0.68, 0.84)], start=1
        ):
            r.metrics({"train_loss": train, "val_loss": val, "val_macro_f1": f1}, epoch)
        r.metrics({"test_macro_f1": 0.86, "test_accuracy": 0.87, "best_val_macro_f1": 0.84})
        r.artifact(report / "metrics.json", "report")
        r.tags({"harvest.dataset_version": 1})
        registry.register(
            store,
            name,
            r.run_id,
            f"{r.artifact_uri}/model",
            {"harvest.dataset": "news", "harvest.dataset_version": 1},
        )
    registry.promote(store, name, 1)


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Config:
    root = tmp_path_factory.mktemp("dashboard")
    config = Config(
        lake=str(root / "lake"),
        reports=str(root / "reports"),
        sources=str(root / "sources"),
        tracking_uri=f"sqlite:///{root / 'mlflow' / 'mlflow.db'}",
    )
    write_recipe(root / "sources", SOURCE, {"cron": "*/30 * * * *", "timezone": "Europe/Paris"})
    write_recipe(root / "sources", "idle", None)
    fill_lake(Lake(config.lake))
    register_model(config, root / "model")
    return config


def history() -> ListStore:
    store = ListStore()
    store.add(
        status="finished",
        trigger="schedule",
        counts={"requests": 212, "items": 200, "curated": 90, "quarantined": 10, "bans": 0},
        ended_at=datetime.now(UTC).isoformat(),
    )
    counts = {"requests": 3, "items": 0, "curated": 0, "quarantined": 0, "bans": 0}
    store.add(status="failed", error="crawl exited with 1: connection refused", counts=counts)
    store.add(status="running", progress={"pages": 57, "items": 41, "committed": 40, "errors": 0})
    return store


# -- the summary ---------------------------------------------------------------------------


def test_summary_gathers_sources_runs_rates_labels_and_models(state: Config) -> None:
    store = history()
    got = summary.build(state, store)
    json.dumps(got, allow_nan=False)  # what the API answers must be plain JSON

    by_name = {s["source"]: s for s in got["sources"]}
    assert set(by_name) == {SOURCE, "idle"}
    shop = by_name[SOURCE]
    assert shop["schedule"]["cron"] == "*/30 * * * *"
    assert shop["schedule"]["timezone"] == "Europe/Paris"
    # no scheduler was asked: the next run comes from the cron expression, within 30 minutes
    assert shop["next_run_from"] == "schedule"
    ahead = datetime.fromisoformat(shop["next_run"]) - datetime.now(UTC)
    assert 0 < ahead.total_seconds() <= 30 * 60
    assert shop["last_run"]["id"] == 3 and shop["last_run"]["status"] == "running"
    assert shop["last_crawl"]["rows"] == 200
    assert shop["last_curate"]["curated"] == 38
    assert shop["quarantine"]["rows"] == 2
    assert [p["rate"] for p in shop["pass_rates"]] == [0.9, 0.9, 0.76]
    assert [p["curated"] for p in shop["pass_rates"]] == [c for c, _ in CURATES]

    labelling = shop["labelling"]
    assert labelling["labelled"] == 6
    assert labelling["curated"] == sum(c for c, _ in CURATES)
    # the later annotation of task 1 wins; the recipe's classes are listed even at zero
    assert labelling["classes"] == {"World": 3, "Sports": 2, "Business": 1, "Sci/Tech": 0}

    idle = by_name["idle"]
    assert idle["schedule"] is None and idle["next_run"] is None
    assert idle["last_run"] is None and idle["last_crawl"] is None
    assert idle["pass_rates"] == [] and idle["labelling"] is None

    assert [r["id"] for r in got["runs"]] == [3, 2, 1]
    assert [r["id"] for r in got["running"]] == [3]
    assert got["running"][0]["progress"]["pages"] == 57

    (model,) = got["models"]["models"]
    assert model["model"] == "harvest-news" and model["shown"] == "champion"
    assert model["headline"]["test_macro_f1"] == pytest.approx(0.86)
    assert model["confusion"]["classes"] == CLASSES
    assert model["confusion"]["matrix"][2] == [4, 1, 38, 6]
    assert [p["value"] for p in model["curves"]["val_loss"]] == [1.1, 0.85, 0.7, 0.68]
    assert [p["step"] for p in model["curves"]["train_loss"]] == [1, 2, 3, 4]


def test_scheduler_times_win_over_the_recipe(state: Config) -> None:
    got = summary.build(state, None, {SOURCE: datetime(2030, 1, 2, 3, 4, tzinfo=UTC)})
    shop = next(s for s in got["sources"] if s["source"] == SOURCE)
    assert shop["next_run"] == "2030-01-02T03:04:00+00:00"
    assert shop["next_run_from"] == "scheduler"
    assert got["runs"] == [] and shop["last_run"] is None


def test_an_empty_project_says_none_yet(tmp_path: Path) -> None:
    config = Config(
        lake=str(tmp_path / "lake"),
        sources=str(tmp_path / "sources"),
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    write_recipe(tmp_path / "sources", "fresh", None)
    got = summary.build(config, ListStore())
    (fresh,) = got["sources"]
    assert fresh["last_crawl"] is None and fresh["pass_rates"] == [] and fresh["labelling"] is None
    assert got["runs"] == [] and got["models"]["models"] == []
    assert "no MLflow store" in got["models"]["note"]
    # a question must not create the store it asks about
    assert not (tmp_path / "mlflow.db").exists()
    html = dashboard.page(got)
    assert "none yet" in html and "No runs yet." in html


def test_a_broken_recipe_or_history_is_reported_not_raised(tmp_path: Path) -> None:
    class Broken(ListStore):
        def list(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
            raise OSError("database is locked")

    (tmp_path / "sources").mkdir()
    (tmp_path / "sources" / "bad.yaml").write_text("name: bad\nstart_urls: 3\n")
    config = Config(
        lake=str(tmp_path / "lake"),
        sources=str(tmp_path / "sources"),
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    got = summary.build(config, Broken())
    (bad,) = got["sources"]
    assert "start_urls" in bad["recipe_error"]
    assert "database is locked" in bad["last_run_error"]
    assert "database is locked" in got["runs_error"]
    assert "database is locked" in dashboard.page(got)


# -- the page ------------------------------------------------------------------------------


def test_page_escapes_what_it_shows() -> None:
    evil = '<script>alert("x")</script>'
    got = {
        "generated_at": "2024-05-01T10:00:00+00:00",
        "lake": "lake",
        "history": "recorded",
        "sources": [
            {
                "source": evil,
                "recipe": True,
                "schedule": {"cron": evil},
                "pass_rates": [
                    {"at": evil, "curated": 1, "quarantined": 1, "rate": 0.5, "batch_status": evil}
                ],
                "labelling": {
                    "labelled": 1,
                    "curated": 2,
                    "labelled_share": 0.5,
                    "classes": {evil: 1},
                },
            }
        ],
        "runs": [
            {
                "id": 1,
                "source": evil,
                "trigger": "manual",
                "status": evil,
                "counts": {"items": evil},
                "error": evil,
            }
        ],
        "running": [{"id": 1, "source": evil, "status": "running", "progress": {evil: 1}}],
        "models": {
            "models": [
                {
                    "model": evil,
                    "version": 1,
                    "headline": {evil: 0.5},
                    "confusion": {"classes": [evil], "matrix": [[1]]},
                    "curves": {evil: [{"step": 1, "value": 0.5}]},
                }
            ]
        },
    }
    html = dashboard.page(got)
    # the only script is the page's own
    assert html.count("<script>") == 1 and evil not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    # a status the page does not know gets no class of its own making
    assert 'class="badge other"' in html


def test_page_draws_rates_confusion_and_curves(state: Config) -> None:
    html = dashboard.page(summary.build(state, history()))
    assert "*/30 * * * * (Europe/Paris)" in html
    assert "76.0%" in html  # the last pass rate
    assert html.count("<svg") == 3  # pass rates, losses, validation F1
    assert '<table class="confusion">' in html and ">38</td>" in html
    assert 'data-run="2"' in html and "connection refused" in html
    assert 'data-running="3"' in html and "pages 57" in html
    assert "6 of 173 curated rows labelled" in html
    assert "http://" not in html.split("<script>")[0].split("</head>")[0]  # nothing fetched


# -- harvest status ------------------------------------------------------------------------


def test_status_prints_the_summary(state: Config) -> None:
    from harvest.service.runs import RunStore, store_path

    env = {
        "HARVEST_LAKE": state.lake,
        "HARVEST_SOURCES": state.sources,
        "HARVEST_REPORTS": state.reports,
        "HARVEST_TRACKING_URI": state.tracking_uri,
    }
    path = store_path(state)
    try:
        RunStore(path).claim(SOURCE, "manual")
        whole = last_json(run_harvest(["status"], env).stdout)
        expected = summary.build(state, RunStore(path))
        assert [s["source"] for s in whole["sources"]] == [s["source"] for s in expected["sources"]]
        assert [r["id"] for r in whole["runs"]] == [r["id"] for r in expected["runs"]]
        assert whole["runs"][0]["status"] == "queued"
        assert whole["models"]["models"][0]["model"] == "harvest-news"

        proc = run_harvest(["status", SOURCE], env)
        shop = last_json(proc.stdout)
        assert shop["source"] == SOURCE
        assert [p["rate"] for p in shop["pass_rates"]] == [0.9, 0.9, 0.76]
        assert shop["last_run"]["status"] == "queued"
        assert "pass rate, last 3 curate runs: 90%, 90%, 76%" in proc.stderr
        assert "harvest-news v1 (champion)" in proc.stderr

        unknown = run_harvest(["status", "nope"], env, check=False)
        assert unknown.returncode == 2 and "idle, shop" in unknown.stderr
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)


# -- in Chromium ---------------------------------------------------------------------------


class Dashboard(ThreadingHTTPServer):
    """The page and /api/summary over HTTP on loopback, as the service serves them."""

    def __init__(self, config: Config, store: ListStore, refresh_ms: int):
        self.config, self.store, self.refresh_ms = config, store, refresh_ms
        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


class Handler(BaseHTTPRequestHandler):
    server: Dashboard

    def do_GET(self) -> None:  # noqa: N802
        got = summary.build(self.server.config, self.server.store)
        if self.path == "/":
            body, kind = dashboard.page(got, self.server.refresh_ms).encode(), "text/html"
        elif self.path == "/api/summary":
            body, kind = json.dumps(got, allow_nan=False).encode(), "application/json"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", f"{kind}; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def served(state: Config) -> Iterator[Dashboard]:
    server = Dashboard(state, history(), refresh_ms=300)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_dashboard_in_chromium_shows_a_new_run_without_console_errors(
    served: Dashboard, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=list(CHROMIUM_ARGS)
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("requestfailed", lambda r: problems.append(f"{r.url} failed"))
            page.goto(served.url, wait_until="load")
            assert page.locator('#runs-body tr[data-run="2"]').count() == 1
            assert "connection refused" in page.inner_text("#runs-body")
            assert "pages 57" in page.inner_text("#running")

            # a run started after the page loaded appears without a reload, with progress
            progress = {"pages": 5, "items": 3, "committed": 0, "errors": 0}
            new = served.store.add(source=SOURCE, status="running", progress=progress)
            row = page.locator(f'#runs-body tr[data-run="{new["id"]}"]')
            row.wait_for(timeout=15_000)
            assert "running" in row.inner_text()
            page.locator(f'#running [data-running="{new["id"]}"]').wait_for(timeout=15_000)
            assert "pages 5" in page.inner_text(f'#running [data-running="{new["id"]}"]')
            # and once it ends it leaves the running section
            new["status"], new["progress"] = "finished", None
            new["ended_at"] = datetime.now(UTC).isoformat()
            new["counts"] = {"requests": 9, "items": 8, "curated": 7, "quarantined": 1, "bans": 0}
            page.locator(f'#running [data-running="{new["id"]}"]').wait_for(
                state="detached", timeout=15_000
            )
            assert "7" in row.inner_text() and "finished" in row.inner_text()

            shot = Path(os.environ.get("HARVEST_DASHBOARD_SCREENSHOT") or tmp_path / "d.png")
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=True)
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        finally:
            browser.close()
    assert problems == []


@pytest.mark.slow
@pytest.mark.requires_chromium
def test_real_service_dashboard_shows_a_triggered_crawl(
    tmp_path: Path, demo_site: Any, lake_env: dict[str, str]
) -> None:
    import subprocess
    import sys
    import time

    import requests
    from playwright.sync_api import sync_playwright

    from harvest.workers import free_port, stop

    recipe = yaml.safe_load((ROOT / "sources" / "demo.yaml").read_text())
    recipe.update(name=SOURCE, start_urls=[demo_site.url + "/"], limits={"pages": 15})
    (tmp_path / "sources").mkdir()
    (tmp_path / "sources" / f"{SOURCE}.yaml").write_text(yaml.safe_dump(recipe))
    port, token = free_port(), "dashboard-test-token"
    env = {
        **os.environ,
        **lake_env,
        "HARVEST_SOURCES": str(tmp_path / "sources"),
        "HARVEST_API_TOKEN": token,
        "HARVEST_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "harvest.cli", "serve", "--port", str(port), "--no-label-studio"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if requests.get(f"{base}/api/summary", timeout=5).ok:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "the service did not answer"
            time.sleep(0.3)
        auth = {"Authorization": f"Bearer {token}"}
        answer = requests.post(f"{base}/crawls", json={"source": SOURCE}, headers=auth, timeout=10)
        assert answer.status_code in (200, 201, 202), answer.text
        run_id = answer.json()["id"]

        problems: list[str] = []
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=list(CHROMIUM_ARGS)
            )
            try:
                page = browser.new_page()
                page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: problems.append(str(e)))
                page.goto(base + "/", wait_until="load")
                row = page.locator(f'#runs-body tr[data-run="{run_id}"]')
                row.wait_for(timeout=15_000)
                assert SOURCE in row.inner_text()
                assert page.locator(f'td[data-source="{SOURCE}"]').count() == 1
                # the polling keeps the row up to date until the crawl ends
                page.wait_for_function(
                    """id => { const r = document.querySelector(`#runs-body tr[data-run="${id}"]`);
                               return r && /finished|failed|timed_out/.test(r.textContent); }""",
                    arg=run_id,
                    timeout=180_000,
                )
            finally:
                browser.close()
        assert problems == []
        assert requests.get(f"{base}/runs/{run_id}", timeout=10).json()["status"] == "finished"
    finally:
        stop(proc)
        log.close()
