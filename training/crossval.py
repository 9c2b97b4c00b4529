"""Stratified k-fold cross-validation, on demand: how much the test figures could move with
another draw of rows.

The folds cover the train and validation rows of a dataset version (never its test
split). Each fold trains on the other folds, keeping a stratified 15% of them aside for
early stopping, and is scored on the fold held out; the baseline trains on the same rows.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TypedDict

import numpy as np

from training.baseline import fit_baseline
from training.evaluate import evaluate
from training.trainer import TrainConfig, TrainError, fit, predict


def _stratified_aside(labels: list[str], share: float, seed: int) -> list[bool]:
    """True for the rows kept aside for validation: ``share`` of each class, at least one
    where a class has two rows or more."""
    rng = np.random.default_rng(seed)
    aside = [False] * len(labels)
    for label in sorted(set(labels)):
        idx = [i for i, x in enumerate(labels) if x == label]
        rng.shuffle(idx)
        n = round(len(idx) * share) or (1 if len(idx) > 1 else 0)
        for i in idx[:n]:
            aside[i] = True
    return aside


class Spread(TypedDict):
    mean: float
    std: float
    per_fold: list[float]


class CrossValidation(TypedDict):
    """Accuracy and macro F1 over the folds, of the model and of the baseline (None when
    it was not fitted), each as a ``Spread``."""

    folds: int
    rows: int
    model: dict[str, Spread]
    baseline: dict[str, Spread] | None


def summarise(values: list[float]) -> Spread:
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "per_fold": values}


def cross_validate(
    texts: list[str],
    labels: list[str],
    classes: list[str],
    config: TrainConfig,
    folds: int = 5,
    baseline: bool = True,
    validation_share: float = 0.15,
) -> CrossValidation:
    from sklearn.model_selection import StratifiedKFold

    smallest = min(labels.count(c) for c in set(labels))
    if folds < 2 or smallest < folds:
        raise TrainError(
            f"{folds}-fold cross-validation needs at least {max(folds, 2)} rows of every class; "
            f"the smallest class has {smallest}"
        )
    quiet = replace(config, checkpoint_dir=None, resume=False, stop_after=0, progress=False)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=config.seed)
    scores: dict[str, dict[str, list[float]]] = {
        "model": {"accuracy": [], "macro_f1": []},
        "baseline": {"accuracy": [], "macro_f1": []},
    }
    for k, (fit_idx, held_idx) in enumerate(splitter.split(texts, labels)):
        fit_labels = [labels[i] for i in fit_idx]
        aside = _stratified_aside(fit_labels, validation_share, config.seed + k)
        train = (
            [texts[i] for i, a in zip(fit_idx, aside, strict=True) if not a],
            [labels[i] for i, a in zip(fit_idx, aside, strict=True) if not a],
        )
        val = (
            [texts[i] for i, a in zip(fit_idx, aside, strict=True) if a],
            [labels[i] for i, a in zip(fit_idx, aside, strict=True) if a],
        )
        held = [texts[i] for i in held_idx]
        held_labels = [labels[i] for i in held_idx]
        result = fit(train, val, classes, quiet)
        m = evaluate(predict(result.model, held), held_labels, classes)
        scores["model"]["accuracy"].append(m["accuracy"])
        scores["model"]["macro_f1"].append(m["macro_f1"])
        if baseline:
            b = fit_baseline(*train, classes, seed=config.seed)
            bm = evaluate(b.predict_proba(held), held_labels, classes)
            scores["baseline"]["accuracy"].append(bm["accuracy"])
            scores["baseline"]["macro_f1"].append(bm["macro_f1"])
    return {
        "folds": folds,
        "rows": len(texts),
        "model": {k: summarise(v) for k, v in scores["model"].items()},
        "baseline": {k: summarise(v) for k, v in scores["baseline"].items()} if baseline else None,
    }
