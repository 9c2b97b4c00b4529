"""No crawl waits for ever: the stall watchdog, and stops that outstay their grace."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from harvest.demosite import DemoSite, Site
from ingestion.lake import Lake
from ingestion.runs import CRAWL_STAGE, last_run
from spiders.account import account, describe
from tests.helpers import ROOT, last_json, run_harvest

pytestmark = pytest.mark.slow


class Silent:
    """A server that accepts connections, reads the request and never answers: a site or
    proxy hung for real, not a mock of one."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.requests = 0  # requests received, never answered
        self.conns: list[socket.socket] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.conns.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        # a request counts once its first bytes arrive: a bare connect (a reachability
        # probe) does not
        try:
            if conn.recv(4096):
                self.requests += 1
        except OSError:
            pass

    def close(self) -> None:
        self.done.set()
        self.thread.join(timeout=5)
        for conn in self.conns:
            conn.close()
        self.sock.close()


@pytest.fixture
def silent() -> Iterator[Silent]:
    server = Silent()
    try:
        yield server
    finally:
        server.close()


def recipe(tmp_path: Path, demo_site: DemoSite, silent: Silent, **settings: Any) -> Path:
    data = yaml.safe_load((ROOT / "sources" / "demo.yaml").read_text())
    data["name"] = "stuck"
    # the demo site crawls through; the silent site's first request hangs for good
    data["start_urls"] = [demo_site.url + "/", silent.url + "/"]
    data["settings"] = {"DOWNLOAD_TIMEOUT": 900, **settings}
    path = tmp_path / "stuck.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def env_for(tmp_path: Path) -> dict[str, str]:
    # one commit at the end: the rows land only if the forced stop commits them
    return {
        "HARVEST_LAKE": str(tmp_path / "lake"),
        "HARVEST_REPORTS": str(tmp_path / "r"),
        "HARVEST_CRAWL_BATCH_SIZE": "100000",
    }


def test_a_stalled_crawl_commits_what_it_has_and_exits_3(
    tmp_path: Path, demo_site: DemoSite, site: Site, silent: Silent
) -> None:
    path = recipe(tmp_path, demo_site, silent, HARVEST_STALL_TIMEOUT=4, HARVEST_SHUTDOWN_GRACE=2)
    env = env_for(tmp_path)
    proc = run_harvest(["crawl", str(path), "--no-curate"], env, check=False, timeout=300)
    assert proc.returncode == 3, proc.stderr
    assert "stalled: no response, error or item for" in proc.stderr
    assert "stop forced with" in proc.stderr
    assert "Traceback" not in proc.stderr
    summary = last_json(proc.stdout)
    lake = Lake(env["HARVEST_LAKE"])
    urls = lake.read("raw/stuck")["url"].to_pylist()
    assert len(urls) == len(set(urls)) == len(site.articles) == summary["items"]
    # unfinished: the next crawl resumes it and fetches the hung page again
    run = last_run(lake, CRAWL_STAGE, "stuck")
    assert run is not None and run["state"] == "interrupted"
    assert run["crawl_id"] == summary["crawl_id"]


def start(path: Path, env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    out = log.open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "harvest.cli", "crawl", str(path), *args],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=out,
        stderr=out,
    )


def wait_for_hang(silent: Silent, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while silent.requests == 0:
        assert proc.poll() is None, "the crawl ended before it reached the silent site"
        assert time.monotonic() < deadline, "the crawl never reached the silent site"
        time.sleep(0.05)


def test_sigterm_ends_a_hung_crawl_within_its_grace_with_an_account(
    tmp_path: Path, demo_site: DemoSite, silent: Silent
) -> None:
    # no watchdog: only the stop's deadline ends the hung request (900 s timeout)
    path = recipe(tmp_path, demo_site, silent, HARVEST_STALL_TIMEOUT=0, HARVEST_SHUTDOWN_GRACE=3)
    log = tmp_path / "crawl.log"
    proc = start(path, env_for(tmp_path), log)
    try:
        wait_for_hang(silent, proc)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=90)
    finally:
        proc.kill()
    out = log.read_text()
    assert "account: fetched" in out and "stop forced with" in out, out[-3000:]
    summary = last_json("\n".join(line for line in out.splitlines() if line.startswith("{")))
    assert "curated" not in summary  # stopped: it does not go on to curate
    run = last_run(Lake(tmp_path / "lake"), CRAWL_STAGE, "stuck")
    assert run is not None and run["state"] == "interrupted"


@pytest.mark.requires_redis
@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_a_crawl_of_workers_with_their_account(
    number: signal.Signals, tmp_path: Path, demo_site: DemoSite, site: Site, silent: Silent
) -> None:
    # one worker hangs on the silent site; the signal reaches the workers through the
    # command, each commits what it has, and the command gives the crawl's account
    path = recipe(tmp_path, demo_site, silent, HARVEST_STALL_TIMEOUT=0, HARVEST_SHUTDOWN_GRACE=3)
    log = tmp_path / "crawl.log"
    env = env_for(tmp_path)
    proc = start(path, env, log, "--workers", "2", "--no-curate")
    lake = Lake(env["HARVEST_LAKE"])
    since = len(demo_site.requests)
    try:
        wait_for_hang(silent, proc)
        deadline = time.monotonic() + 120
        while len({p for _, p in demo_site.requests[since:] if p.startswith("/article/")}) < len(
            site.articles
        ):  # the other worker asked for every article; a graceful stop scrapes what came
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        proc.send_signal(number)
        proc.wait(timeout=90)
    finally:
        proc.kill()
    out = log.read_text()
    assert "account: fetched" in out and "Traceback" not in out, out[-3000:]
    summary = last_json("\n".join(line for line in out.splitlines() if line.startswith("{")))
    assert "shutdown" in summary["finish_reason"]
    assert len(summary["workers"]) == 2
    urls = lake.read("raw/stuck")["url"].to_pylist()
    assert len(urls) == len(set(urls)) == len(site.articles) == summary["items"]
    run = last_run(lake, CRAWL_STAGE, "stuck")
    assert run is not None and run["state"] == "interrupted"


def crawl_log(tmp_path: Path) -> str:
    """The crawl's own log file, where Scrapy notes the first signal."""
    return "".join(p.read_text() for p in (tmp_path / "r" / "crawls").glob("*.log"))


def test_a_second_signal_ends_the_crawl_at_once(
    tmp_path: Path, demo_site: DemoSite, silent: Silent
) -> None:
    # a grace longer than the wait below: only the second signal can end it in time
    path = recipe(tmp_path, demo_site, silent, HARVEST_STALL_TIMEOUT=0, HARVEST_SHUTDOWN_GRACE=600)
    proc = start(path, env_for(tmp_path), tmp_path / "crawl.log")
    try:
        wait_for_hang(silent, proc)
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 60
        while "shutting down gracefully" not in crawl_log(tmp_path):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        proc.kill()


def test_the_account_names_a_stall_and_a_forced_stop() -> None:
    acc = account({"harvest/stalled_for": 600, "harvest/forced_stop": 2})
    lines = describe(acc)
    assert "stalled: no response, error or item for 600 s; ended" in lines
    assert any(line.startswith("stop forced with 2 request(s)") for line in lines)
    assert not any("stalled" in line for line in describe(account({})))
