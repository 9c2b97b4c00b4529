"""Table versions: history, pinned reads, dataset rebuilds, compaction and vacuum."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harvest.demosite import DemoSite, generate
from ingestion.datasets import cut_dataset, read_dataset, rebuild_dataset, table_sha256
from ingestion.lake import Lake, LakeError
from ingestion.runs import record_run
from ingestion.versions import compact, history, pinned_versions, vacuum
from ingestion.writer import BatchWriter
from labeling.sync import LABELS_SCHEMA
from tests.helpers import last_json, run_harvest
from validation.gate import curate, new_raw_rows
from validation.suite import GateSpec

ARTICLES = [a for a in generate(220, seed=11).articles if not a.planted]


def add_curated(lake: Lake, start: int, stop: int) -> int:
    """Curated rows ``start..stop`` and labels for every curated row so far, as the gate and
    the label sync write them; returns the labels version."""
    rows = [
        {
            "content_sha256": f"h{i}",
            "source": "s",
            "url": f"u{i}",
            "body": " ".join(ARTICLES[i].paragraphs),
        }
        for i in range(start, stop)
    ]
    lake.append("curated/s", pa.Table.from_pylist(rows), {"raw_version": stop})
    labels = [
        {
            "task_id": i,
            "annotation_id": i,
            "row_id": f"h{i}",
            "url": f"u{i}",
            "label": ARTICLES[i].label,
            "annotator": 1,
            "updated_at": "2026-01-01",
        }
        for i in range(stop)
    ]
    return lake.overwrite("labels/s", pa.Table.from_pylist(labels, schema=LABELS_SCHEMA))


def raw_batch(lake: Lake, crawl_id: str, start: int, n: int) -> None:
    writer = BatchWriter(lake, "raw/s", batch_size=n, metadata={"crawl_id": crawl_id})
    for i in range(start, start + n):
        body = " ".join(ARTICLES[i].paragraphs)
        writer.add(
            {
                "url": f"http://x/{i}",
                "source": "s",
                "crawl_id": crawl_id,
                "body": body,
                "content_sha256": f"h{i}",
            }
        )


def test_reads_pin_a_version_or_a_time(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    lake.append("t", pa.table({"a": [1]}))
    time.sleep(0.05)
    between = datetime.now(UTC)
    time.sleep(0.05)
    lake.append("t", pa.table({"a": [2]}))
    assert lake.read("t", version=0)["a"].to_pylist() == [1]
    assert lake.read("t", as_of=between)["a"].to_pylist() == [1]
    assert lake.read("t", as_of=between.isoformat())["a"].to_pylist() == [1]
    assert sorted(lake.read("t", as_of=datetime.now(UTC))["a"].to_pylist()) == [1, 2]
    assert sorted(lake.read("t")["a"].to_pylist()) == [1, 2]


def test_a_version_or_time_that_does_not_exist_is_a_clear_error(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    lake.append("t", pa.table({"a": [1]}))
    with pytest.raises(LakeError, match=r"table 't' has no version 7 \(versions 0 to 0"):
        lake.read("t", version=7)
    with pytest.raises(LakeError, match="table 't' did not exist at 2001-01-01T00:00:00"):
        lake.read("t", as_of="2001-01-01")
    with pytest.raises(LakeError, match="'yesterday' is not an ISO 8601 time"):
        lake.read("t", as_of="yesterday")
    with pytest.raises(LakeError, match="no table 'nope'"):
        lake.read("nope", version=0)


def test_history_lists_operations_rows_and_crawl_ids(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    raw_batch(lake, "crawl-a", 0, 5)
    raw_batch(lake, "crawl-b", 5, 3)
    compact(lake, "raw/s")
    commits = history(lake, "raw/s")
    assert [(c.version, c.operation, c.rows_added, c.crawl_id) for c in commits] == [
        (2, "OPTIMIZE", 0, None),
        (1, "WRITE append", 3, "crawl-b"),
        (0, "WRITE append", 5, "crawl-a"),
    ]
    assert [c.version for c in history(lake, "raw/s", limit=1)] == [2]
    assert commits[0].time >= commits[2].time


def test_gate_sees_no_new_rows_after_a_compaction(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    spec = GateSpec(text_field="body")
    for k in range(3):
        raw_batch(lake, "c1", 10 * k, 10)
    first = curate(lake, "s", spec, tmp_path / "reports")
    assert (first.rows_in, first.curated) == (30, 30)

    result = compact(lake, "raw/s")
    assert (result["files_removed"], result["files_added"]) == (3, 1)
    assert lake.new_files("raw/s", first.raw_version) == []
    assert curate(lake, "s", spec, tmp_path / "reports").rows_in == 0

    # rows appended, then compacted into one file with the curated ones before the gate ran:
    # the gate reads exactly the appended rows, from the files they were appended in
    raw_batch(lake, "c2", 30, 4)
    raw_batch(lake, "c2", 34, 4)
    compact(lake, "raw/s")
    batch, _ = new_raw_rows(lake, "s")
    assert batch is not None and sorted(batch["content_sha256"].to_pylist()) == sorted(
        f"h{i}" for i in range(30, 38)
    )


def test_vacuum_keeps_rows_the_gate_has_not_read(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    raw_batch(lake, "c1", 0, 5)
    record_run(lake, "curate", "s", {"raw_version": 0})
    raw_batch(lake, "c2", 5, 5)
    raw_batch(lake, "c2", 10, 5)
    compact(lake, "raw/s")
    pins = [p for p in pinned_versions(lake) if p.table == "raw/s"]
    assert [p.version for p in pins] == [1, 2]
    result = vacuum(lake, "raw/s", retain_hours=0)
    assert result.removed == [] and [p.version for p in result.kept] == [1, 2]
    files = lake.new_files("raw/s", 0)
    rows = pa.concat_tables(pq.read_table(f) for f in files)
    assert sorted(rows["content_sha256"].to_pylist()) == sorted(f"h{i}" for i in range(5, 15))

    # without the pins, vacuum deletes them, and the gate says what was lost
    vacuum(lake, "raw/s", retain_hours=0, pins=[])
    with pytest.raises(LakeError, match="compacted and then vacuumed before they were read"):
        lake.new_files("raw/s", 0)


def test_dataset_rebuilt_identically_after_more_rows_and_labels(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    add_curated(lake, 0, 80)
    first = cut_dataset(lake, "d", "s", "labels/s", "body", seed=3)
    assert first.lineage["tables"] == {"curated/s": 0, "labels/s": 0}
    assert first.lineage["curated"] == "curated/s" and first.lineage["labels"] == "labels/s"
    stored = lake.read("datasets/d", first.version)
    assert first.lineage["content_sha256"] == table_sha256(stored)

    add_curated(lake, 80, 120)  # more crawls, more labels
    add_curated(lake, 120, 150)
    second = cut_dataset(lake, "d", "s", "labels/s", "body", seed=3)
    assert second.version == first.version + 1 and second.rows == 150
    assert second.lineage["tables"] == {"curated/s": 2, "labels/s": 2}

    rebuilt = rebuild_dataset(lake, "d", first.version)
    assert rebuilt.identical and rebuilt.rows == 80
    assert rebuilt.sha256 == rebuilt.stored_sha256 == first.lineage["content_sha256"]
    assert rebuilt.table.equals(stored)
    assert rebuild_dataset(lake, "d").version == second.version


def test_compact_and_vacuum_keep_every_version_a_dataset_names(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    add_curated(lake, 0, 60)
    add_curated(lake, 60, 90)  # labels/s version 0 is named by no dataset
    first = cut_dataset(lake, "d", "s", "labels/s", "body")
    add_curated(lake, 90, 130)
    cut_dataset(lake, "d", "s", "labels/s", "body")
    before = rebuild_dataset(lake, "d", first.version).sha256
    for table in lake.tables():
        compact(lake, table)
    # compaction's own commits carry no lineage: the dataset version is still the cut's
    assert read_dataset(lake, "d")[1]["version"] == first.version + 1
    assert cut_dataset(lake, "d", "s", "labels/s", "body").reused

    pins = pinned_versions(lake)
    assert {(p.table, p.version) for p in pins} >= {
        ("curated/s", 1),
        ("labels/s", 1),
        ("datasets/d", first.version),
    }
    dry = vacuum(lake, "labels/s", retain_hours=0, dry_run=True)
    assert len(dry.removed) == 1 and lake.read("labels/s", 0).num_rows == 60
    results = {t: vacuum(lake, t, retain_hours=0) for t in lake.tables()}
    assert [p.version for p in results["labels/s"].kept] == [1]
    assert [p.version for p in results["curated/s"].kept] == [1, 2]  # both cuts, compacted
    with pytest.raises(LakeError, match=r"'labels/s' version 0 cannot be read: .*vacuumed"):
        lake.read("labels/s", 0)  # named by nothing, so vacuumed

    again = rebuild_dataset(lake, "d", first.version)
    assert again.identical and again.sha256 == before


def test_lake_and_dataset_commands(lake_env: dict[str, str], tmp_path: Path) -> None:
    lake = Lake(lake_env["HARVEST_LAKE"])
    raw_batch(lake, "crawl-7", 0, 4)
    add_curated(lake, 0, 50)
    first = cut_dataset(lake, "d", "s", "labels/s", "body")
    add_curated(lake, 50, 70)
    cut_dataset(lake, "d", "s", "labels/s", "body")

    argv = ["lake", "history", "raw/s", "--table"]
    shown = run_harvest(argv, {**lake_env, "COLUMNS": "200"}).stdout
    assert "crawl id" in shown and "crawl-7" in shown and "WRITE append" in shown
    listed = json.loads(run_harvest(["lake", "history", "datasets/d"], lake_env).stdout)
    assert [c["version"] for c in listed] == [1, 0]
    assert listed[1]["lineage"]["tables"] == {"curated/s": 0, "labels/s": 0}
    assert listed[1]["rows_added"] == 50

    compacted = json.loads(run_harvest(["lake", "compact"], lake_env).stdout.splitlines()[-1])
    assert {r["table"] for r in compacted["compacted"]} == set(lake.tables())
    proc = run_harvest(["lake", "vacuum", "--retain-hours", "0"], lake_env)
    assert "kept the files of curated/s version 0: dataset d version 0" in proc.stderr
    assert "kept the files of labels/s version 0: dataset d version 0" in proc.stderr

    out = tmp_path / "rebuilt.parquet"
    args = ["dataset", "rebuild", "d", "--version", str(first.version), "--out", str(out)]
    rebuilt = last_json(run_harvest(args, lake_env).stdout)
    assert rebuilt["identical"] is True and rebuilt["rows"] == 50
    assert rebuilt["sha256"] == rebuilt["stored_sha256"] == first.lineage["content_sha256"]
    assert table_sha256(pq.read_table(out)) == rebuilt["sha256"]

    missing = run_harvest(["lake", "history", "raw/none"], lake_env, check=False)
    assert missing.returncode == 2 and "no table 'raw/none'" in missing.stderr
    missing = run_harvest(["dataset", "rebuild", "d", "--version", "9"], lake_env, check=False)
    assert missing.returncode == 2 and "'datasets/d' has no version 9" in missing.stderr


@pytest.mark.slow
def test_crawled_dataset_rebuilt_after_another_crawl(
    lake_env: dict[str, str], demo_site: DemoSite
) -> None:
    """Two real crawls and curations; the dataset cut after the first survives compaction
    and vacuum and is rebuilt bit for bit."""
    lake = Lake(lake_env["HARVEST_LAKE"])

    def crawl_and_label(url: str, truth: dict[str, str]) -> int:
        run_harvest(["crawl", "demo", "--start-url", url + "/"], lake_env)
        curated = lake.read("curated/demo", columns=["content_sha256", "url"]).to_pylist()
        rows = [
            {
                "task_id": i,
                "annotation_id": i,
                "row_id": r["content_sha256"],
                "url": r["url"],
                "label": truth[r["url"]],
                "annotator": 1,
                "updated_at": "2026-01-01",
            }
            for i, r in enumerate(curated)
        ]
        return lake.overwrite("labels/demo", pa.Table.from_pylist(rows, schema=LABELS_SCHEMA))

    site = demo_site.site
    truth: dict[str, str] = dict(site.truth(demo_site.url)["classes"])  # type: ignore[call-overload]
    crawl_and_label(demo_site.url, truth)
    first = cut_dataset(lake, "demo", "demo", "labels/demo", "body")
    crawl_ids = {c.crawl_id for c in history(lake, "raw/demo")}
    assert len(crawl_ids) == 1 and None not in crawl_ids

    other = generate(60, seed=21)
    with DemoSite(other) as second_site:
        truth.update(other.truth(second_site.url)["classes"])  # type: ignore[call-overload]
        crawl_and_label(second_site.url, truth)
    second = cut_dataset(lake, "demo", "demo", "labels/demo", "body")
    assert second.rows > first.rows
    assert len({c.crawl_id for c in history(lake, "raw/demo")}) == 2

    run_harvest(["lake", "compact"], lake_env)
    run_harvest(["lake", "vacuum", "--retain-hours", "0"], lake_env)
    args = ["dataset", "rebuild", "demo", "--version", str(first.version)]
    rebuilt = last_json(run_harvest(args, lake_env).stdout)
    assert rebuilt["identical"] is True and rebuilt["rows"] == first.rows
    assert rebuilt["sha256"] == first.lineage["content_sha256"]
    assert curate_finds_nothing(lake_env)


def curate_finds_nothing(env: dict[str, str]) -> bool:
    again = last_json(run_harvest(["curate", "demo"], env).stdout)
    return again["rows_in"] == 0


def test_as_of_between_dataset_cuts(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    add_curated(lake, 0, 40)
    cut_dataset(lake, "d", "s", "labels/s", "body")
    time.sleep(0.05)
    between = datetime.now(UTC)
    time.sleep(0.05)
    add_curated(lake, 40, 60)
    cut_dataset(lake, "d", "s", "labels/s", "body")
    assert lake.read("datasets/d", as_of=between).num_rows == 40
    assert lake.read("datasets/d", as_of=between + timedelta(hours=1)).num_rows == 60
