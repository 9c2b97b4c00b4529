"""A real `harvest serve` on loopback for the service tests, and the recipes they crawl."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
import yaml

from harvest.demosite import DemoSite
from harvest.service.runs import RunStore
from tests.helpers import ROOT, free_port

DONE = ("finished", "failed", "interrupted", "timed_out")


def write_recipe(
    sources: Path,
    name: str,
    site: DemoSite,
    settings: dict[str, Any] | None = None,
    pages: int | None = 6,
    schedule: dict[str, Any] | None = None,
) -> Path:
    data = yaml.safe_load((ROOT / "sources" / "demo.yaml").read_text())
    data["name"] = name
    data["start_urls"] = [site.url + "/"]
    if pages:
        data["limits"] = {"pages": pages}
    if settings:
        data["settings"] = settings
    if schedule:
        data["schedule"] = schedule
    sources.mkdir(parents=True, exist_ok=True)
    path = sources / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# one page a second: a crawl that is still running when a test acts on it
SLOW = {"CONCURRENT_REQUESTS": 1, "DOWNLOAD_DELAY": 1.0}


class Live:
    """``harvest serve`` in a child process with its own lake, sources and token."""

    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.sources = tmp_path / "sources"
        self.sources.mkdir(exist_ok=True)
        self.token = secrets.token_hex(16)
        self.secret = secrets.token_hex(16)
        self.env = {
            "HARVEST_LAKE": str(tmp_path / "lake"),
            "HARVEST_REPORTS": str(tmp_path / "reports"),
            "HARVEST_SOURCES": str(self.sources),
            "HARVEST_LABEL_STUDIO_DATA_DIR": str(tmp_path / "labelstudio"),
            # nothing answers there: the webhook never reaches a real Label Studio
            "HARVEST_LABEL_STUDIO_PORT": str(free_port()),
            "HARVEST_API_TOKEN": self.token,
            "HARVEST_WEBHOOK_SECRET": self.secret,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.lives = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def log_file(self) -> Path:
        """The whole log of the service's latest start."""
        return self.tmp / f"serve-{self.lives}.log"

    def start(self, *args: str) -> Live:
        self.port = free_port()
        self.lives += 1
        log = self.log_file.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "harvest.cli",
                "serve",
                "--port",
                str(self.port),
                "--no-label-studio",
                "--stop-grace",
                "30",
                *args,
            ],
            cwd=ROOT,
            env={**os.environ, **self.env},
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"serve exited: {self.log()}"
            try:
                if requests.get(self.url + "/openapi.json", timeout=2).ok:
                    return self
            except requests.ConnectionError:
                time.sleep(0.2)
        raise AssertionError(f"serve did not answer within a minute: {self.log()}")

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")[-3000:]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.proc is not None
        if sig == signal.SIGKILL:
            os.killpg(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self.proc = None
        return code

    def get(self, path: str, **kw: Any) -> requests.Response:
        return requests.get(self.url + path, timeout=30, **kw)

    def post(self, path: str, auth: bool = True, **kw: Any) -> requests.Response:
        headers = {**(self.auth if auth else {}), **kw.pop("headers", {})}
        return requests.post(self.url + path, headers=headers, timeout=30, **kw)

    def runs(self, **params: Any) -> list[dict[str, Any]]:
        answer = self.get("/runs", params=params)
        assert answer.status_code == 200, answer.text
        return list(answer.json())

    def wait_run(
        self, run_id: int, until: Callable[[dict[str, Any]], bool], timeout: float = 90
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = dict(self.get(f"/runs/{run_id}").json())
            if until(run):
                return run
            time.sleep(0.3)
        raise AssertionError(f"run {run_id} never got there: {run}\n{self.log()}")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        # crawls a killed service left behind
        store_file = self.tmp / "service" / "runs.db"
        if store_file.exists():
            for run in RunStore(store_file).list(1000):
                if run["pid"]:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(run["pid"], signal.SIGKILL)
