"""Crawl workers forked from the command's process: orders, exits, no reactor, no orphans.

Forking is tried in a child interpreter of the test's own: pytest's process may run
threads, where ``forked_workers`` rightly refuses to fork.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from harvest import stages
from harvest.config import load_config
from harvest.workerfork import forked_workers
from tests.helpers import ROOT, alive


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def python(code: str, env: dict[str, str]) -> dict[str, Any]:
    """What ``code`` printed last, as JSON; it must succeed."""
    proc = run_python(code, env)
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


SETUP = """
import json, os, sys
from harvest import stages
from harvest.config import load_config
from harvest.workerfork import forked_workers
cfg = load_config()
recipe = stages.recipe(cfg, "demo")
"""


def test_forked_workers_run_their_orders_and_the_unused_ones_end(
    lake_env: dict[str, str], tmp_path: Path
) -> None:
    code = (
        SETUP
        + f"""
folder = {str(tmp_path)!r}
with forked_workers(3, cfg, recipe) as kids:
    assert len(kids) == 3
    kids[0].start(["crawl", "--help"], {{}}, folder + "/0.out", folder + "/0.err")
    kids[1].start(["no-such-command"], {{}}, folder + "/1.out", folder + "/1.err")
    codes = [kids[0].wait(60), kids[1].wait(60)]
pids = [k.pid for k in kids]
print(json.dumps({{"codes": codes, "pids": pids, "dismissed": kids[2].returncode}}))
"""
    )
    out = python(code, lake_env)
    assert out["codes"] == [0, 2]  # click's exit code for a usage error
    assert "--start-url" in (tmp_path / "0.out").read_text()
    assert "no-such-command" in (tmp_path / "1.err").read_text()
    assert out["dismissed"] == 0  # its pipe closed without orders: it went quietly
    assert len(set(out["pids"])) == 3
    assert all(gone(pid, within=0) for pid in out["pids"])


def test_waiting_workers_end_when_their_parent_is_killed(lake_env: dict[str, str]) -> None:
    code = (
        SETUP
        + """
import signal
with forked_workers(2, cfg, recipe) as kids:
    print(json.dumps({"pids": [k.pid for k in kids]}), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""
    )
    proc = run_python(code, lake_env)
    assert proc.returncode == -9
    pids = json.loads(proc.stdout.strip().splitlines()[-1])["pids"]
    assert len(pids) == 2
    assert all(gone(pid) for pid in pids), "a worker outlived the crawl that forked it"


@pytest.mark.parametrize("source", ["demo", "demo_js"])
def test_preloading_a_crawl_installs_no_reactor(source: str, lake_env: dict[str, str]) -> None:
    code = f"""
import json, sys
from harvest import stages
from harvest.config import load_config
from harvest.workerfork import preload
cfg = load_config()
fit = preload(cfg, stages.recipe(cfg, {source!r}))
print(json.dumps({{
    "fit": fit,
    "reactor": "twisted.internet.reactor" in sys.modules,
    "loaded": [m for m in ("scrapy.core.engine", "spiders.watchdog", "spiders.frontier",
                           "spiders.pipelines") if m in sys.modules],
}}))
"""
    out = python(code, lake_env)
    assert out["reactor"] is False and out["fit"] is True
    loaded = ["scrapy.core.engine", "spiders.watchdog", "spiders.frontier", "spiders.pipelines"]
    assert out["loaded"] == loaded


def test_a_process_running_threads_does_not_fork(
    lake_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in lake_env.items():
        monkeypatch.setenv(name, value)
    cfg = load_config()
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, daemon=True)
    thread.start()
    try:
        with forked_workers(2, cfg, stages.recipe(cfg, "demo")) as kids:
            assert kids == []  # the caller starts fresh interpreters instead
    finally:
        stop.set()
        thread.join()


def test_a_component_that_installs_a_reactor_on_import_is_not_forked(
    lake_env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "eager.py").write_text(
        "from twisted.internet import reactor  # installs the default reactor\n"
        "class Eager:\n    pass\n"
    )
    recipe = yaml.safe_load((ROOT / "sources" / "demo.yaml").read_text())
    recipe["settings"] = {"EXTENSIONS": {"eager.Eager": 500}}
    path = tmp_path / "eager.yaml"
    path.write_text(yaml.safe_dump(recipe))
    code = f"""
import json
from harvest import stages
from harvest.config import load_config
from harvest.workerfork import forked_workers
cfg = load_config()
with forked_workers(2, cfg, stages.recipe(cfg, {str(path)!r})) as kids:
    print(json.dumps({{"forked": len(kids)}}))
"""
    out = python(code, {**lake_env, "PYTHONPATH": str(tmp_path)})
    assert out["forked"] == 0  # fresh interpreters, each installing its own reactor
