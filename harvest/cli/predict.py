"""`harvest predict`: a file of texts scored by a registered model."""

from __future__ import annotations

import signal
from pathlib import Path

import typer

from harvest.cli.common import config, emit, err


def predict(
    model: str = typer.Argument(..., help="registered model, NAME or NAME@ALIAS or NAME@VERSION"),
    input_path: Path = typer.Option(
        ..., "--input", help="Parquet, JSONL or CSV with a text column"
    ),
    output: Path = typer.Option(..., help="where the scored rows go (kind by suffix)"),
    text_column: str = typer.Option("text", help="the column holding the texts"),
    device: str = typer.Option("auto", help="auto (CUDA when present), cpu or cuda"),
    batch_size: int = typer.Option(2048, min=1, help="rows scored at once"),
) -> None:
    """Score every row of --input with MODEL (its champion unless @ALIAS or @VERSION
    says otherwise), in batches, into --output."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from harvest import stages
    from ingestion.errors import InvalidInputError
    from training import batchscore, pyfunc, registry
    from training.trainer import pick_device

    # the files first: a typo there should not wait for the model to load
    batchscore.kind_of(input_path)
    batchscore.kind_of(output)
    if not input_path.is_file():
        raise InvalidInputError(f"no input file {input_path}")
    name, _, which = model.partition("@")
    store = stages.tracking_store(config())
    mv = (
        registry.version(store, name, int(which))
        if which.isdigit()
        else registry.by_alias(store, name, which or registry.CHAMPION)
    )
    used = pick_device(device)
    scorer = pyfunc.load_version(store, mv, used)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    scored, stopped_by = 0, int(signal.SIGINT)

    def stop(signum: int, _: object) -> None:
        nonlocal stopped_by
        stopped_by = signum
        raise KeyboardInterrupt  # unwinds through the writer: no part file is left

    signal.signal(signal.SIGTERM, stop)
    try:
        with Progress(*columns, console=err, transient=True) as bar:
            task = bar.add_task(f"{name} v{mv.version}", total=batchscore.total_rows(input_path))

            def advance(n: int) -> None:
                nonlocal scored
                scored += n
                bar.advance(task, n)

            done = batchscore.score_file(
                scorer, input_path, output, text_column, batch_size, advance
            )
    except KeyboardInterrupt:
        err.print(
            f"stopped after {scored} rows: {output} not written; run again to score {input_path}",
            highlight=False,
        )
        raise typer.Exit(128 + stopped_by) from None
    err.print(f"{done.rows} rows scored by {name} v{mv.version} into {output}", highlight=False)
    emit(
        {
            "model": name,
            "version": int(mv.version),
            "aliases": list(mv.aliases),
            "device": used,
            "rows": done.rows,
            "labels": done.labels,
            "output": done.output,
        }
    )
