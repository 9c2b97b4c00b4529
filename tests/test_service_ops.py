"""Operating the real service: cancelling a run, reading its log (tail and follow), crawls
from the command line in the run history, retries of failed scheduled runs, the failure
webhook and schedules reloaded from changed recipes. One `harvest serve` serves the module;
each test crawls sources of its own."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from harvest.demosite import DemoSite
from harvest.service.runlog import tail_offset
from ingestion.lake import Lake
from tests.service import DONE, SLOW, Live, write_recipe

ENDED = (*DONE, "cancelled")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    service = Live(tmp_path_factory.mktemp("ops"))
    # small batches: a crawl cancelled after a few pages has committed some
    service.env["HARVEST_CRAWL_BATCH_SIZE"] = "2"
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
