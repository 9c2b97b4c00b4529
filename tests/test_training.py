from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from harvest.demosite import generate
from ingestion.datasets import cut_dataset, stratified_split
from ingestion.export import export_version
from ingestion.lake import Lake, LakeError
from tests.helpers import ROOT, last_json, run_harvest
from training.evaluate import metrics
from training.features import encode, ngram_ids
from training.model import load_model
from training.run import train_and_evaluate
from training.trainer import TrainConfig, TrainError, pick_device


def test_stratified_split_spreads_every_class() -> None:
    labels = ["a"] * 100 + ["b"] * 40
    splits = stratified_split(labels, (0.7, 0.15, 0.15), seed=1)
    per = Counter(zip(labels, splits, strict=True))
    assert (per[("a", "train")], per[("a", "validation")], per[("a", "test")]) == (70, 15, 15)
    assert (per[("b", "train")], per[("b", "validation")], per[("b", "test")]) == (28, 6, 6)
    assert stratified_split(labels, (0.7, 0.15, 0.15), seed=1) == splits
    assert stratified_split(labels, (0.7, 0.15, 0.15), seed=2) != splits


def test_metrics_on_a_known_confusion() -> None:
    m = metrics([0, 0, 1, 1], [0, 1, 1, 1], ["x", "y"])
    assert m["accuracy"] == 0.75
    assert m["confusion"] == [[1, 1], [0, 2]]
    assert m["per_class"]["x"] == {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2}
    assert m["per_class"]["y"]["precision"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)


def test_hashed_ngrams_are_stable_and_bounded() -> None:
    ids = ngram_ids("Stocks rise, stocks fall", buckets=1000)
    assert ids == ngram_ids("stocks RISE stocks fall", buckets=1000)
    assert len(ids) == 4 + 3 and all(0 < i < 1000 for i in ids)
    flat, offsets = encode(["a b", ""], buckets=1000)
    assert offsets.tolist() == [0, 3] and flat[-1].item() == 0


def test_cuda_asked_for_without_cuda_is_an_error() -> None:
    if torch.cuda.is_available():
        assert pick_device("cuda") == "cuda"
    else:
        assert pick_device("auto") == "cpu"
        with pytest.raises(TrainError, match="no CUDA device"):
            pick_device("cuda")


def lake_with_labels(tmp_path: Path, n: int = 240, source: str = "s") -> Lake:
    """curated and labels tables as the gate and the sync write them, from synthetic articles."""
    site = generate(n + 20, seed=5)
    articles = [a for a in site.articles if not a.planted][:n]
    lake = Lake(tmp_path / "lake")
    lake.append(
        f"curated/{source}",
        pa.Table.from_pylist(
            [
                {
                    "content_sha256": f"h{i}",
                    "source": source,
                    "url": f"u{i}",
                    "body": " ".join(a.paragraphs),
                }
                for i, a in enumerate(articles)
            ]
        ),
    )
    lake.overwrite(
        f"labels/{source}",
        pa.Table.from_pylist(
            [{"row_id": f"h{i}", "label": a.label} for i, a in enumerate(articles)]
        ),
    )
    return lake


def test_cut_dataset_joins_labels_and_pins_versions(tmp_path: Path) -> None:
    lake = lake_with_labels(tmp_path, 100)
    first = cut_dataset(lake, "d", "s", "labels/s", "body", seed=0)
    assert first.rows == 100 and not first.reused
    assert first.lineage["tables"] == {"curated/s": 0, "labels/s": 0}
    again = cut_dataset(lake, "d", "s", "labels/s", "body", seed=0)
    assert again.reused and again.version == first.version
    other_seed = cut_dataset(lake, "d", "s", "labels/s", "body", seed=1)
    assert other_seed.version == first.version + 1


