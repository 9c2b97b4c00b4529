"""Trains and evaluates a model on one dataset version and writes its report folder."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc

from ingestion.datasets import read_dataset
from ingestion.lake import Lake, LakeError
from training.evaluate import draw_confusion, metrics, write_report
from training.trainer import TrainConfig, fit, predict


def train_and_evaluate(
    lake: Lake,
    dataset: str,
    version: int | None,
    report_root: str | Path,
    config: TrainConfig,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    data, meta = read_dataset(lake, dataset, version)

    def split(name: str) -> tuple[list[str], list[str]]:
        part = data.filter(pc.equal(data["split"], name))
        return part["text"].to_pylist(), part["label"].to_pylist()

    train, val, test = split("train"), split("validation"), split("test")
    for name, part in (("train", train), ("validation", val), ("test", test)):
        if not part[0]:
            raise LakeError(
                f"dataset {dataset!r} version {meta['version']} has no {name} rows; label more"
            )
    classes = sorted(set(data["label"].to_pylist()))
    result = fit(train, val, classes, config, on_epoch)
    probs = predict(result.model, test[0])
    index = {c: i for i, c in enumerate(classes)}
    y_true = [index[label] for label in test[1]]
    y_pred = np.asarray(probs.argmax(axis=1)).tolist()
    test_metrics = metrics(y_true, y_pred, classes)

    # one folder per run: retraining the same version with other settings keeps both
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    folder = Path(report_root) / "training" / f"{dataset}-v{meta['version']}-{stamp}"
    folder.mkdir(parents=True, exist_ok=True)
    draw_confusion(
        np.asarray(test_metrics["confusion"]),
        classes,
        folder / "confusion.png",
        f"{dataset} v{meta['version']}: test split",
    )
    result.model.save(str(folder / "model.pt"))
    summary = {
        "dataset": dataset,
        "dataset_version": meta["version"],
        "lineage": meta.get("tables", {}),
        "device": result.device,
        "epochs": config.epochs,
        "best_epoch": result.best_epoch,
        "best_val_macro_f1": result.best_val_f1,
        "history": result.history,
        "rows": {"train": len(train[0]), "validation": len(val[0]), "test": len(test[0])},
        "test": test_metrics,
        "report_dir": str(folder),
    }
    write_report(folder, summary)
    return summary
