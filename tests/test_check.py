"""`harvest lake check` and the damage `harvest status` reports, on faults made for real:
data files deleted, rows written twice, watermarks past a table's end, log entries gone."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pytest

from ingestion.check import (
    DuplicateKeys,
    MissingFiles,
    Unreadable,
    WatermarkGap,
    check_lake,
    check_table,
)
from ingestion.lake import Lake, LakeError
from ingestion.runs import CURATE_STAGE, record_run
from tests.helpers import last_json, run_harvest


def pages(source: str, ids: range, crawl: str, version: int = 0) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "source": source,
                "url": f"http://{source}/{i}",
                "crawl_id": crawl,
                "content_sha256": f"{i}-{version}",
                "body": f"page {i}, edition {version}",
            }
            for i in ids
        ]
    )


def healthy(lake: Lake) -> None:
    """A source crawled twice (the second crawl found one page changed), curated up to
    raw's latest version, labelled."""
    lake.append("raw/s", pages("s", range(4), "c1"))
    lake.append("raw/s", pages("s", range(1), "c2", version=1))  # a changed page, same URL
    lake.append("curated/s", pages("s", range(4), "c1"))
    lake.append("curated/s", pages("s", range(1), "c2", version=1))
    labels = [{"task_id": t, "row_id": f"{t}-0", "label": "a"} for t in range(3)]
    lake.append("labels/s", pa.Table.from_pylist(labels))
    record_run(lake, CURATE_STAGE, "s", {"raw_version": lake.version("raw/s")})


def env_for(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "sources").mkdir(exist_ok=True)
    return {
        "HARVEST_LAKE": str(tmp_path / "lake"),
        "HARVEST_SOURCES": str(tmp_path / "sources"),
        "HARVEST_REPORTS": str(tmp_path / "reports"),
    }


def delete_a_file(lake: Lake, table: str) -> str:
    """Deletes one data file of ``table``'s latest version; returns its file name."""
    gone = sorted(lake.table(table).file_uris())[0]
    os.remove(gone)
    return Path(gone).name


