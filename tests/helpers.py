"""What tests import: the project root, free ports, a loopback HTTP server, and the
command lines run for real.
Fixtures live in conftest.py, which pytest loads itself; nothing imports it."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from harvest.workers import free_port as free_port  # the tests take it from here

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """``handler`` on a loopback port for as long as the block runs; its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


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


def in_fresh_process(code: str, timeout: float = 120) -> None:
    """Runs ``code`` in a new interpreter from the project root, where no test has imported
    anything yet; fails with its stderr unless it exits 0."""
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr


def alive(pid: int) -> bool:
    """Whether process ``pid`` still runs: not gone, and not ended waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def last_json(stdout: str) -> dict[str, object]:
    """The JSON summary a command prints as its last line."""
    return dict(json.loads(stdout.strip().splitlines()[-1]))


def section_recipe(tmp_path: Path, name: str, section: str = "/guarded", **extra: Any) -> Path:
    """The demo recipe, named ``name``, crawling one section of the demo site (the guarded
    one by default), with ``extra`` keys on top; written to ``tmp_path``."""
    data = yaml.safe_load((ROOT / "sources" / "demo.yaml").read_text())
    data.update(
        name=name,
        follow=[
            {"allow": rf"{section}/page/\d+$", "restrict_css": "nav.pagination"},
            {"allow": f"{section}/article/", "restrict_css": "ul.articles"},
        ],
        item_urls=f"{section}/article/",
        **extra,
    )
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def labelling_env(tmp_path: Path, name: str, token: str) -> dict[str, str]:
    """A sources folder holding the demo recipe renamed ``name``, a lake and a Label
    Studio data folder under ``tmp_path``, and the token: what a labelling command needs
    beside where Label Studio is."""
    recipe = yaml.safe_load((ROOT / "sources" / "demo.yaml").read_text())
    recipe["name"] = name
    (tmp_path / "sources").mkdir()
    (tmp_path / "sources" / f"{name}.yaml").write_text(yaml.safe_dump(recipe))
    return {
        "HARVEST_SOURCES": str(tmp_path / "sources"),
        "HARVEST_LAKE": str(tmp_path / "lake"),
        "HARVEST_LABEL_STUDIO_DATA_DIR": str(tmp_path / "ls"),
        "HARVEST_LABEL_STUDIO_TOKEN": token,
    }


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made by openssl, in ``folder``."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    return cert, key
