"""One writer per source and stage, and a curate that can be killed at any commit."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml

from harvest.demosite import DemoSite, Site
from ingestion.locks import STALE, BusyError, Holder, SourceLock, describe, holder
from ingestion.runs import CURATE_STAGE, last_run, runs_of
from tests.helpers import ROOT, run_harvest
from validation import batch as batch_gate

BUSY = 75


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = log.open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "harvest.cli", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=out,
        stderr=out,
        start_new_session=True,
    )


def wait_for(check: Any, proc: subprocess.Popen[bytes] | None = None, limit: float = 120) -> Any:
    """Polls ``check`` until it returns something truthy; fails if ``proc`` exits first."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        assert proc is None or proc.poll() is None, f"exited {proc.returncode} first"
        time.sleep(0.05)
    raise AssertionError(f"not within {limit} s")


def kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


# --- the lock itself


def test_a_second_holder_is_refused_and_named(tmp_path: Path) -> None:
    with SourceLock(str(tmp_path), "curate", "news", command="harvest curate news"):
        seen = holder(str(tmp_path), "curate", "news")
        assert seen is not None and seen.pid == os.getpid()
        with pytest.raises(
            BusyError, match=rf"curate of news is already running \(pid {os.getpid()}"
        ):
            SourceLock(str(tmp_path), "curate", "news").acquire()
        # another stage or source is another lock
        with SourceLock(str(tmp_path), "crawl", "news"), SourceLock(str(tmp_path), "curate", "x"):
            pass
    assert holder(str(tmp_path), "curate", "news") is None
    with SourceLock(str(tmp_path), "curate", "news"):
        pass


def test_a_killed_holder_frees_the_lock(tmp_path: Path) -> None:
    code = (
        "import sys, time; from ingestion.locks import SourceLock; "
        f"SourceLock({str(tmp_path)!r}, 'crawl', 'news').acquire(); "
        "print('held', flush=True); time.sleep(120)"
    )
    child = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"held\n"
        seen = holder(str(tmp_path), "crawl", "news")
        assert seen is not None and seen.pid == child.pid
    finally:
        child.kill()
        child.wait(timeout=30)
    # SIGKILL leaves no stale lock: the kernel dropped it with the process
    assert holder(str(tmp_path), "crawl", "news") is None
    with SourceLock(str(tmp_path), "crawl", "news"):
        pass


def test_a_silent_holder_is_called_possibly_hung() -> None:
    now = time.time()
    alive = Holder(42, "box", "harvest crawl news", "2026-01-01T00:00:00+00:00", now)
    hung = Holder(42, "box", "harvest crawl news", "2026-01-01T00:00:00+00:00", now - STALE - 5)
    assert "pid 42 on box" in describe(alive) and "hung" not in describe(alive)
    assert "if it is hung, kill it" in describe(hung)


def test_curate_and_reviews_refuse_while_another_curate_holds_the_source(
    lake_env: dict[str, str],
) -> None:
    with SourceLock(lake_env["HARVEST_LAKE"], "curate", "demo", command="harvest curate demo"):
        for args in (["curate", "demo"], ["quarantine", "release", "demo", "--recheck"]):
            proc = run_harvest(args, lake_env, check=False)
            assert proc.returncode == BUSY, proc.stderr
            assert f"curate of demo is already running (pid {os.getpid()}" in proc.stderr
            assert "Traceback" not in proc.stderr


# --- two crawls, a crawl and the service


def slow_recipe(tmp_path: Path, name: str) -> Path:
    data = yaml.safe_load((ROOT / "sources" / "demo.yaml").read_text())
    data["name"] = name
    # a page a quarter second: the first crawl still runs when its lock is looked for
    data["settings"] = {"CONCURRENT_REQUESTS": 1, "DOWNLOAD_DELAY": 0.25}
    data["limits"] = {**data.get("limits", {}), "pages": 12}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow
def test_a_second_crawl_of_a_source_refuses_while_the_first_runs(
    tmp_path: Path, demo_site: DemoSite, lake_env: dict[str, str]
) -> None:
    recipe = slow_recipe(tmp_path, "twice")
    args = ["crawl", str(recipe), "--start-url", demo_site.url + "/", "--no-curate"]
    first = start(args, lake_env, tmp_path / "first.log")
    try:
        held = wait_for(lambda: holder(lake_env["HARVEST_LAKE"], "crawl", "twice"), first)
        assert held.pid == first.pid
        # stopped, the first still holds its lock however long the second takes to start
        os.killpg(first.pid, signal.SIGSTOP)
        try:
            second = run_harvest(args, lake_env, check=False)
            assert second.returncode == BUSY, second.stderr
            assert f"crawl of twice is already running (pid {first.pid}" in second.stderr
            assert "Traceback" not in second.stderr
            # curating while it crawls is another stage: allowed
            run_harvest(["curate", str(recipe)], lake_env)
        finally:
            os.killpg(first.pid, signal.SIGCONT)
        assert first.wait(timeout=300) == 0, (tmp_path / "first.log").read_text()
    finally:
        kill(first)
    from ingestion.lake import Lake

    urls = Lake(lake_env["HARVEST_LAKE"]).read("raw/twice")["url"].to_pylist()
    assert urls and max(Counter(urls).values()) == 1


