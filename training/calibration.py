"""Calibration: does a predicted probability of 0.8 come true eight times in ten?

Expected calibration error (ECE) bins the test rows by the probability of the predicted
class (equal-width bins over [0, 1]) and averages |accuracy - confidence| over the bins,
each weighted by its share of the rows. The reliability plot draws the same bins.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

import numpy as np

from training.arrays import Floats, Indices


class Bin(TypedDict):
    """Test rows whose predicted class has a probability in (low, high]."""

    low: float
    high: float
    count: int
    accuracy: float | None  # None: an empty bin
    confidence: float | None


class Reliability(TypedDict):
    ece: float
    bins: list[Bin]


def reliability(probs: Floats, y_true: list[int] | Indices, bins: int = 15) -> Reliability:
    probs = np.asarray(probs, dtype=float)
    y = np.asarray(y_true)
    confidence = probs.max(axis=1) if len(probs) else np.zeros(0)
    correct = (probs.argmax(axis=1) == y) if len(probs) else np.zeros(0, dtype=bool)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # bin i holds (edges[i], edges[i+1]]; a confidence of exactly 0 goes in the first
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    rows: list[Bin] = []
    ece = 0.0
    for i in range(bins):
        sel = which == i
        n = int(sel.sum())
        acc = conf = None
        if n:
            acc = float(correct[sel].mean())
            conf = float(confidence[sel].mean())
            ece += n / len(y) * abs(acc - conf)
        rows.append(
            {
                "low": float(edges[i]),
                "high": float(edges[i + 1]),
                "count": n,
                "accuracy": acc,
                "confidence": conf,
            }
        )
    return {"ece": float(ece), "bins": rows}


def expected_calibration_error(probs: Floats, y_true: list[int] | Indices, bins: int = 15) -> float:
    return float(reliability(probs, y_true, bins)["ece"])


def draw_reliability(curves: dict[str, Reliability], path: Path) -> None:
    """One line per model: accuracy against mean confidence of each non-empty bin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(5.5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    top.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect")
    for name, curve in curves.items():
        used = [b for b in curve["bins"] if b["count"]]
        line = top.plot(
            [b["confidence"] for b in used],
            [b["accuracy"] for b in used],
            marker="o",
            label=f"{name} (ECE {curve['ece']:.3f})",
        )
        width = used[0]["high"] - used[0]["low"] if used else 0.05
        bottom.bar(
            [(b["low"] + b["high"]) / 2 for b in used],
            [b["count"] for b in used],
            width=width,
            alpha=0.4,
            color=line[0].get_color(),
        )
    top.set_ylabel("accuracy")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.legend(loc="upper left", fontsize=8)
    top.set_title("reliability (test split)")
    bottom.set_xlabel("confidence of the predicted class")
    bottom.set_ylabel("rows")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
