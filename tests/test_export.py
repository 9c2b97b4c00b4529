"""Exports: shards, the dataset card, the manifest, and loading without this project."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingestion.datasets import cut_dataset, read_dataset
from ingestion.export import SourceNotes, export_version
from ingestion.lake import Lake, LakeError
from ingestion.writer import BatchWriter
from labeling.sync import LABELS_SCHEMA
from tests.helpers import last_json, run_harvest
from tests.test_datasets import ARTICLES, body, recipe
from validation.gate import curate
from validation.suite import GateSpec, Rule

SPLITS = ("train", "validation", "test")


def curated_lake(root: Path, n: int = 90) -> Lake:
    """raw/s crawled and curated by the real gate (so the runs table holds its results),
    with a labels/s for every curated row."""
    lake = Lake(root)
    writer = BatchWriter(lake, "raw/s", batch_size=n + 1, metadata={"crawl_id": "c1"})
    for i in range(n):
        text = body(i) if i % 30 else "too short"  # three rows the gate quarantines
        writer.add(
            {
                "url": f"http://s/{i}",
                "source": "s",
                "crawl_id": "c1",
                "body": text,
                "content_sha256": f"h{i}",
            }
        )
    writer.flush()
    spec = GateSpec(text_field="body", rules=[Rule("length_between", "body", 30, 20000)])
    curate(lake, "s", spec, root.parent / "reports")
    curated = lake.read("curated/s", columns=["content_sha256", "url"]).to_pylist()
    labels = [
        {
            "task_id": i,
            "annotation_id": i,
            "row_id": r["content_sha256"],
            "url": r["url"],
            "label": ARTICLES[int(r["url"].rsplit("/", 1)[1])].label,
            "annotator": 1,
            "updated_at": "2026-01-01",
        }
        for i, r in enumerate(curated)
    ]
    lake.overwrite("labels/s", pa.Table.from_pylist(labels, schema=LABELS_SCHEMA))
    return lake


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    lake = curated_lake(tmp_path_factory.mktemp("export") / "lake")
    cut_dataset(lake, "d", "s", "labels/s", "body", seed=1, fractions=(0.8, 0.1, 0.1))
    return lake


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_shards_manifest_and_card(lake: Lake, tmp_path: Path) -> None:
    notes = {"s": SourceNotes(licence="CC BY 4.0", robots="obeyed (ROBOTSTXT_OBEY on)")}
    done = export_version(lake, "d", tmp_path / "out", shards=2, notes=notes)
    out = done.out
    stored, meta = read_dataset(lake, "d")
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert names == sorted(
        ["README.md", "manifest.json"]
        + [f"data/{s}-0000{i}-of-00002.parquet" for s in SPLITS for i in (0, 1)]
    )

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["version"] == meta["version"] and manifest["rows"] == stored.num_rows == 87
    assert manifest["lineage"]["tables"] == {"curated/s": 0, "labels/s": 0}
    assert manifest["lineage"]["content_sha256"] == meta["content_sha256"]
    assert manifest["card"]["sha256"] == sha256(out / "README.md")
    for f in manifest["files"]:
        path = out / f["path"]
        assert f["sha256"] == sha256(path) and f["bytes"] == path.stat().st_size
        assert f["rows"] == pq.read_metadata(path).num_rows
    for split in SPLITS:
        parts = [pq.read_table(out / f"data/{split}-0000{i}-of-00002.parquet") for i in (0, 1)]
        assert abs(parts[0].num_rows - parts[1].num_rows) <= 1
        expected = stored.filter(pa.compute.equal(stored["split"], split))
        assert pa.concat_tables(parts).equals(expected)
        assert manifest["splits"][split] == expected.num_rows

    card = (out / "README.md").read_text()
    assert card.startswith('---\npretty_name: "d"\nconfigs:\n- config_name: default\n')
    assert "  - split: test\n    path:\n    - data/test-00000-of-00002.parquet\n" in card
    assert f"# Dataset `d`, version {meta['version']}" in card
    labels = stored["label"].to_pylist()
    for label in set(labels):
        assert f"| {label} | " in card and f" | {labels.count(label)} |\n" in card
    assert "| `s` | 87 | CC BY 4.0 | obeyed (ROBOTSTXT_OBEY on) |" in card
    assert "- `curated/s` version 0" in card and "- `labels/s` version 0" in card
    assert "0 exact and 0 near duplicate pairs across splits" in card
    # the gate's results: three rows failed the length rule
    assert "1 curate run(s) checked 90 rows: 87 curated, 3 quarantined" in card
    assert "failed expectations: `length_between(body)[30,20000]` 3" in card
    assert "report `raw-v0.html`" in card  # its name: the folder is the machine's own


def test_parquet_export_loads_with_hugging_face_datasets(
    lake: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    out = export_version(lake, "d", tmp_path / "out", shards=3).out
    stored, _ = read_dataset(lake, "d")
    want = {s: stored.filter(pa.compute.equal(stored["split"], s)) for s in SPLITS}

    # only file paths and the library: nothing of this project reads the files
    files = {s: sorted(str(p) for p in (out / "data").glob(f"{s}-*.parquet")) for s in SPLITS}
    loaded = datasets.load_dataset("parquet", data_files=files, cache_dir=str(tmp_path / "hf"))
    assert set(loaded) == set(SPLITS)
    for split in SPLITS:
        assert loaded[split]["row_id"] == want[split]["row_id"].to_pylist()
        assert loaded[split]["label"] == want[split]["label"].to_pylist()
        assert loaded[split]["text"] == want[split]["text"].to_pylist()

    # the folder alone: the card's front matter names the splits' files
    by_dir = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf2"))
    assert {s: by_dir[s].num_rows for s in SPLITS} == {s: want[s].num_rows for s in SPLITS}


def test_jsonl_export_and_one_file_per_split(lake: Lake, tmp_path: Path) -> None:
    out = export_version(lake, "d", tmp_path / "out", fmt="jsonl").out
    stored, _ = read_dataset(lake, "d")
    for split in SPLITS:
        rows = [json.loads(line) for line in (out / f"{split}.jsonl").read_text().splitlines()]
        assert rows == stored.filter(pa.compute.equal(stored["split"], split)).to_pylist()
    manifest = json.loads((out / "manifest.json").read_text())
    assert [f["path"] for f in manifest["files"]] == [f"{s}.jsonl" for s in SPLITS]
    assert "| test | `test.jsonl` |" in (out / "README.md").read_text()


def test_export_is_reproducible_and_replaces_only_exports(lake: Lake, tmp_path: Path) -> None:
    out = export_version(lake, "d", tmp_path / "a", shards=3).out
    first = json.loads((out / "manifest.json").read_text())
    again = export_version(lake, "d", tmp_path / "b", shards=3).out
    assert json.loads((again / "manifest.json").read_text())["files"] == first["files"]

    # a second export into the same folder leaves no shard of the first behind
    export_version(lake, "d", tmp_path / "a", shards=1)
    left = sorted(p.name for p in (tmp_path / "a" / "data").iterdir())
    assert left == [f"{s}-00000-of-00001.parquet" for s in ("test", "train", "validation")]

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(LakeError, match="holds .*notes.txt, which no export writes"):
        export_version(lake, "d", foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(LakeError, match="format 'csv' is not one of parquet, jsonl"):
        export_version(lake, "d", tmp_path / "c", fmt="csv")


def test_export_command(lake_env: dict[str, str], tmp_path: Path) -> None:
    lake = curated_lake(Path(lake_env["HARVEST_LAKE"]), 60)
    sources = recipe(tmp_path, "s", licence="CC BY-SA 4.0", settings={"ROBOTSTXT_OBEY": False})
    env = {**lake_env, "HARVEST_SOURCES": str(sources)}
    made = last_json(
        run_harvest(["dataset", "create", "d", "--from", "s", "--labels", "s"], env).stdout
    )
    out = tmp_path / "export"
    args = [
        "export",
        "d",
        "--version",
        str(made["version"]),
        "--format",
        "parquet",
        "--shards",
        "2",
        "--out",
        str(out),
    ]
    result = last_json(run_harvest(args, env).stdout)
    assert result["rows"] == made["rows"] == lake.read("curated/s").num_rows
    assert result["files"] == 6 and Path(str(result["manifest"])).is_file()
    card = (out / "README.md").read_text()
    assert "| `s` | 58 | CC BY-SA 4.0 | not obeyed (ROBOTSTXT_OBEY off) |" in card
    missing = run_harvest(["export", "nope", "--out", str(tmp_path / "x")], env, check=False)
    assert missing.returncode == 2 and "no dataset 'nope'" in missing.stderr
