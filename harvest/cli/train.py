"""`harvest train`: cut a dataset version, train and evaluate a model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from harvest.cli.choices import Model, Schedule
from harvest.cli.common import config, emit

if TYPE_CHECKING:
    from harvest.config import Config
    from ingestion.lake import Lake


def train(
    source: str | None = typer.Option(
        None, help="the source whose curated and labels tables a version is cut from"
    ),
    dataset: str | None = typer.Option(None, help="dataset name (default: the source)"),
    version: int | None = typer.Option(
        None, help="train on this version of --dataset as it is, cutting none"
    ),
    model: Model = typer.Option(
        "auto",
        help="auto (every candidate, the best on validation), ngram (hashed n-gram bag), "
        "embedding (all-MiniLM-L6-v2 and a head), tfidf-logreg or tfidf-minilm-logreg",
    ),
    epochs: int = typer.Option(20, help="at most this many; early stopping may end sooner"),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto", help="auto (CUDA when present, else CPU), cpu or cuda"),
    batch_size: int = typer.Option(32),
    lr: float | None = typer.Option(None, help="peak learning rate (default: the model's)"),
    patience: int = typer.Option(5, help="epochs without a better validation macro F1; 0: off"),
    schedule: Schedule = typer.Option("linear", help="the learning rate after warmup"),
    amp: bool = typer.Option(True, "--amp/--no-amp", help="mixed precision on CUDA"),
    finetune: bool | None = typer.Option(
        None,
        "--finetune/--frozen",
        help="embedding model: train the encoder too (default: on CUDA)",
    ),
    checkpoint_dir: Path | None = typer.Option(
        None, help="default: REPORTS/checkpoints/DATASET-vN-MODEL"
    ),
    resume: bool = typer.Option(False, help="continue from the checkpoint's last epoch"),
    stop_after: int = typer.Option(0, help="end after this many epochs (resume later)"),
    folds: int = typer.Option(0, help="stratified k-fold cross-validation as well (k >= 2)"),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="TF-IDF baseline"),
) -> None:
    """Cut a dataset version from curated rows and labels, train and evaluate a model; or,
    with --dataset and --version, train on that version (of any sources) as it is.

    Several processes: torchrun --nproc_per_node N -m harvest.cli train ..."""
    from harvest import stages
    from ingestion.lake import Lake
    from training import distributed
    from training.run import train_and_evaluate
    from training.trainer import TrainConfig, pick_device

    cfg = config()
    lake = Lake(cfg.lake)
    train_config = TrainConfig(
        epochs=epochs,
        seed=seed,
        device=device,
        model=model,
        batch_size=batch_size,
        lr=lr,
        patience=patience,
        schedule=schedule,
        amp=amp,
        finetune=finetune,
        checkpoint_dir=str(checkpoint_dir) if checkpoint_dir else None,
        resume=resume,
        stop_after=stop_after,
        folds=folds,
        baseline=baseline,
    )
    try:
        # under torchrun, rank 0 alone cuts (one dataset version) and records the run
        distributed.init(pick_device(device).split(":")[0])
        name, cut = which_version(cfg, lake, source, dataset, version, seed)
        if distributed.rank() != 0:
            train_and_evaluate(lake, name, cut, cfg.reports, train_config)
            return
        result = stages.train_dataset(cfg, lake, name, cut, train_config)
    finally:
        distributed.close()
    test = result.test
    base = result.baseline.test if result.baseline else None
    emit(
        {
            "dataset": name,
            "dataset_version": cut,
            "rows": result.rows,
            "model": result.model,
            "candidates": result.candidates,
            "device": result.device,
            "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch,
            "test_accuracy": test["accuracy"],
            "test_macro_f1": test["macro_f1"],
            "baseline_test_accuracy": base["accuracy"] if base else None,
            "baseline_test_macro_f1": base["macro_f1"] if base else None,
            "report_dir": result.report_dir,
            "report_html": result.report_html,
            "checkpoint_dir": result.checkpoint_dir,
            "cv": result.cv,
            "intervals": result.intervals,
            "mlflow": result.mlflow.to_dict() if result.mlflow else None,
        }
    )


def which_version(
    cfg: Config, lake: Lake, source: str | None, dataset: str | None, version: int | None, seed: int
) -> tuple[str, int]:
    """The dataset version to train on: ``dataset`` at ``version`` as it is, or a new cut
    of ``source``'s labels (by rank 0 alone under torchrun)."""
    from harvest import stages
    from ingestion.datasets import cut_dataset, dataset_lineage
    from training import distributed
    from training.trainer import TrainError

    if version is not None:
        if not dataset:
            raise TrainError("--version needs --dataset: the dataset it is a version of")
        dataset_lineage(lake, dataset, version)  # no such version: the error before any work
        return dataset, version
    if source is None:
        raise typer.BadParameter(
            "name the source to cut a version from (--source SOURCE), or a version to train "
            "on as it is (--dataset NAME --version V)",
            param_hint="--source",
        )
    r = stages.recipe(cfg, source)
    name = dataset or r.name
    made = None
    if distributed.rank() == 0:
        made = cut_dataset(lake, name, r.name, f"labels/{r.name}", r.text_field, seed=seed)
    cut: int = distributed.broadcast(made.version if made else None)
    return name, cut
