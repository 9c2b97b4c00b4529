"""Trains and evaluates a model on one dataset version and writes its report folder.

Beside the model, the same run fits the TF-IDF baseline on the same training rows and
scores both on the same test rows; k-fold cross-validation runs when asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ingestion.datasets import read_dataset, split_rows
from ingestion.lake import Lake, LakeError
from training import distributed, select
from training.baseline import fit_baseline
from training.calibration import Reliability, draw_reliability
from training.evaluate import Metrics, draw_confusion, draw_loss_curves, draw_roc, evaluate
from training.intervals import bootstrap
from training.linear import MODEL_FILE as LINEAR_FILE
from training.model import TextClassifier
from training.report import write_report
from training.trainer import TrainConfig, fit, predict

MODEL_FILE = "model.pt"
if TYPE_CHECKING:
    from training.crossval import CrossValidation
    from training.tracking import TrackedRun

Split = tuple[list[str], list[str]]


@dataclass(frozen=True)
class BaselineScore:
    """The TF-IDF baseline, fitted on the model's training rows and scored on its test rows."""

    name: str
    params: dict[str, Any]  # scikit-learn's settings, as given
    seconds: float
    test: Metrics


@dataclass(frozen=True)
class TrainingResult:
    """One training run of a dataset version. ``to_dict`` is its ``metrics.json``, and
    gains ``mlflow`` once the run is recorded there (``training.tracking.train_tracked``)."""

    dataset: str
    dataset_version: int
    lineage: dict[str, int]  # table -> the version the dataset was cut from
    model: str
    device: str
    precision: str
    world_size: int
    finetuned: bool
    epochs: int
    epochs_run: int
    best_epoch: int
    best_val_macro_f1: float
    stopped_early: bool
    interrupted: bool
    resumed_from: int
    train_samples_per_s: float
    train_seconds: float
    history: list[dict[str, float]]  # one row an epoch: epoch, losses, validation scores
    rows: dict[str, int]  # split -> rows
    # "evaluation reserve" (rows a push drew at random) or "every labelled row"
    test_from: str
    test: Metrics
    baseline: BaselineScore | None
    cv: CrossValidation | None
    # --model auto: per candidate its validation and test figures, and which was chosen
    candidates: list[dict[str, Any]] | None
    # bootstrap 95% intervals of the test figures: model, baseline, their difference
    intervals: dict[str, Any]
    config: TrainConfig
    checkpoint_dir: str | None
    model_path: str
    report_html: str
    report_dir: str
    mlflow: TrackedRun | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.mlflow is None:
            del out["mlflow"]
        return out


def train_and_evaluate(
    lake: Lake,
    dataset: str,
    version: int | None,
    report_root: str | Path,
    config: TrainConfig,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    *,
    baseline: bool | None = None,
    folds: int | None = None,
) -> TrainingResult:
    """Trains ``config.model`` on the version's train split (early stopping on validation)
    and writes ``report_root/training/<dataset>-v<version>-<time>/``. Checkpoints go to
    ``config.checkpoint_dir`` or, when that is None, to
    ``report_root/checkpoints/<dataset>-v<version>-<model>/``, which ``config.resume``
    continues from. ``baseline`` and ``folds`` default to the config's."""
    data, meta = read_dataset(lake, dataset, version)

    train, val, test = (split_rows(data, s) for s in ("train", "validation", "test"))
    for name, part in (("train", train), ("validation", val), ("test", test)):
        if not part[0]:
            raise LakeError(
                f"dataset {dataset!r} version {meta['version']} has no {name} rows; label more"
            )
    classes = sorted(set(data["label"].to_pylist()))
    if config.checkpoint_dir is None:
        where = Path(report_root) / "checkpoints" / f"{dataset}-v{meta['version']}-{config.model}"
        config = replace(config, checkpoint_dir=str(where))

    def folder() -> Path:
        # one folder per run: retraining the same version with other settings keeps both
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        return Path(report_root) / "training" / f"{dataset}-v{meta['version']}-{stamp}"

    return train_on_splits(
        train,
        val,
        test,
        classes,
        config,
        folder,
        dataset,
        meta["version"],
        dict(meta.get("tables", {})),
        on_epoch,
        baseline=config.baseline if baseline is None else baseline,
        folds=config.folds if folds is None else folds,
        test_from=str(meta.get("test_from") or "every labelled row"),
    )


