"""`harvest tune`: a hyperparameter search, then the best configuration trained."""

from __future__ import annotations

import typer

from harvest.cli.choices import Model
from harvest.cli.common import config, emit


def tune(
    source: str | None = typer.Option(
        None, help="the source whose curated and labels tables a version is cut from"
    ),
    dataset: str | None = typer.Option(None, help="dataset name (default: the source)"),
    version: int | None = typer.Option(
        None, help="search on this version of --dataset as it is, cutting none"
    ),
    model: Model = typer.Option(
        "auto", help="the model searched; auto searches the model among the candidates too"
    ),
    trials: int = typer.Option(20, min=1, help="trials in the study, counting earlier runs'"),
    timeout: float | None = typer.Option(None, min=1, help="seconds this search may take"),
    epochs: int = typer.Option(20, help="at most this many a trial; pruning may end sooner"),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto", help="auto (CUDA when present, else CPU), cpu or cuda"),
) -> None:
    """Search hyperparameters on a dataset version (Optuna: TPE, median pruning on
    validation macro F1 each epoch), each trial a nested MLflow run; then train the best
    configuration and register it as `harvest train` does. The study is kept beside the
    MLflow store: run the same command again to resume a search that was stopped."""
    from harvest import stages
    from harvest.cli.train import which_version
    from ingestion.lake import Lake
    from ingestion.locks import SourceLock
    from training.select import AUTO
    from training.trainer import MODELS, TrainConfig, TrainError
    from training.tune import tune as search

    if model not in (AUTO, *MODELS):
        raise TrainError(f"unknown model {model!r}; one of {AUTO}, {', '.join(MODELS)}")
    cfg = config()
    lake = Lake(cfg.lake)
    name, cut = which_version(cfg, lake, source, dataset, version, seed)
    settings = TrainConfig(epochs=epochs, seed=seed, device=device, model=model)
    # one search of a dataset at a time: two would share the study's trials
    with SourceLock(cfg.lake, "tune", name):
        found = search(
            stages.tracking_store(cfg), lake, name, cut, cfg.reports, settings, trials, timeout
        )
    result = found.pop("trained")
    test = result.test
    emit(
        {
            "dataset": name,
            "dataset_version": cut,
            **found,
            "test_macro_f1": test["macro_f1"],
            "test_accuracy": test["accuracy"],
            "intervals": result.intervals,
            "report_html": result.report_html,
            "mlflow": result.mlflow.to_dict() if result.mlflow else None,
        }
    )
