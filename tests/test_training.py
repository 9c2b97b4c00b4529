from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from harvest.demosite import generate
from ingestion.datasets import cut_dataset, stratified_split
from ingestion.export import export_dataset
from ingestion.lake import Lake, LakeError
from training.evaluate import metrics
from training.features import encode, ngram_ids
from training.run import train_and_evaluate
from training.trainer import TrainConfig, pick_device


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
        with pytest.raises(RuntimeError, match="no CUDA device"):
            pick_device("cuda")


def lake_with_labels(tmp_path: Path, n: int = 240) -> Lake:
    """curated and labels tables as the gate and the sync write them, from synthetic articles."""
    site = generate(n + 20, seed=5)
    articles = [a for a in site.articles if not a.planted][:n]
    lake = Lake(tmp_path / "lake")
    lake.append(
        "curated/s",
        pa.Table.from_pylist(
            [
                {"content_sha256": f"h{i}", "source": "s", "url": f"u{i}",
                 "body": " ".join(a.paragraphs)}
                for i, a in enumerate(articles)
            ]
        ),
    )  # fmt: skip
    lake.overwrite(
        "labels/s",
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
    lake.append("curated/s", pa.table({"content_sha256": ["h"], "source": ["s"], "url": ["u"],
                                       "body": ["t"]}))  # fmt: skip
    with pytest.raises(LakeError, match="'labels/s' does not exist"):
        cut_dataset(lake, "d", "s", "labels/s", "body")


def test_train_evaluate_and_export(tmp_path: Path) -> None:
    lake = lake_with_labels(tmp_path)
    version = cut_dataset(lake, "d", "s", "labels/s", "body", seed=0)
    result = train_and_evaluate(
        lake, "d", version.version, tmp_path / "reports", TrainConfig(epochs=8, device="cpu")
    )
    test = result["test"]
    assert test["n"] == result["rows"]["test"] == 36
    assert 0.5 < test["macro_f1"] <= 1.0  # chance is 0.25 with four classes
    assert int(np.trace(test["confusion"])) == round(test["accuracy"] * test["n"])
    folder = Path(result["report_dir"])
    for name in ("confusion.png", "metrics.json", "report.md", "model.pt"):
        assert (folder / name).stat().st_size > 0
    assert (folder / "confusion.png").read_bytes()[:4] == b"\x89PNG"

    out = export_dataset(lake, "d", tmp_path / "export")
    parts = {s: pq.read_table(out / f"{s}.parquet") for s in ("train", "validation", "test")}
    assert sum(t.num_rows for t in parts.values()) == 240
    card = (out / "README.md").read_text()
    assert f"version {version.version}" in card
    assert "`curated/s` version 0" in card and "`labels/s` version 0" in card
    assert f"| test | `test.parquet` | {parts['test'].num_rows} |" in card
