"""Runs one crawl as N processes that share a frontier in Redis (spiders/frontier.py).

Each worker is ``harvest crawl SOURCE --worker --crawl-id ID`` in a child process, with
the Redis URL in its environment rather than on its command line, where ``ps`` would show
a password. This process waits for them all and merges their stats.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harvest.config import Config
from harvest.crawl import CrawlError, CrawlSummary, WorkerShare, no_response
from harvest.workerfork import ForkedWorker
from ingestion.lake import Lake
from ingestion.runs import record_run
from spiders.frontier import connect, delete_frontier
from spiders.pipelines import new_crawl_id
from spiders.recipe import Recipe
from spiders.resume import STAGE, unfinished_crawl
from spiders.settings import HARVEST_REDIS_PREFIX

REDIS_URL_ENV = "HARVEST_REDIS_URL"
# seconds a worker gets to stop after SIGTERM before it is killed
STOP_GRACE = 30.0


@dataclass
class WorkerProcess:
    number: int
    process: subprocess.Popen[bytes] | ForkedWorker
    out: Path
    err: Path

    @property
    def name(self) -> str:
        return f"worker {self.number} (pid {self.process.pid})"

    def result(self) -> CrawlSummary:
        """The summary the worker printed last (an empty one if it printed none)."""
        lines = self.out.read_text().strip().splitlines()
        return CrawlSummary.from_dict(json.loads(lines[-1]) if lines else {})

    def error_tail(self, lines: int = 5) -> str:
        text = self.err.read_text(errors="replace").strip().splitlines()
        return "\n".join(text[-lines:]) or "no output"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(process: subprocess.Popen[Any] | ForkedWorker, grace: float = STOP_GRACE) -> None:
    """SIGTERM by process id, then SIGKILL if it is still there after ``grace`` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def private_redis(timeout: float = 15.0) -> Iterator[str]:
    """A ``redis-server`` of our own on a free loopback port, keeping nothing on disk."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise CrawlError(
            "redis-server is not installed: install it (apt-get install redis-server) "
            "or pass --redis URL"
        )
    with tempfile.TemporaryDirectory(prefix="harvest-redis-") as folder:
        port = free_port()
        log = Path(folder) / "redis.log"
        with log.open("wb") as out:
            server = subprocess.Popen(
                [
                    exe,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                    "--dir",
                    folder,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            url = f"redis://127.0.0.1:{port}/0"
            deadline = time.monotonic() + timeout
            while True:
                try:
                    connect(url, timeout=1.0).close()
                    break
                except ConnectionError as exc:
                    if server.poll() is not None or time.monotonic() > deadline:
                        tail = log.read_text(errors="replace").strip()[-500:]
                        raise CrawlError(f"redis-server did not start: {exc}\n{tail}") from exc
                    time.sleep(0.05)
            yield url
        finally:
            stop(server, grace=10.0)


def run_workers(
    config: Config,
    recipe: Recipe,
    source: str,
    workers: int,
    redis_url: str | None = None,
    start_url: str | None = None,
    fresh: bool = False,
    crawl_id: str | None = None,
    forked: list[ForkedWorker] | None = None,
) -> CrawlSummary:
    """Crawls ``recipe`` with ``workers`` processes; returns the merged summary.

    ``source`` is the recipe as the command line named it, for the workers to load.
    Without ``redis_url`` a private redis-server holds the frontier for the crawl's span.
    ``forked`` (harvest/workerfork.py) are children waiting to be the workers; without
    them each worker is a fresh interpreter.
    """
    lake = Lake(config.lake)
    resumed = None if fresh or crawl_id else unfinished_crawl(lake, recipe.name)
    crawl_id = crawl_id or resumed or new_crawl_id()
    if redis_url is None:
        with private_redis() as url:
            return _run(lake, recipe, source, workers, url, start_url, crawl_id, resumed, forked)
    return _run(lake, recipe, source, workers, redis_url, start_url, crawl_id, resumed, forked)


def _run(
    lake: Lake,
    recipe: Recipe,
    source: str,
    workers: int,
    redis_url: str,
    start_url: str | None,
    crawl_id: str,
    resumed: str | None,
    forked: list[ForkedWorker] | None = None,
) -> CrawlSummary:
    prefix = str(recipe.settings.get("HARVEST_REDIS_PREFIX", HARVEST_REDIS_PREFIX))
    try:
        client = connect(redis_url)
    except ConnectionError as exc:
        raise CrawlError(str(exc)) from exc
    reasons: set[str] = set()
    try:
        if resumed:
            # the interrupted crawl's queue lost the requests its workers held: start the
            # frontier over, and the resume middleware skips the pages already committed
            delete_frontier(client, prefix, recipe.name, crawl_id)
        # created here, before the workers race to record their own start in it
        record_run(
            lake, STAGE, recipe.name, {"crawl_id": crawl_id, "state": "running", "workers": workers}
        )
        procs = _spawn(source, workers, redis_url, start_url, crawl_id, resumed, forked)
        results = _wait(procs)
        reasons = {str(r.finish_reason) for _, _, r in results}
        if reasons == {"finished"}:
            delete_frontier(client, prefix, recipe.name, crawl_id)
    finally:
        client.close()
        if reasons != {"finished"}:
            # later than every worker's own record, so the next crawl resumes this one
            record_run(
                lake,
                STAGE,
                recipe.name,
                {
                    "crawl_id": crawl_id,
                    "state": "interrupted",
                    "reason": ",".join(sorted(reasons)) or "a worker failed",
                },
            )
    summary = replace(merge(results), crawl_id=crawl_id, resumed=resumed is not None)
    if not summary.pages:
        detail = f"finish reasons {', '.join(sorted(reasons))}; {workers} workers"
        raise no_response(recipe, start_url, detail)
    return summary


def _spawn(
    source: str,
    workers: int,
    redis_url: str,
    start_url: str | None,
    crawl_id: str,
    resumed: str | None,
    forked: list[ForkedWorker] | None = None,
) -> list[WorkerProcess]:
    folder = Path(tempfile.mkdtemp(prefix="harvest-workers-"))
    args = [
        "crawl",
        source,
        "--worker",
        "--crawl-id",
        crawl_id,
        "--no-curate",
    ]
    if start_url:
        args += ["--start-url", start_url]
    if resumed:
        args.append("--resumed")
    env = {REDIS_URL_ENV: redis_url}
    forked = forked or []
    procs: list[WorkerProcess] = []
    for number in range(1, workers + 1):
        out, err = folder / f"worker-{number}.out", folder / f"worker-{number}.err"
        process: subprocess.Popen[bytes] | ForkedWorker
        if number <= len(forked):
            process = forked[number - 1]
            process.start(args, env, out, err)
        else:
            command = [sys.executable, "-m", "harvest.cli", *args]
            with out.open("wb") as stdout, err.open("wb") as stderr:
                process = subprocess.Popen(
                    command,
                    env={**os.environ, **env},
                    stdout=stdout,
                    stderr=stderr,
                    process_group=0,  # signals reach it through _wait alone
                )
        procs.append(WorkerProcess(number, process, out, err))
    return procs


def _wait(procs: list[WorkerProcess]) -> list[tuple[int, int, CrawlSummary]]:
    """Waits for every worker; the first to fail stops the others and is named. Returns
    each one's number, process id and summary.

    The workers run in process groups of their own, so a terminal's Ctrl-C reaches them
    through this process alone: a first SIGTERM or SIGINT is passed on to each, which
    stops taking requests and commits what it has, and the crawl ends with their
    summaries; a second one stops them at once."""
    signalled: list[float] = []  # when the first signal came

    def on_signal(number: int, _: object) -> None:
        if signalled:
            sys.exit(128 + number)  # the finally below kills them
        signalled.append(time.monotonic())
        for p in procs:
            if p.process.poll() is None:
                p.process.send_signal(number)

    previous = {n: signal.signal(n, on_signal) for n in (signal.SIGTERM, signal.SIGINT)}
    failed: WorkerProcess | None = None
    try:
        while failed is None and any(p.process.poll() is None for p in procs):
            failed = next((p for p in procs if p.process.poll() not in (None, 0)), None)
            if signalled and time.monotonic() > signalled[0] + STOP_GRACE:
                break  # a worker past its own grace is killed below
            time.sleep(0.1)
        failed = failed or next((p for p in procs if p.process.returncode != 0), None)
    finally:
        for p in procs:
            stop(p.process, grace=0.0 if signalled else STOP_GRACE)
        for number, handler in previous.items():
            signal.signal(number, handler)
    try:
        if failed is not None:
            raise CrawlError(
                f"{failed.name} of {len(procs)} failed with exit code "
                f"{failed.process.returncode}; the others were stopped and the crawl can be "
                f"resumed. Its last lines:\n{failed.error_tail()}"
            )
        return [(p.number, p.process.pid, p.result()) for p in procs]
    finally:
        shutil.rmtree(procs[0].out.parent, ignore_errors=True)


def merge(results: list[tuple[int, int, CrawlSummary]]) -> CrawlSummary:
    """One summary from the workers' own (number, process id, summary): counts added up,
    and each worker's share. Its crawl id and whether it resumed are the caller's to set."""
    stats: dict[str, float] = {}
    for _, _, result in results:
        for key, value in result.stats.items():
            stats[key] = stats.get(key, 0) + value
    reasons = sorted({str(r.finish_reason) for _, _, r in results})
    return CrawlSummary(
        crawl_id="",
        resumed=False,
        pages=sum(r.pages for _, _, r in results),
        items=sum(r.items for _, _, r in results),
        rows_committed=sum(r.rows_committed for _, _, r in results),
        finish_reason=",".join(reasons),
        stats=dict(sorted(stats.items())),
        workers=[
            WorkerShare(
                worker=number,
                pid=pid,
                pages=r.pages,
                requests=r.requests,
                items=r.items,
                rows_committed=r.rows_committed,
                finish_reason=r.finish_reason,
            )
            for number, pid, r in results
        ],
    )