def test_a_healthy_lake_has_no_damage(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    healthy(lake)
    result = check_lake(lake)
    assert not result.damaged and result.problems == []
    by = {t.table: t for t in result.tables}
    assert set(by) == {"raw/s", "curated/s", "labels/s", "runs"}
    assert by["raw/s"].checked == ("missing_files", "duplicate_keys", "watermark_gap")
    assert by["labels/s"].checked == ("missing_files", "duplicate_keys")
    assert by["runs"].checked == ("missing_files",)  # no key
    assert by["curated/s"].files == 2 and by["curated/s"].version == 1

    proc = run_harvest(["lake", "check"], env_for(tmp_path))
    report = last_json(proc.stdout)
    assert report["healthy"] is True and report["damaged"] == []
    assert "4 table(s) checked, no damage found" in proc.stderr


def test_each_kind_of_damage_is_found_and_named(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    healthy(lake)
    gone = delete_a_file(lake, "curated/s")
    # two crawls under one id wrote every page twice
    lake.append("raw/twice", pages("twice", range(5), "c1"))
    lake.append("raw/twice", pages("twice", range(5), "c1"))
    lake.append("labels/twice", pa.Table.from_pylist([{"task_id": 7, "label": "a"}] * 2))
    # a watermark past the table's end: the raw table was written afresh
    lake.append("raw/past", pages("past", range(2), "c1"))
    record_run(lake, CURATE_STAGE, "past", {"raw_version": 6})
    # commits the next curate must read, gone from the log (a checkpoint keeps it loadable)
    for v in range(4):
        lake.append("raw/log", pages("log", range(v, v + 1), f"c{v}"))
    lake.table("raw/log").create_checkpoint()
    for v in (1, 2):
        os.remove(tmp_path / "lake" / "raw" / "log" / "_delta_log" / f"{v:020d}.json")
    record_run(lake, CURATE_STAGE, "log", {"raw_version": 0})
    # a log no loader accepts
    lake.append("broken/x", pages("x", range(1), "c1"))
    (tmp_path / "lake" / "broken" / "x" / "_delta_log" / f"{0:020d}.json").write_text("{oops")

    result = check_lake(lake)
    found = {(p.table, type(p)) for p in result.problems}
    assert found == {
        ("curated/s", MissingFiles),
        ("raw/twice", DuplicateKeys),
        ("labels/twice", DuplicateKeys),
        ("raw/past", WatermarkGap),
        ("raw/log", WatermarkGap),
        ("broken/x", Unreadable),
    }
    by = {(p.table, type(p)): p for p in result.problems}
    missing = by["curated/s", MissingFiles]
    assert isinstance(missing, MissingFiles) and [Path(f).name for f in missing.files] == [gone]
    assert missing.text() == f"curated/s is damaged: 1 data file missing ({gone})"
    twice = by["raw/twice", DuplicateKeys]
    assert isinstance(twice, DuplicateKeys)
    assert (twice.key, twice.keys, twice.extra_rows) == (("url", "crawl_id"), 5, 5)
    labels = by["labels/twice", DuplicateKeys]
    assert isinstance(labels, DuplicateKeys) and labels.examples == ({"task_id": 7},)
    past = by["raw/past", WatermarkGap]
    assert isinstance(past, WatermarkGap) and (past.raw_version, past.latest) == (6, 0)
    assert "past its latest version 0" in past.text()
    log = by["raw/log", WatermarkGap]
    assert isinstance(log, WatermarkGap) and log.missing_commits == (1, 2)
    # the next curate fails on exactly those commits
    with pytest.raises(LakeError, match="log from there on was cleaned up"):
        lake.new_files("raw/log", 0)

    proc = run_harvest(["lake", "check"], env_for(tmp_path), check=False)
    assert proc.returncode == 1, proc.stderr
    report = last_json(proc.stdout)
    assert report["healthy"] is False
    assert set(report["damaged"]) == {t for t, _ in found}
    lines = [line for line in proc.stderr.splitlines() if " is damaged: " in line]
    assert sorted(lines) == sorted(p.text() for p in result.problems)


def test_one_table_is_checked_and_a_table_not_there_is_an_error(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    healthy(lake)
    lake.append("raw/s", pages("s", range(2), "c2", version=1))  # a crawl's pages twice
    assert check_table(lake, "curated/s").problems == []
    assert check_table(lake, "raw/s", keys=False).problems == []

    env = env_for(tmp_path)
    proc = run_harvest(["lake", "check", "raw/s"], env, check=False)
    assert proc.returncode == 1
    (table,) = last_json(proc.stdout)["tables"]
    assert table["table"] == "raw/s" and table["problems"][0]["kind"] == "duplicate_keys"
    assert table["problems"][0]["examples"] == [{"url": "http://s/0", "crawl_id": "c2"}]

    proc = run_harvest(["lake", "check", "raw/nosuch"], env, check=False)
    assert proc.returncode == 2 and "error: no table 'raw/nosuch'" in proc.stderr


def test_status_says_which_table_is_damaged_and_exits_1(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    healthy(lake)
    env = env_for(tmp_path)
    fine = run_harvest(["status"], env)
    assert last_json(fine.stdout)["lake_check"] == {"healthy": True, "tables": 4, "problems": []}
    assert "lake:" not in fine.stderr

    gone = delete_a_file(lake, "curated/s")
    proc = run_harvest(["status"], env, check=False)
    assert proc.returncode == 1, proc.stderr
    assert f"lake: curated/s is damaged: 1 data file missing ({gone})" in proc.stderr
    (problem,) = last_json(proc.stdout)["lake_check"]["problems"]
    assert problem["kind"] == "missing_files" and problem["table"] == "curated/s"

    proc = run_harvest(["status", "s"], env, check=False)
    assert proc.returncode == 1
    entry = last_json(proc.stdout)
    assert [p["table"] for p in entry["damage"]] == ["curated/s"]
    assert json.dumps(entry)  # plain JSON, as the API answers
