"""``--model auto``: every candidate fitted on the same rows, the winner picked on
validation.

The candidates: the n-gram bag, frozen MiniLM with a head, TF-IDF + logistic regression
(the baseline as a model), TF-IDF + MiniLM features with logistic regression (the
labelling model's), and MiniLM fine-tuned end to end where CUDA makes that affordable.
The winner has the highest validation macro F1, on the half of the validation rows that
did not stop its training; the test split is scored for every candidate to report, never
to choose. Up to ``CV_ROWS`` labelled rows a validation split is
too small to choose by (at 100 labels it holds 15 rows, and one row moves macro F1 by
several points), so the candidates are compared by 5-fold cross-validation over the train
and validation rows instead; the winner is still fitted on train, as every model is.
Even so, on a few hundred rows two candidates' cross-validated scores often differ by
less than their noise, and the higher of two such scores is as likely the luckier as the
better model. So among the candidates whose mean shortfall from the best, fold by fold,
is within one standard error of that shortfall, the first in ``PREFERENCE`` wins (the
one-standard-error rule). Each is a model the registry serves, so the model registered can
never fall below the baseline on what it was chosen by.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from training.evaluate import evaluate
from training.trainer import FitResult, TrainConfig, fit, pick_device, predict

AUTO = "auto"
# labelled rows (train and validation) up to which candidates are cross-validated: half a
# validation split of 5,600 rows still chose a model 0.02 macro F1 worse on AG News
CV_ROWS = 10_000
FOLDS = 5
FINETUNED = "embedding-finetuned"  # the embedding model with its encoder trained too

Split = tuple[list[str], list[str]]
# Near-ties go to the steadiest learner: convex fits first, the richer features first
# among them; then the networks, whose epoch is chosen on a handful of held rows
BASELINE = "tfidf-logreg"
PREFERENCE = ("tfidf-minilm-logreg", BASELINE, "ngram", "embedding", FINETUNED)


@dataclass(frozen=True)
class Candidate:
    name: str
    model: str  # the TrainConfig model that fits it
    finetune: bool = False


def candidates(device: str) -> list[Candidate]:
    """In order of cost: a tie goes to the cheaper."""
    out = [
        Candidate("tfidf-logreg", "tfidf-logreg"),
        Candidate("ngram", "ngram"),
        Candidate("tfidf-minilm-logreg", "tfidf-minilm-logreg"),
        Candidate("embedding", "embedding"),
    ]
    if device.startswith("cuda"):
        out.append(Candidate(FINETUNED, "embedding", finetune=True))
    return out


def best(
    train: Split,
    val: Split,
    test: Split,
    classes: list[str],
    config: TrainConfig,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> tuple[FitResult, Candidate, list[dict[str, Any]]]:
    """The winner's fit, the winner, and one row of figures a candidate."""
    rows: list[dict[str, Any]] = []
    fits: dict[str, tuple[FitResult, Candidate]] = {}
    folds: dict[str, list[float]] = {}
    pooled = (train[0] + val[0], train[1] + val[1])
    smallest = min((pooled[1].count(c) for c in set(pooled[1])), default=0)
    by_cv = len(pooled[0]) <= CV_ROWS and smallest >= FOLDS
    # the validation rows that stop training are not the ones that choose: a model's best
    # epoch is the best of many looks at its stopping rows, which flatters it against a
    # model fitted once
    stop, pick = (val, val) if by_cv else halves(val, config.seed)
    for c in candidates(pick_device(config.device)):
        own = replace(
            config,
            model=c.model,
            finetune=c.finetune if c.model == "embedding" else config.finetune,
            checkpoint_dir=f"{config.checkpoint_dir}-{c.name}" if config.checkpoint_dir else None,
        )

        def epoch(row: dict[str, float], name: str = c.name) -> None:
            if on_epoch:
                on_epoch(
                    {
                        "epoch": row.get("epoch", 0),
                        **{f"{name}.{k}": v for k, v in row.items() if k != "epoch"},
                    }
                )

        result = fit(train, stop, classes, own, epoch)
        scored = evaluate(predict(result.model, test[0]), test[1], classes)
        picked = evaluate(predict(result.model, pick[0]), pick[1], classes) if pick[0] else None
        score = picked["macro_f1"] if picked else result.best_val_f1
        cv = None
        if by_cv:
            from training.crossval import cross_validate

            cv = cross_validate(*pooled, classes, own, FOLDS, baseline=False)
            score = cv["model"]["macro_f1"]["mean"]
            folds[c.name] = list(cv["model"]["macro_f1"]["per_fold"])
        rows.append(
            {
                "model": c.name,
                "selected_by": f"{FOLDS}-fold cross-validation"
                if by_cv
                else "the half of validation that did not stop training",
                "score": score,
                "cv_macro_f1": cv["model"]["macro_f1"]["mean"] if cv else None,
                "cv_macro_f1_folds": folds.get(c.name),
                "val_macro_f1": result.best_val_f1,
                "val_accuracy": result.history[result.best_epoch - 1].get("val_accuracy"),
                "test_macro_f1": scored["macro_f1"],
                "test_accuracy": scored["accuracy"],
                "train_seconds": result.train_seconds,
                "epochs_run": result.epochs_run,
            }
        )
        fits[c.name] = (result, c)
    name = choose({r["model"]: r["score"] for r in rows}, folds)
    for row in rows:
        row["chosen"] = row["model"] == name
    return fits[name][0], fits[name][1], rows


def choose(scores: dict[str, float], folds: dict[str, list[float]]) -> str:
    """The highest score; or, given every candidate's scores by fold, the first in
    ``PREFERENCE`` (then in ``scores``' order) within one standard error of the best and
    not below the baseline's score."""
    top = max(scores, key=lambda n: scores[n])  # the first of equal scores: the cheaper
    if set(folds) != set(scores):
        return top
    floor = scores.get(BASELINE, float("-inf"))
    rank = {n: i for i, n in enumerate(PREFERENCE)}
    for name in sorted(scores, key=lambda n: rank.get(n, len(rank))):
        if shortfall(folds[top], folds[name]) <= 0 and scores[name] >= floor:
            return name
    return top


def shortfall(best: list[float], other: list[float]) -> float:
    """How far ``other`` falls short of ``best``, fold by fold, beyond one standard error
    of that shortfall; 0 or less is a near-tie."""
    short = np.subtract(best, other)
    error = float(np.std(short, ddof=1) / np.sqrt(len(short))) if len(short) > 1 else 0.0
    return float(np.mean(short)) - error


def halves(val: Split, seed: int) -> tuple[Split, Split]:
    """Validation split in two, each class alike: rows that stop training, rows that
    choose."""
    from ingestion.split import stratified_split

    parts = stratified_split(val[1], (0.5, 0.5, 0.0), seed)
    one = [i for i, p in enumerate(parts) if p == "train"]
    two = [i for i, p in enumerate(parts) if p == "validation"]
    return (
        ([val[0][i] for i in one], [val[1][i] for i in one]),
        ([val[0][i] for i in two], [val[1][i] for i in two]),
    )
