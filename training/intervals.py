"""Bootstrap 95% intervals on a test split's accuracy and macro F1: the model's, the
baseline's, and their difference.

The test rows are drawn again with replacement ``rounds`` times; the model and the
baseline are scored on the same draws, so the interval of their difference is paired and
much narrower than the two intervals side by side suggest. At 60 test rows one row moves
macro F1 by a point or more: the interval says how far apart two figures must be to mean
anything.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from training.arrays import Floats, Indices

METRICS = ("accuracy", "macro_f1")
LEVEL = 0.95


def scores(y_true: Indices, y_pred: Indices, draws: Indices, n: int) -> dict[str, Floats]:
    """Accuracy and macro F1 of each draw (a row of indices into the test rows), with
    ``training.evaluate.macro_f1``'s convention: classes absent from both sides skipped."""
    t, p = y_true[draws], y_pred[draws]
    rounds = len(draws)
    cells = (np.arange(rounds)[:, None] * n * n + t * n + p).ravel()
    m = np.bincount(cells, minlength=rounds * n * n).reshape(rounds, n, n).astype(np.float64)
    tp = np.diagonal(m, axis1=1, axis2=2)
    truth, guessed = m.sum(axis=2), m.sum(axis=1)
    denominator = truth + guessed
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    present = denominator > 0
    macro = (f1 * present).sum(axis=1) / np.maximum(present.sum(axis=1), 1)
    return {"accuracy": (t == p).mean(axis=1), "macro_f1": macro}


def bootstrap(
    y_true: list[int],
    model: list[int],
    baseline: list[int] | None,
    n: int,
    rounds: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """``{who: {metric: [low, high]}}`` for ``model``, ``baseline`` and ``difference``
    (model minus baseline), at ``LEVEL``."""
    truth = np.asarray(y_true, dtype=np.int64)
    if len(truth) == 0:
        return {}
    draws = np.random.default_rng(seed).integers(0, len(truth), size=(rounds, len(truth)))
    tail = (1 - LEVEL) / 2 * 100

    def interval(values: Floats) -> list[float]:
        low, high = np.percentile(values, [tail, 100 - tail])
        return [float(low), float(high)]

    ours = scores(truth, np.asarray(model, dtype=np.int64), draws, n)
    out: dict[str, Any] = {
        "level": LEVEL,
        "rounds": rounds,
        "model": {k: interval(ours[k]) for k in METRICS},
    }
    if baseline is not None:
        theirs = scores(truth, np.asarray(baseline, dtype=np.int64), draws, n)
        out["baseline"] = {k: interval(theirs[k]) for k in METRICS}
        out["difference"] = {k: interval(ours[k] - theirs[k]) for k in METRICS}
    return out
