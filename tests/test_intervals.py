"""Bootstrap intervals on test figures: the vectorised scores agree with the one-split
metrics, and the intervals behave as intervals."""

from __future__ import annotations

import numpy as np
import pytest

from training.evaluate import macro_f1
from training.intervals import bootstrap, scores


@pytest.mark.parametrize("seed", range(5))
def test_each_draw_scores_as_the_split_metrics_do(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_classes = int(rng.integers(2, 6))
    rows = int(rng.integers(5, 80))
    truth = rng.integers(0, n_classes, rows)
    guess = np.where(rng.random(rows) < 0.7, truth, rng.integers(0, n_classes, rows))
    draws = rng.integers(0, rows, size=(20, rows))
    got = scores(truth, guess, draws, n_classes)
    for i, d in enumerate(draws):
        t, p = truth[d].tolist(), guess[d].tolist()
        assert got["macro_f1"][i] == pytest.approx(macro_f1(t, p, n_classes))
        assert got["accuracy"][i] == pytest.approx(np.mean(np.array(t) == np.array(p)))


def test_intervals_hold_the_figure_and_narrow_with_more_rows() -> None:
    rng = np.random.default_rng(3)

    def width(rows: int) -> tuple[float, list[float], float]:
        truth = rng.integers(0, 3, rows)
        guess = np.where(rng.random(rows) < 0.8, truth, (truth + 1) % 3)
        ci = bootstrap(truth.tolist(), guess.tolist(), truth.tolist(), 3)
        point = float(np.mean(truth == guess))
        low, high = ci["model"]["accuracy"]
        return high - low, [low, high], point

    small, (low, high), point = width(60)
    assert low <= point <= high
    large, _, _ = width(2000)
    assert large < small / 3  # about sqrt(2000 / 60) narrower
    # a perfect baseline beats the model on every draw: the difference is all below zero
    truth = rng.integers(0, 2, 100).tolist()
    wrong = [(t + 1) % 2 if i % 5 == 0 else t for i, t in enumerate(truth)]
    ci = bootstrap(truth, wrong, truth, 2)
    assert ci["baseline"]["macro_f1"] == [1.0, 1.0]
    assert ci["difference"]["accuracy"][1] < 0
    same = bootstrap(truth, wrong, wrong, 2)
    assert same["difference"]["macro_f1"] == [0.0, 0.0]  # paired draws: no spread at all
    assert bootstrap([], [], None, 2) == {}
