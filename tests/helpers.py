"""What tests import: the project root, free ports, and the command lines run for real.
Fixtures live in conftest.py, which pytest loads itself; nothing imports it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from harvest.workers import free_port as free_port  # the tests take it from here

ROOT = Path(__file__).resolve().parent.parent


def run_harvest(
    args: list[str], env: dict[str, str], check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Runs the real command line in a child process, from the project root."""
    proc = subprocess.run(
        [sys.executable, "-m", "harvest.cli", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"harvest {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def run_scrapy(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``scrapy ARGS`` from the project root, as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "scrapy", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def last_json(stdout: str) -> dict[str, object]:
    """The JSON summary a command prints as its last line."""
    return dict(json.loads(stdout.strip().splitlines()[-1]))