def test_cut_without_labels_is_a_clear_error(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    lake.append(
        "curated/s",
        pa.table({"content_sha256": ["h"], "source": ["s"], "url": ["u"], "body": ["t"]}),
    )
    with pytest.raises(LakeError, match="'labels/s' does not exist"):
        cut_dataset(lake, "d", "s", "labels/s", "body")


SUMMARY_KEYS = [
    "dataset",
    "dataset_version",
    "lineage",
    "model",
    "device",
    "precision",
    "world_size",
    "finetuned",
    "epochs",
    "epochs_run",
    "best_epoch",
    "best_val_macro_f1",
    "stopped_early",
    "interrupted",
    "resumed_from",
    "train_samples_per_s",
    "train_seconds",
    "history",
    "rows",
    "test_from",
    "test",
    "baseline",
    "cv",
    "candidates",
    "intervals",
    "config",
    "checkpoint_dir",
    "model_path",
    "report_html",
    "report_dir",
]


def test_train_evaluate_and_export(tmp_path: Path) -> None:
    lake = lake_with_labels(tmp_path)
    version = cut_dataset(lake, "d", "s", "labels/s", "body", seed=0)
    result = train_and_evaluate(
        lake,
        "d",
        version.version,
        tmp_path / "reports",
        TrainConfig(model="ngram", epochs=8, device="cpu"),
    )
    test = result.test
    assert test["n"] == result.rows["test"] == 36
    assert 0.5 < test["macro_f1"] <= 1.0  # chance is 0.25 with four classes
    assert int(np.trace(test["confusion"])) == round(test["accuracy"] * test["n"])
    folder = Path(result.report_dir)
    for name in (
        "confusion.png",
        "metrics.json",
        "report.md",
        "model.pt",
        "report.html",
        "loss.png",
        "reliability.png",
        "roc.png",
        "confusion-baseline.png",
    ):
        assert (folder / name).stat().st_size > 0
    assert (folder / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert result.report_html == str(folder / "report.html")
    assert 0 < test["roc_auc_macro"] <= 1 and 0 <= test["ece"] <= 1
    # the baseline is scored on the same test rows
    assert result.baseline.test["n"] == test["n"]
    assert 0.25 < result.baseline.test["macro_f1"] <= 1.0
    assert result.model == "ngram" and result.epochs_run == len(result.history)
    assert (Path(result.checkpoint_dir) / "last.pt").exists()
    assert len(result.history) >= 1 and "val_loss" in result.history[0]
    # metrics.json holds the whole result under the names it always had; no MLflow run yet
    saved = json.loads((folder / "metrics.json").read_text())
    assert list(saved) == SUMMARY_KEYS and saved == json.loads(json.dumps(result.to_dict()))
    assert saved["config"]["epochs"] == 8 and saved["baseline"]["name"] == "tfidf-logreg"

    out = export_version(lake, "d", tmp_path / "export").out
    parts = {s: pq.read_table(out / f"{s}.parquet") for s in ("train", "validation", "test")}
    assert sum(t.num_rows for t in parts.values()) == 240
    card = (out / "README.md").read_text()
    assert f"version {version.version}" in card
    assert "`curated/s` version 0" in card and "`labels/s` version 0" in card
    assert f"| test | `test.parquet` | {parts['test'].num_rows} |" in card


def test_embedding_model_through_the_lake(tmp_path: Path) -> None:
    lake = lake_with_labels(tmp_path, 80)
    version = cut_dataset(lake, "d", "s", "labels/s", "body", seed=0)
    config = TrainConfig(model="embedding", epochs=3, device="cpu", max_length=64)
    result = train_and_evaluate(lake, "d", version.version, tmp_path / "reports", config)
    assert result.model == "embedding" and not result.finetuned
    assert result.test["n"] == result.rows["test"]
    page = Path(result.report_html).read_text()
    assert "all-MiniLM-L6-v2, Apache-2.0, frozen encoder" in page
    back = load_model(result.model_path)
    assert back.kind == "embedding" and back.classes == tuple(result.test["classes"])


def cli_env(tmp_path: Path) -> dict[str, str]:
    # the tracking store defaults to a folder beside the lake: inside tmp_path too
    return {"HARVEST_LAKE": str(tmp_path / "lake"), "HARVEST_REPORTS": str(tmp_path / "reports")}


def test_train_command_stops_and_resumes(tmp_path: Path) -> None:
    lake_with_labels(tmp_path, 120, source="demo")
    env = cli_env(tmp_path)
    args = ["train", "--source", "demo", "--model", "ngram", "--device", "cpu", "--epochs", "3"]
    args += ["--patience", "0"]
    first = last_json(run_harvest([*args, "--stop-after", "1"], env).stdout)
    assert first["epochs_run"] == 1
    resumed = last_json(run_harvest([*args, "--resume"], env).stdout)
    assert resumed["epochs_run"] == 3 and resumed["dataset_version"] == first["dataset_version"]
    summary = json.loads((Path(str(resumed["report_dir"])) / "metrics.json").read_text())
    assert summary["resumed_from"] == 1
    wide = {**env, "COLUMNS": "300"}  # the usage error box on one line
    bad = run_harvest([*args, "--model", "bogus"], wide, check=False)
    assert bad.returncode == 2 and "'bogus' is not one of 'auto', 'ngram'" in bad.stderr
    unnamed = run_harvest(["train", "--epochs", "1"], wide, check=False)
    assert unnamed.returncode == 2 and "name the source to cut a version from" in unnamed.stderr


def test_torchrun_two_processes_one_result(tmp_path: Path) -> None:
    lake_with_labels(tmp_path, 120, source="demo")
    torchrun = Path(sys.executable).parent / "torchrun"
    proc = subprocess.run(
        [
            str(torchrun),
            "--nproc_per_node",
            "2",
            "-m",
            "harvest.cli",
            "train",
            "--source",
            "demo",
            "--model",
            "ngram",
            "--device",
            "cpu",
            "--epochs",
            "2",
            "--no-baseline",
        ],
        cwd=ROOT,
        env={**os.environ, **cli_env(tmp_path), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1  # rank 0 alone prints, records and writes
    out = json.loads(lines[0])
    summary = json.loads((Path(out["report_dir"]) / "metrics.json").read_text())
    assert summary["world_size"] == 2 and summary["epochs_run"] == 2
    assert len(list((tmp_path / "reports" / "training").iterdir())) == 1
    assert Lake(tmp_path / "lake").version("datasets/demo") == 0  # one cut, by rank 0
