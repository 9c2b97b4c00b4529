"""Operating the real service: cancelling a run, reading its log (tail and follow), crawls
from the command line in the run history, retries of failed scheduled runs, the failure
webhook and schedules reloaded from changed recipes. One `harvest serve` serves the module;
each test crawls sources of its own."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from harvest.demosite import DemoSite, Site
from harvest.service.runlog import tail_offset
from ingestion.lake import Lake
from spiders.render import CHROMIUM, CHROMIUM_ARGS
from tests.helpers import ROOT, free_port, last_json, run_harvest
from tests.service import DONE, SLOW, Live, write_recipe

ENDED = (*DONE, "cancelled")


MLFLOW_UI = "http://127.0.0.1:9/mlflow/"  # linked to, never fetched
# the failure webhook's path holds its secret, as a chat service's does
HOOK_SECRET = "hook-secret-b7f1"


class Receiver(ThreadingHTTPServer):
    """A webhook on loopback that keeps what it is sent and answers 500: a notice it took
    and a failing webhook at once."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        super().__init__(("127.0.0.1", 0), Hook)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/{HOOK_SECRET}?token=x"


class Hook(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:  # noqa: N802
        size = int(self.headers.get("Content-Length") or 0)
        assert self.headers.get("Content-Type") == "application/json"
        self.server.bodies.append(json.loads(self.rfile.read(size)))
        self.send_response(500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Live]:
    service = Live(tmp_path_factory.mktemp("ops"))
    # small batches: a crawl cancelled after a few pages has committed some
    service.env["HARVEST_CRAWL_BATCH_SIZE"] = "2"
    service.env["HARVEST_NOTIFY_WEBHOOK"] = receiver.url
    service.env["HARVEST_NOTIFY_TIMEOUT"] = "5"
    service.env["HARVEST_MLFLOW_URL"] = MLFLOW_UI
    service.env["DEMO_API_TOKEN"] = "demo-token"  # the shared demo site's API token
    service.start()
    try:
        yield service
    finally:
        service.close()


def _gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


# -- the log's tail, without a service -----------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_tail_offset_finds_the_last_lines(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    lines = [("x" * rng.choice([0, 1, 50, 70_000])) for _ in range(rng.randint(0, 12))]
    text = "\n".join(lines) + rng.choice(["", "\n"])
    path = tmp_path / "log"
    path.write_bytes(text.encode())
    for n in (0, 1, 2, 5, 20):
        got = text.encode()[tail_offset(path, n) :].decode()
        expected = text.splitlines(keepends=True)[-n:] if n else []
        assert got == "".join(expected), (n, len(lines))


# -- cancel --------------------------------------------------------------------------------


@pytest.mark.slow
def test_cancel_ends_the_process_group_and_keeps_what_was_committed(
    served: Live, demo_site: DemoSite
) -> None:
    write_recipe(served.sources, "tocancel", demo_site, SLOW, pages=None)
    body = {"source": "tocancel"}
    run = served.post("/crawls", json=body).json()
    running = served.wait_run(
        run["id"], lambda r: (r["progress"] or {}).get("committed", 0) >= 2 and r["pid"]
    )
    pgid = running["pid"]

    assert served.post(f"/runs/{run['id']}/cancel", auth=False).status_code == 401
    assert served.post("/runs/99999/cancel").status_code == 404
    answer = served.post(f"/runs/{run['id']}/cancel")
    assert answer.status_code in (200, 202), answer.text
    done = served.wait_run(run["id"], lambda r: r["status"] in ENDED)
    assert done["status"] == "cancelled", done
    assert done["error"] == "cancelled during crawl" and done["pid"] is None
    assert _gone(pgid)
    # the crawl stopped as on any SIGTERM: the batches it committed stay in the lake
    log = Path(done["log_path"]).read_text()
    assert '"finish_reason": "shutdown"' in log
    kept = Lake(str(served.tmp / "lake")).read("raw/tocancel").num_rows
    assert kept >= 2 and done["counts"]["items"] >= kept
    # an ended run cannot be cancelled; the source runs again, resuming
    again = served.post(f"/runs/{run['id']}/cancel")
    assert again.status_code == 409 and "already ended" in again.json()["detail"]
    second = served.post("/crawls", json=body).json()
    assert served.post(f"/runs/{second['id']}/cancel").status_code in (200, 202)
    assert served.wait_run(second["id"], lambda r: r["status"] in ENDED)["status"] == "cancelled"


# -- the log -------------------------------------------------------------------------------


@pytest.mark.slow
def test_log_whole_tail_and_follow(served: Live, demo_site: DemoSite) -> None:
    write_recipe(served.sources, "logged", demo_site, SLOW, pages=4)
    run = served.post("/crawls", json={"source": "logged"}).json()
    # followed from the start, the stream ends when the run has ended, with all of it
    with requests.get(
        f"{served.url}/runs/{run['id']}/log",
        params={"follow": "true", "timeout": "300"},
        stream=True,
        timeout=(10, 120),
    ) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/plain")
        followed = b"".join(answer.iter_content(None)).decode()
    after = served.get(f"/runs/{run['id']}").json()
    assert after["status"] in ENDED, after
    whole = Path(after["log_path"]).read_text()
    assert followed == whole
    assert followed.startswith("$ harvest crawl logged") and '"items"' in followed

    assert served.get(f"/runs/{run['id']}/log").text == whole
    lines = whole.splitlines(keepends=True)
    for n in (1, 3, len(lines) + 5):
        got = served.get(f"/runs/{run['id']}/log", params={"tail": n})
        assert got.text == "".join(lines[-n:]), n
    assert served.get(f"/runs/{run['id']}/log", params={"tail": -1}).status_code == 422
    assert served.get("/runs/99999/log").status_code == 404

    # a follow never outlasts its limit: a slow crawl still running when it ends
    write_recipe(served.sources, "endless", demo_site, SLOW, pages=None)
    slow = served.post("/crawls", json={"source": "endless"}).json()
    try:
        answer = served.get(
            f"/runs/{slow['id']}/log", params={"follow": "true", "tail": 2, "timeout": 2}
        )
        assert answer.text.endswith("[follow ended: 2 s passed; the run is still active]\n")
        assert served.get(f"/runs/{slow['id']}").json()["status"] == "running"
    finally:
        served.post(f"/runs/{slow['id']}/cancel")
        served.wait_run(slow["id"], lambda r: r["status"] in ENDED)


# -- crawls from the command line ------------------------------------------------------------


def _cli_crawl(served: Live, source: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "harvest.cli", "crawl", source],
        cwd=ROOT,
        env={**os.environ, **served.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _running(served: Live, source: str) -> dict[str, Any]:
    (run,) = _until(lambda: [r for r in served.runs(source=source) if r["status"] == "running"])
    return dict(run)


@pytest.mark.slow
def test_cli_crawls_are_in_the_run_history(served: Live, demo_site: DemoSite) -> None:
    write_recipe(served.sources, "fromcli", demo_site, pages=4)
    summary = last_json(run_harvest(["crawl", "fromcli"], served.env).stdout)
    (run,) = served.runs(source="fromcli")
    assert (run["trigger"], run["status"], run["error"], run["pid"]) == (
        "cli",
        "finished",
        None,
        None,
    )
    assert run["counts"]["items"] == summary["items"]
    assert run["counts"]["items"] > 0
    assert run["counts"]["curated"] == summary["curated"]
    assert run["report"] == summary["report"]
    assert run["id"] in [r["id"] for r in served.get("/api/summary").json()["runs"]]

    # one still running: the service sees it, runs nothing of its source beside it and
    # leaves stopping it to whoever started it; a SIGTERM ends it interrupted, counted
    write_recipe(served.sources, "clislow", demo_site, SLOW, pages=None)
    proc = _cli_crawl(served, "clislow")
    try:
        run = _running(served, "clislow")
        assert (run["trigger"], run["pid"]) == ("cli", proc.pid)
        busy = served.post("/crawls", json={"source": "clislow"})
        assert busy.status_code == 409 and "already running" in busy.json()["detail"]
        refused = served.post(f"/runs/{run['id']}/cancel")
        assert refused.status_code == 409 and "command line" in refused.json()["detail"]
        lake = Lake(str(served.tmp / "lake"))
        _until(lambda: lake.exists("raw/clislow") and lake.read("raw/clislow").num_rows)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    ended = served.get(f"/runs/{run['id']}").json()
    assert (ended["status"], ended["error"]) == ("interrupted", "stopped by a signal")
    assert ended["counts"]["items"] == last_json(out)["items"]

    # one killed outright: its run is closed once its process is gone, and the source
    # runs again
    proc = _cli_crawl(served, "clislow")
    killed = _running(served, "clislow")
    proc.kill()
    proc.wait()
    started = served.post("/crawls", json={"source": "clislow"})
    assert started.status_code == 202, started.text
    closed = served.get(f"/runs/{killed['id']}").json()
    assert (closed["status"], closed["error"]) == (
        "interrupted",
        "the crawl's process ended unrecorded",
    )
    served.post(f"/runs/{started.json()['id']}/cancel")
    served.wait_run(started.json()["id"], lambda r: r["status"] in ENDED)


# -- retries, the failure notice and reloaded schedules --------------------------------------


def _down_recipe(served: Live, name: str, schedule: dict[str, Any] | None) -> None:
    """A recipe of a site that refuses every connection: each crawl of it fails."""
    recipe = yaml.safe_load((served.sources.parent / "down.template").read_text())
    recipe["name"] = name
    if schedule:
        recipe["schedule"] = schedule
    (served.sources / f"{name}.yaml").write_text(yaml.safe_dump(recipe))


def _until(check: Any, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.3)
    raise AssertionError("never happened")


@pytest.mark.slow
def test_failed_scheduled_runs_retry_with_backoff_and_notify(
    served: Live, receiver: Receiver, demo_site: DemoSite
) -> None:
    template = yaml.safe_load(write_recipe(served.tmp / "tpl", "x", demo_site).read_text())
    template["start_urls"] = [f"http://127.0.0.1:{free_port()}/"]
    (served.sources.parent / "down.template").write_text(yaml.safe_dump(template))
    retries, first_delay = 2, 1.0
    schedule = {"cron": "*/2 * * * * *", "retries": retries, "retry_delay": first_delay}
    # written while the service runs, with nobody asking for /sources: the poll finds it
    _down_recipe(served, "down", schedule)

    def chain() -> list[dict[str, Any]] | None:
        runs = sorted(served.runs(source="down", limit=100), key=lambda r: r["id"])
        if not runs:
            return None
        tries = [runs[0], *[r for r in runs if r["retry_of"] == runs[0]["id"]]]
        return tries if len(tries) == 1 + retries and tries[-1]["status"] in ENDED else None

    tries = _until(chain)
    # no more schedule: nothing fires once the file says so
    _down_recipe(served, "down", None)
    (source,) = [s for s in served.get("/sources").json() if s["source"] == "down"]
    assert source["schedule"] is None and source["next_run"] is None

    assert [r["attempt"] for r in tries] == [1, 2, 3]
    assert [r["retry_of"] for r in tries] == [None, tries[0]["id"], tries[0]["id"]]
    assert {(r["trigger"], r["status"]) for r in tries} == {("schedule", "failed")}
    assert "refused" in tries[0]["error"]
    # each retry started no sooner than its backoff after the try before it ended (the
    # history keeps milliseconds: one is the rounding)
    for k, (before, after) in enumerate(zip(tries, tries[1:], strict=False)):
        gap = datetime.fromisoformat(after["created_at"]) - datetime.fromisoformat(
            before["ended_at"]
        )
        assert gap >= timedelta(seconds=first_delay * 2**k, milliseconds=-1), (k, gap)
    assert max(r["attempt"] for r in served.runs(source="down", limit=100)) == 1 + retries

    # one notice per failed try, posted while the webhook answers 500 each time
    notices = _until(
        lambda: (
            got if len(got := [b for b in receiver.bodies if b["source"] == "down"]) >= 3 else None
        )
    )
    by_run = {b["run"]: b for b in notices}
    assert [by_run[r["id"]]["retry_in"] for r in tries] == [first_delay, 2 * first_delay, None]
    last = by_run[tries[-1]["id"]]
    assert (last["trigger"], last["status"], last["attempt"]) == ("schedule", "failed", 3)
    assert last["error"] == tries[-1]["error"] and last["retry_of"] == tries[0]["id"]
    assert last["log_url"] == f"{served.url}/runs/{tries[-1]['id']}/log"
    assert "refused" in requests.get(last["log_url"], timeout=30).text
    # the failing webhook is logged by its address alone; the service goes on
    log = served.log_file.read_text()
    assert "answered 500" in log and HOOK_SECRET not in log
    assert served.get("/runs", params={"limit": 1}).status_code == 200


def test_a_scheduled_api_source_runs_like_any_other(
    served: Live, demo_site: DemoSite, site: Site
) -> None:
    """An API recipe (kind: api) with a schedule: the service crawls and curates it."""
    recipe = yaml.safe_load((ROOT / "sources" / "demo_api.yaml").read_text())
    recipe.update(name="apisched", start_urls=[demo_site.url + "/api/v1/articles"])
    recipe["schedule"] = {"cron": "*/2 * * * * *"}
    path = served.sources / "apisched.yaml"
    path.write_text(yaml.safe_dump(recipe))
    try:
        first = _until(
            lambda: min(served.runs(source="apisched"), key=lambda r: r["id"], default=None)
        )
    finally:
        del recipe["schedule"]
        path.write_text(yaml.safe_dump(recipe))
    run = served.wait_run(first["id"], lambda r: r["status"] in ENDED)
    assert (run["trigger"], run["status"], run["error"]) == ("schedule", "finished", None)
    raw = Lake(str(served.tmp / "lake")).read("raw/apisched")
    assert sorted(u.rsplit("/", 1)[1] for u in raw["url"].to_pylist()) == sorted(
        str(i) for i in range(1, len(site.articles) + 1)
    )
    assert run["counts"]["items"] == raw.num_rows and run["counts"]["curated"] > 0


@pytest.mark.slow
def test_a_changed_cron_shows_its_own_next_run(served: Live, demo_site: DemoSite) -> None:
    path = write_recipe(served.sources, "moving", demo_site, schedule={"cron": "0 0 1 1 *"})

    def shown() -> dict[str, Any]:
        (source,) = [s for s in served.get("/sources").json() if s["source"] == "moving"]
        return dict(source)

    now = datetime.now(UTC)
    first = shown()
    assert datetime.fromisoformat(first["next_run"]) == datetime(now.year + 1, 1, 1, tzinfo=UTC)
    for minute in random.Random(7).sample(range(60), 2):
        recipe = yaml.safe_load(path.read_text())
        recipe["schedule"]["cron"] = f"{minute} * * * *"
        path.write_text(yaml.safe_dump(recipe))
        got = shown()
        assert got["schedule"]["cron"] == f"{minute} * * * *"
        after = datetime.fromisoformat(got["next_run"])
        assert after.minute == minute and after.second == 0
        assert datetime.now(UTC) - timedelta(seconds=1) < after
        assert after <= datetime.now(UTC) + timedelta(hours=1)
    path.unlink()
    assert "moving" not in [s["source"] for s in served.get("/sources").json()]


# -- the dashboard in Chromium -------------------------------------------------------------


SAYS = "text => document.querySelector('#run-now-status').textContent.includes(text)"


@pytest.mark.slow
@pytest.mark.requires_chromium
def test_dashboard_links_and_run_now_in_chromium(served: Live, demo_site: DemoSite) -> None:
    from playwright.sync_api import sync_playwright

    write_recipe(served.sources, "board", demo_site, pages=4)
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=list(CHROMIUM_ARGS)
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on(
                "console",
                lambda m: (
                    problems.append(m.text)
                    if m.type == "error" and "Failed to load resource" not in m.text
                    else None
                ),
            )
            # the refused tries below are the only failed loads expected
            page.on(
                "response",
                lambda r: (
                    problems.append(f"{r.status} {r.url}")
                    if r.status >= 400 and r.status != 401
                    else None
                ),
            )
            page.goto(served.url + "/", wait_until="load")
            studio = f"http://127.0.0.1:{served.env['HARVEST_LABEL_STUDIO_PORT']}"
            assert page.get_attribute("#label-studio-link", "href") == studio
            assert page.get_attribute("#mlflow-link", "href") == MLFLOW_UI

            button = page.locator('[data-run-now="board"]')
            status = page.locator("#run-now-status")
            button.click()
            page.wait_for_function(SAYS, arg="token")
            page.fill("#token", "not-the-token")
            button.click()
            page.wait_for_function(SAYS, arg="wrong API token")
            assert served.runs(source="board") == []

            page.fill("#token", served.token)
            button.click()
            page.wait_for_function(SAYS, arg="queued")
            run_id = int(status.inner_text().split()[1])
            (run,) = served.runs(source="board")
            assert (run["id"], run["trigger"]) == (run_id, "manual")
            page.wait_for_function(
                """id => { const r = document.querySelector(`#runs-body tr[data-run="${id}"]`);
                           return r && /finished|failed/.test(r.textContent)
                               && r.querySelector('a[data-report]'); }""",
                arg=run_id,
                timeout=180_000,
            )
            row = page.locator(f'#runs-body tr[data-run="{run_id}"]')
            assert "finished" in row.inner_text()
            log_href = row.locator("a[data-log]").get_attribute("href")
            report_href = row.locator("a[data-report]").get_attribute("href")
            # the page drawn by the server links the same
            page.reload(wait_until="load")
            served_row = page.locator(f'#runs-body tr[data-run="{run_id}"]')
            assert served_row.locator("a[data-log]").get_attribute("href") == log_href
            assert served_row.locator("a[data-report]").get_attribute("href") == report_href
            # the token stays for this tab: a reload does not ask again
            assert page.input_value("#token") == served.token

            served_row.locator("a[data-log]").click()
            page.wait_for_load_state("load")
            assert page.url == f"{served.url}/runs/{run_id}/log"
            assert page.inner_text("body").startswith("$ harvest crawl board")
            page.go_back(wait_until="load")
            page.locator(f'#runs-body tr[data-run="{run_id}"] a[data-report]').click()
            page.wait_for_load_state("load")
            assert page.url == f"{served.url}/runs/{run_id}/report"
            assert "board" in page.inner_text("body")
        finally:
            browser.close()
    assert problems == []
