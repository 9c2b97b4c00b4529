"""The progress of a curate: a line a batch when asked for, a rich bar on a terminal,
nothing in a captured output unless asked."""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import pytest

from harvest.demosite import generate
from harvest.recipe import load_recipe
from harvest.stages import gate_spec
from ingestion.lake import Lake
from tests.helpers import ROOT
from tests.test_dedup import raw_table, rows
from validation.gate import CurateResult, curate
from validation.progress import EVERY, PROGRESS_ENV, CurateProgress


def test_a_line_a_batch_with_what_was_checked_deduplicated_and_committed(
    tmp_path: Path,
) -> None:
    site = generate(150, seed=3)
    raw = rows(site).drop(columns=["content_sha256"])
    lake = Lake(tmp_path / "lake")
    for part in (raw.iloc[:60], raw.iloc[60:]):
        lake.append("raw/demo", raw_table(part))
    out = io.StringIO()
    ticks = iter(range(0, 100, 10))
    progress = CurateProgress("demo", live=False, stream=out, clock=lambda: float(next(ticks)))
    spec = gate_spec(load_recipe("demo", ROOT / "sources"))
    result = curate(lake, "demo", spec, tmp_path / "reports", chunk_rows=50, progress=progress)

    lines = out.getvalue().splitlines()
    assert len(lines) == 2  # a raw commit a batch
    last = dict(re.findall(r"(\w+(?:/s)?)=([\d,]+)", lines[-1]))
    assert int(last["checked"].replace(",", "")) == result.rows_in == len(raw)
    dropped = result.duplicates_dropped + result.near_duplicates_dropped
    assert int(last["deduplicated"].replace(",", "")) == dropped > 0
    assert int(last["committed"].replace(",", "")) == result.curated
    assert f"({len(raw):,}/{len(raw):,} rows)" in lines[-1]
    assert int(last["rows/s"].replace(",", "")) > 0


def test_the_bar_on_a_terminal_ends_at_every_row() -> None:
    out = io.StringIO()
    progress = CurateProgress("demo", live=True, stream=out)
    progress.start(1_000)
    progress.update(CurateResult("demo", rows_in=1_000, curated=900, near_duplicates_dropped=40))
    progress.stop()
    shown = out.getvalue()
    assert "curate demo" in shown and "checked=1,000" in shown
    assert "deduplicated=40" in shown and "committed=900" in shown


@pytest.mark.parametrize(("mode", "every"), [(None, EVERY), ("false", None), ("true", 0.0)])
def test_off_a_terminal_a_line_every_few_seconds_unless_told(
    mode: str | None, every: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal, even under -s
    if mode is None:
        monkeypatch.delenv(PROGRESS_ENV, raising=False)
    else:
        monkeypatch.setenv(PROGRESS_ENV, mode)
    progress = CurateProgress.from_env("demo")
    assert (progress.every if progress else None) == every


def test_lines_at_most_every_interval() -> None:
    out, now = io.StringIO(), [0.0]
    progress = CurateProgress("demo", live=False, stream=out, clock=lambda: now[0], every=5.0)
    progress.start(100)
    for batch in range(1, 11):  # a batch every 2 s: lines at 6, 12 and 18 s
        now[0] = 2.0 * batch
        progress.update(CurateResult("demo", rows_in=10 * batch, curated=10 * batch))
    progress.stop()  # and the last count
    checked = [re.search(r"checked=(\d+)", line)[1] for line in out.getvalue().splitlines()]
    assert checked == ["30", "60", "90", "100"]
    quick = io.StringIO()
    progress = CurateProgress("demo", live=False, stream=quick, clock=lambda: now[0], every=5.0)
    progress.start(100)
    now[0] += 1
    progress.update(CurateResult("demo", rows_in=100, curated=100))
    progress.stop()
    assert quick.getvalue() == ""  # done within the first interval
