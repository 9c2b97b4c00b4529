"""`harvest demo` end to end: its own demo site and Label Studio, every stage for real."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from harvest.demosite import generate
from tests.helpers import free_port, last_json, run_harvest

pytestmark = [pytest.mark.slow, pytest.mark.requires_label_studio]


def test_demo_summary_adds_up(tmp_path: Path) -> None:
    env = {
        "HARVEST_LABEL_STUDIO_PORT": str(free_port()),
        "HARVEST_LABEL_STUDIO_DATA_DIR": str(tmp_path / "labelstudio"),
    }
    workdir = tmp_path / "demo"
    proc = run_harvest(
        ["demo", "--articles", "150", "--seed", "4", "--workdir", str(workdir), "--epochs", "10"],
        env,
        timeout=900,
    )
    s = last_json(proc.stdout)
    site = generate(150, seed=4)
    assert s["site_articles"] == 150 == s["items_crawled"]
    assert s["planted_invalid"] == len(site.planted_invalid) == s["quarantined"]
    assert s["planted_duplicates"] == len(site.planted_duplicates) == s["duplicates_dropped"]
    near = s["planted_near_duplicates"]
    assert near == len(site.planted_near_duplicates) == s["near_duplicates_dropped"]
    planted = s["planted_invalid"] + s["planted_duplicates"] + near  # type: ignore[operator]
    assert s["curated"] == s["site_articles"] - planted  # type: ignore[operator]
    assert s["labeled"] == s["curated"]
    assert 0.4 < s["test_macro_f1"] < 1.0  # type: ignore[operator]
    export = Path(str(s["export_dir"]))
    rows = sum(
        pq.read_table(export / f"{x}.parquet").num_rows for x in ("train", "validation", "test")
    )
    assert rows == s["labeled"]
    assert "Label Studio" in proc.stderr and "stopping" not in proc.stdout
    # the demo stopped the Label Studio it started
    pid_file = tmp_path / "labelstudio" / "label-studio.pid"
    assert not pid_file.exists()
