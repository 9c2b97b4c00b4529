"""`harvest dataset` and `harvest export`: dataset versions and their files."""

from __future__ import annotations

from pathlib import Path

import typer

from harvest.cli.choices import ExportFormat
from harvest.cli.common import config, emit
from ingestion.errors import CheckFailedError

app = typer.Typer(help="Dataset versions: create, rebuild.", no_args_is_help=True)


@app.command("create")
def dataset_create(
    name: str,
    sources: str = typer.Option(
        ..., "--from", help="source(s) whose curated rows to cut, comma separated"
    ),
    labels: str = typer.Option(..., help="labels/<PROJECT> to join by row id, e.g. a source"),
    split: str = typer.Option("0.8/0.1/0.1", help="train/validation/test fractions"),
    stratify: bool = typer.Option(True, help="keep each label's share alike in every split"),
    group: str = typer.Option(
        "dup_group", help="column whose equal values stay on one side ('none': row by row)"
    ),
    time_split: str | None = typer.Option(
        None, "--time-split", help="split by this column: oldest to train, newest to test"
    ),
    seed: int = typer.Option(0, help="seed of the split"),
) -> None:
    """Cut a version of datasets/NAME with a split column; fails, writing nothing, if
    exact or near duplicates end up on two sides of the split."""
    from harvest import stages
    from ingestion.split import SplitError, SplitRules, parse_fractions

    names = [s.strip() for s in sources.split(",") if s.strip()]
    if not names:
        raise typer.BadParameter(f"--from {sources!r}: name at least one source")
    try:
        fractions = parse_fractions(split)
    except SplitError as exc:
        raise typer.BadParameter(str(exc)) from exc
    rules = SplitRules(stratify, None if group.lower() == "none" else group, time_split)
    emit(stages.create_dataset(config(), name, names, labels, fractions, rules, seed).to_dict())


@app.command("rebuild")
def dataset_rebuild(
    name: str,
    version: int | None = typer.Option(None, help="dataset version (default: latest)"),
    out: Path | None = typer.Option(None, help="also write the rebuilt rows to this Parquet file"),
) -> None:
    """Cut a dataset version again from the table versions it names; exit 1 unless identical."""
    import pyarrow.parquet as pq

    from ingestion.datasets import rebuild_dataset
    from ingestion.lake import Lake

    r = rebuild_dataset(Lake(config().lake), name, version)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(r.table, out)
    emit(
        {
            "dataset": name,
            "version": r.version,
            "rows": r.rows,
            "tables": r.lineage["tables"],
            "sha256": r.sha256,
            "stored_sha256": r.stored_sha256,
            "recorded_sha256": r.recorded_sha256,
            "identical": r.identical,
            "out": str(out) if out else None,
        }
    )
    if not r.identical:
        raise CheckFailedError(
            f"dataset {name!r} version {r.version} rebuilt differently from what was stored"
        )


def export(
    dataset: str,
    out: Path = typer.Option(..., help="folder to write the files, card and manifest into"),
    version: int | None = typer.Option(None, help="dataset version (default: latest)"),
    fmt: ExportFormat = typer.Option("parquet", "--format"),
    shards: int | None = typer.Option(
        None, min=1, help="K files per split under data/ (default: one file per split)"
    ),
) -> None:
    """Write a dataset version as Parquet or JSONL shards with a dataset card (README.md)
    and a manifest of checksums; loads with Hugging Face `datasets` as it is."""
    from harvest import stages

    emit(stages.export_dataset(config(), dataset, out, version, fmt, shards))