@pytest.mark.slow
def test_the_service_and_the_cli_never_crawl_one_source_together(
    live: Any, demo_site: DemoSite
) -> None:
    from tests.service import SLOW, write_recipe

    write_recipe(live.sources, "shared", demo_site, SLOW, pages=None)
    live.start()
    env = dict(live.env)
    # the CLI holds the lock: the service answers 409 at once, naming the holder
    with SourceLock(env["HARVEST_LAKE"], "crawl", "shared", command="harvest crawl shared"):
        answer = live.post("/crawls", json={"source": "shared"})
        assert answer.status_code == 409, answer.text
        assert f"pid {os.getpid()}" in answer.json()["detail"]
    # the service crawls: a CLI crawl of the source refuses with the busy code
    assert live.post("/crawls", json={"source": "shared"}).status_code == 202
    wait_for(lambda: holder(env["HARVEST_LAKE"], "crawl", "shared"))
    cli = run_harvest(["crawl", "shared", "--no-curate"], env, check=False)
    assert cli.returncode == BUSY, cli.stderr
    assert "crawl of shared is already running" in cli.stderr
    assert live.stop() == 0


# --- curate killed at each commit boundary

POINTS = [
    "curate:curated",
    "curate:index",
    "curate:duplicates",
    "curate:quarantine",
    "curate:batch",
]


@pytest.fixture(scope="module")
def raw_lake(
    demo_site: DemoSite, site: Site, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """A lake holding one crawl of the demo site, not yet curated."""
    base = tmp_path_factory.mktemp("killcurate")
    env = {"HARVEST_LAKE": str(base / "lake"), "HARVEST_REPORTS": str(base / "reports")}
    run_harvest(["crawl", "demo", "--start-url", demo_site.url + "/", "--no-curate"], env)
    assert site.planted_invalid and site.planted_duplicates  # every table gets rows
    yield base / "lake"


def lake_copy(raw_lake: Path, where: Path) -> dict[str, str]:
    shutil.copytree(raw_lake, where / "lake")
    return {"HARVEST_LAKE": str(where / "lake"), "HARVEST_REPORTS": str(where / "reports")}


def outcome(root: str) -> dict[str, Any]:
    """What curate leaves: each table's rows (without the times they were written), the
    batch records and the run record."""
    from ingestion.lake import Lake

    lake = Lake(root)
    tables: dict[str, Any] = {}
    for name in ("curated/demo", "duplicates/demo", "quarantine/demo"):
        t: pa.Table = lake.read(name)
        keep = [c for c in t.column_names if not c.endswith("_at") or c == "fetched_at"]
        tables[name] = sorted(t.select(keep).to_pylist(), key=lambda r: (r["url"], str(r)))
    batches = [
        {k: b[k] for k in ("raw_from", "raw_to", "rows", "status")}
        for b in batch_gate.history(lake, "demo")
    ]
    run = last_run(lake, CURATE_STAGE, "demo")
    assert run is not None
    run.pop("report")
    return {
        "tables": tables,
        "batches": batches,
        "runs": len(runs_of(lake, CURATE_STAGE, "demo")),
        "run": run,
    }


@pytest.mark.slow
def test_curate_killed_at_any_commit_is_finished_by_the_next_run(
    raw_lake: Path, tmp_path: Path
) -> None:
    reference = lake_copy(raw_lake, tmp_path / "whole")
    run_harvest(["curate", "demo"], reference)
    want = outcome(reference["HARVEST_LAKE"])
    assert want["run"]["curated"] and want["run"]["quarantined"]
    assert want["run"]["duplicates_dropped"]
    # a third run at one point drawn each time: it finds nothing left to do
    idle_after = random.choice(POINTS)
    for point in POINTS:
        env = lake_copy(raw_lake, tmp_path / point.replace(":", "-"))
        log = tmp_path / f"{point.replace(':', '-')}.log"
        proc = start(["curate", "demo"], {**env, "HARVEST_PAUSE_AT": point}, log)
        try:
            wait_for(lambda: f"paused at {point}" in log.read_text(), proc)  # noqa: B023
        finally:
            kill(proc)
        run_harvest(["curate", "demo"], env)
        assert outcome(env["HARVEST_LAKE"]) == want, point
        if point == idle_after:
            again = run_harvest(["curate", "demo"], env)
            assert '"rows_in": 0' in again.stdout, point
