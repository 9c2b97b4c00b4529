"""What a command logs on stderr: its level from --log-level or the recipe's LOG_LEVEL,
and text or JSON lines (--log-format), the service's format."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from harvest.demosite import DemoSite, generate
from tests.helpers import ROOT, free_port, last_json, run_harvest


@pytest.fixture(scope="module")
def small() -> Iterator[DemoSite]:
    with DemoSite(generate(12, seed=11)) as server:
        yield server


def crawl(
    small: DemoSite, tmp_path: Path, *options: str, level: str | None = None
) -> tuple[dict[str, object], list[str]]:
    """Crawls the demo recipe (with ``level`` as its LOG_LEVEL); its summary and stderr."""
    recipe = yaml.safe_load((ROOT / "sources" / "demo.yaml").read_text())
    if level:
        recipe["settings"] = {**recipe.get("settings", {}), "LOG_LEVEL": level}
    tmp_path.mkdir(exist_ok=True)
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(recipe))
    env = {"HARVEST_LAKE": str(tmp_path / "lake"), "HARVEST_REPORTS": str(tmp_path / "reports")}
    args = [*options, "crawl", str(path), "--no-curate", "--start-url", small.url + "/"]
    proc = run_harvest(args, env)
    return last_json(proc.stdout), proc.stderr.splitlines()


@pytest.mark.slow
def test_stderr_shows_warnings_unless_the_recipe_says_otherwise(
    small: DemoSite, tmp_path: Path
) -> None:
    summary, quiet = crawl(small, tmp_path / "a")
    assert summary["items"] == 12
    assert not [line for line in quiet if " INFO: " in line]
    _, told = crawl(small, tmp_path / "b", level="INFO")
    assert any("[scrapy.core.engine] INFO: Spider opened" in line for line in told)


@pytest.mark.slow
def test_json_lines_at_the_level_asked_for(small: DemoSite, tmp_path: Path) -> None:
    summary, lines = crawl(small, tmp_path, "--log-format", "json", "--log-level", "info")
    assert summary["items"] == 12
    records = [json.loads(line) for line in lines]  # every line, or this fails
    assert {"time", "level", "logger", "message"} <= set(records[0])
    assert {"logger": "scrapy.core.engine", "level": "info"}.items() <= next(
        r for r in records if r["message"] == "Spider opened"
    ).items()


@pytest.mark.slow
def test_a_failure_under_json_is_a_json_record(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/"
    env = {"HARVEST_LAKE": str(tmp_path / "lake"), "HARVEST_LOG_FORMAT": "json"}
    proc = run_harvest(["crawl", "demo", "--start-url", url], env, check=False)
    assert proc.returncode == 69
    (record,) = [json.loads(line) for line in proc.stderr.splitlines()]
    assert record["level"] == "error"
    assert record["message"].startswith(f"error: crawl of demo got no response from {url}")


def test_the_service_logs_json_unless_told_text(monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    from harvest import logs
    from harvest.service import logs as service_logs

    root = logging.getLogger()
    kept = root.handlers[:], root.level
    try:
        monkeypatch.delenv(logs.FORMAT, raising=False)
        service_logs.setup()
        assert isinstance(root.handlers[0].formatter, logs.JsonFormatter)
        assert root.level == logging.INFO
        monkeypatch.setenv(logs.FORMAT, "text")
        service_logs.setup()
        assert not isinstance(root.handlers[0].formatter, logs.JsonFormatter)
    finally:
        root.handlers[:], level = kept
        root.setLevel(level)