def train_on_splits(
    train: Split,
    val: Split,
    test: Split,
    classes: list[str],
    config: TrainConfig,
    folder: Callable[[], Path] | Path,
    dataset: str,
    dataset_version: int,
    lineage: dict[str, int],
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    *,
    baseline: bool = True,
    folds: int = 0,
    test_from: str = "every labelled row",
) -> TrainingResult:
    """Fit, evaluate, baseline, cross-validate and report on ``dataset`` version
    ``dataset_version``, cut from the table versions in ``lineage``; every process of a
    ``torchrun`` returns rank 0's result, and only rank 0 writes."""
    candidates = None
    if config.model == select.AUTO:
        result, chosen, candidates = select.best(train, val, test, classes, config, on_epoch)
        fitted = replace(config, model=chosen.model, finetune=chosen.finetune)
    else:
        result, fitted = fit(train, val, classes, config, on_epoch), config
    cv = None
    if folds:
        from training.crossval import cross_validate

        # every process takes part: each fold's fit is distributed too
        cv = cross_validate(train[0] + val[0], train[1] + val[1], classes, fitted, folds, baseline)
    if distributed.rank() != 0:
        received: TrainingResult = distributed.broadcast(None)
        return received

    out = folder() if callable(folder) else folder
    out.mkdir(parents=True, exist_ok=True)
    probs = predict(result.model, test[0])
    index = {c: i for i, c in enumerate(classes)}
    y_true = [index[label] for label in test[1]]
    test_metrics = evaluate(probs, test[1], classes)
    title = f"{dataset} v{dataset_version}: test split"
    draw_confusion(np.asarray(test_metrics["confusion"]), classes, out / "confusion.png", title)
    draw_loss_curves(result.history, out / "loss.png", result.best_epoch)
    draw_roc(y_true, probs, classes, out / "roc.png")
    curves: dict[str, Reliability] = {
        "model": {"ece": test_metrics["ece"], "bins": test_metrics["reliability"]}
    }
    base, base_pred = None, None
    if baseline:
        b = fit_baseline(*train, classes, seed=config.seed)
        base_probs = b.predict_proba(test[0])
        base_pred = base_probs.argmax(axis=1).tolist()
        base_metrics = evaluate(base_probs, test[1], classes)
        base = BaselineScore("tfidf-logreg", b.params, b.seconds, base_metrics)
        curves["baseline"] = {"ece": base_metrics["ece"], "bins": base_metrics["reliability"]}
        draw_confusion(
            np.asarray(base_metrics["confusion"]),
            classes,
            out / "confusion-baseline.png",
            f"baseline, {title}",
        )
    draw_reliability(curves, out / "reliability.png")
    intervals = bootstrap(y_true, probs.argmax(axis=1).tolist(), base_pred, len(classes))
    model_path = out / (MODEL_FILE if isinstance(result.model, TextClassifier) else LINEAR_FILE)
    result.model.save(str(model_path))
    summary = TrainingResult(
        dataset=dataset,
        dataset_version=dataset_version,
        lineage=lineage,
        model=fitted.model,
        device=result.device,
        precision=result.precision,
        world_size=result.world_size,
        finetuned=result.finetuned,
        epochs=config.epochs,
        epochs_run=result.epochs_run,
        best_epoch=result.best_epoch,
        best_val_macro_f1=result.best_val_f1,
        stopped_early=result.stopped_early,
        interrupted=result.interrupted,
        resumed_from=result.resumed_from,
        train_samples_per_s=result.samples_per_s,
        train_seconds=result.train_seconds,
        history=result.history,
        rows={"train": len(train[0]), "validation": len(val[0]), "test": len(test[0])},
        test_from=test_from,
        test=test_metrics,
        baseline=base,
        cv=cv,
        candidates=candidates,
        intervals=intervals,
        config=config,
        checkpoint_dir=result.checkpoint,
        model_path=str(model_path),
        report_html=str(out / "report.html"),
        report_dir=str(out),
    )
    write_report(out, summary.to_dict())
    sent: TrainingResult = distributed.broadcast(summary)
    return sent
