"""Progress of long work off a terminal: a line every interval, a last count if any line
was printed, JSON under HARVEST_LOG_FORMAT=json, nothing when turned off."""

from __future__ import annotations

import io
import json
import random

import pytest

from ingestion.ticker import Ticker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def ticked(steps: list[float], every: float, env: dict[str, str] | None = None) -> list[str]:
    """The lines a ticker prints when each step of work takes the given seconds."""
    clock, out = Clock(), io.StringIO()
    with Ticker("encoding", len(steps), "texts", every, out, clock) as ticker:
        for seconds in steps:
            clock.now += seconds
            ticker.advance()
    return out.getvalue().splitlines()


def test_a_line_every_interval_then_the_last_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HARVEST_PROGRESS", raising=False)
    monkeypatch.delenv("HARVEST_LOG_FORMAT", raising=False)
    rng = random.Random()
    every = rng.choice([1.0, 5.0])
    steps = [rng.uniform(0.1, 2.0) for _ in range(rng.randint(20, 60))]
    lines = ticked(steps, every)
    # one line each time an interval had passed since the last, then the final count
    expected, last, now = 0, 0.0, 0.0
    for seconds in steps:
        now += seconds
        if now - last >= every:
            expected, last = expected + 1, now
    assert len(lines) == expected + (1 if expected else 0), (every, steps)
    if lines:
        assert lines[-1].startswith(f"encoding: {len(steps)}/{len(steps)} texts")


def test_quick_work_says_nothing_and_off_means_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HARVEST_LOG_FORMAT", raising=False)
    assert ticked([0.1] * 10, every=5.0) == []
    monkeypatch.setenv("HARVEST_PROGRESS", "false")
    assert ticked([3.0] * 10, every=5.0) == []


def test_json_lines_under_the_json_log_format(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HARVEST_PROGRESS", raising=False)
    monkeypatch.setenv("HARVEST_LOG_FORMAT", "json")
    records = [json.loads(line) for line in ticked([3.0] * 4, every=5.0)]
    assert [r["message"].split(",")[0] for r in records] == [
        "encoding: 2/4 texts",
        "encoding: 4/4 texts",
        "encoding: 4/4 texts",
    ]
    assert {r["logger"] for r in records} == {"harvest.progress"}
