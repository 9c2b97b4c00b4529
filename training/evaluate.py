"""Test-split metrics and the plots of the report.

Accuracy, per-class and macro precision, recall and F1, one-vs-rest ROC AUC, log loss,
calibration and the confusion matrix, from true classes and predicted probabilities.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NotRequired, TypedDict

import numpy as np

from training.arrays import Floats, Indices
from training.calibration import Bin, reliability


class ClassMetrics(TypedDict):
    precision: float
    recall: float
    f1: float
    support: int
    roc_auc: NotRequired[float | None]  # from probabilities; None: the split cannot tell


class Metrics(TypedDict):
    """The scores of one split (``metrics``); the last four only from probabilities."""

    n: int
    accuracy: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    per_class: dict[str, ClassMetrics]
    confusion: list[list[int]]  # rows: true class, columns: predicted, in classes order
    classes: list[str]
    roc_auc_macro: NotRequired[float | None]
    log_loss: NotRequired[float]
    ece: NotRequired[float]
    reliability: NotRequired[list[Bin]]


def confusion(y_true: list[int], y_pred: list[int], n: int) -> Indices:
    m = np.zeros((n, n), dtype=np.int64)
    for t, p in zip(y_true, y_pred, strict=True):
        m[t, p] += 1
    return m


def per_class(m: Indices) -> tuple[Floats, Floats, Floats]:
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


def roc_auc_ovr(
    y_true: list[int], probs: Floats, n: int
) -> tuple[float | None, list[float | None]]:
    """One-vs-rest ROC AUC per class and their mean; None for a class the split lacks or
    holds alone (AUC needs rows on both sides)."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y_true)
    out: list[float | None] = []
    for k in range(n):
        positive = y == k
        if positive.all() or not positive.any():
            out.append(None)
        else:
            out.append(float(roc_auc_score(positive, probs[:, k])))
    known = [a for a in out if a is not None]
    return (float(np.mean(known)) if known else None), out


def log_loss(y_true: list[int], probs: Floats) -> float:
    if not len(y_true):
        return 0.0
    p = np.clip(probs[np.arange(len(y_true)), np.asarray(y_true)], 1e-12, 1.0)
    return float(-np.log(p).mean())


def metrics(
    y_true: list[int], y_pred: list[int], classes: list[str], probs: Floats | None = None
) -> Metrics:
    m = confusion(y_true, y_pred, len(classes))
    precision, recall, f1 = per_class(m)
    present = m.sum(axis=1) + m.sum(axis=0) > 0
    out: Metrics = {
        "n": len(y_true),
        "accuracy": float(np.trace(m) / m.sum()) if m.sum() else 0.0,
        "macro_precision": float(precision[present].mean()) if present.any() else 0.0,
        "macro_recall": float(recall[present].mean()) if present.any() else 0.0,
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
    if probs is not None:
        auc, auc_per_class = roc_auc_ovr(y_true, probs, len(classes))
        out["roc_auc_macro"] = auc
        for c, a in zip(classes, auc_per_class, strict=True):
            out["per_class"][c]["roc_auc"] = a
        out["log_loss"] = log_loss(y_true, probs)
        calibration = reliability(probs, y_true)
        out["ece"] = calibration["ece"]
        out["reliability"] = calibration["bins"]
    return out


def evaluate(probs: Floats, labels: list[str], classes: list[str]) -> Metrics:
    """``metrics`` from probabilities and label names."""
    index = {c: i for i, c in enumerate(classes)}
    y_true = [index[label] for label in labels]
    return metrics(y_true, np.asarray(probs).argmax(axis=1).tolist(), classes, np.asarray(probs))


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw_confusion(m: Indices, classes: list[str], path: Path, title: str) -> None:
    plt = _pyplot()
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
            ax.text(
                j,
                i,
                str(m[i, j]),
                ha="center",
                va="center",
                color="white" if m[i, j] > threshold else "black",
            )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw_loss_curves(history: list[dict[str, float]], path: Path, best_epoch: int) -> None:
    """Train and validation loss per epoch, and validation macro F1 on a second axis."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train loss")
    ax.plot(epochs, [h["val_loss"] for h in history], marker="o", label="validation loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy")
    other = ax.twinx()
    other.plot(
        epochs,
        [h["val_macro_f1"] for h in history],
        color="tab:green",
        marker="s",
        label="validation macro F1",
    )
    other.set_ylabel("macro F1")
    if best_epoch:
        ax.axvline(best_epoch, color="grey", linestyle=":", linewidth=1)
    lines = ax.get_legend_handles_labels()
    more = other.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="center right")
    ax.set_title(f"loss curves (kept: epoch {best_epoch})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw_roc(y_true: list[int], probs: Floats, classes: list[str], path: Path) -> None:
    from sklearn.metrics import roc_curve

    plt = _pyplot()
    y = np.asarray(y_true)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    for k, c in enumerate(classes):
        positive = y == k
        if positive.all() or not positive.any():
            continue
        fpr, tpr, _ = roc_curve(positive, probs[:, k])
        ax.plot(fpr, tpr, label=c)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC, one class against the rest (test split)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
