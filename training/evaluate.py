"""Test-split metrics, a confusion matrix drawn to PNG, and the report folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def confusion(y_true: list[int], y_pred: list[int], n: int) -> np.ndarray:
    m = np.zeros((n, n), dtype=np.int64)
    for t, p in zip(y_true, y_pred, strict=True):
        m[t, p] += 1
    return m


def per_class(m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tp = np.diag(m).astype(float)
    predicted = m.sum(axis=0)
    actual = m.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return precision, recall, f1


def macro_f1(y_true: list[int], y_pred: list[int], n: int) -> float:
    m = confusion(y_true, y_pred, n)
    present = m.sum(axis=1) + m.sum(axis=0) > 0
    f1 = per_class(m)[2]
    return float(f1[present].mean()) if present.any() else 0.0


def metrics(y_true: list[int], y_pred: list[int], classes: list[str]) -> dict[str, Any]:
    m = confusion(y_true, y_pred, len(classes))
    precision, recall, f1 = per_class(m)
    return {
        "n": len(y_true),
        "accuracy": float(np.trace(m) / m.sum()) if m.sum() else 0.0,
        "macro_f1": macro_f1(y_true, y_pred, len(classes)),
        "per_class": {
            c: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(m[i].sum()),
            }
            for i, c in enumerate(classes)
        },
        "confusion": m.tolist(),
        "classes": classes,
    }


def draw_confusion(m: np.ndarray, classes: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 2.5, 1.1 * len(classes) + 2))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = m.max() / 2 if m.size else 0
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, str(m[i, j]), ha="center", va="center",
                    color="white" if m[i, j] > threshold else "black")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(folder: Path, result: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(result, indent=2))
    test = result["test"]
    lines = [
        f"# Model report: dataset `{result['dataset']}` version {result['dataset_version']}",
        "",
        f"Device: {result['device']}. Best epoch {result['best_epoch']} of {result['epochs']} "
        f"(validation macro F1 {result['best_val_macro_f1']:.3f}).",
        "",
        f"Test split: {test['n']} rows, accuracy {test['accuracy']:.3f}, "
        f"macro F1 {test['macro_f1']:.3f}.",
        "",
        "| class | precision | recall | F1 | support |",
        "| --- | --- | --- | --- | --- |",
        *(
            f"| {c} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | {v['support']} |"
            for c, v in test["per_class"].items()
        ),
        "",
        "![confusion matrix](confusion.png)",
        "",
    ]
    (folder / "report.md").write_text("\n".join(lines))
