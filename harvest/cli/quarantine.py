"""`harvest quarantine`: review quarantined rows."""

from __future__ import annotations

import typer

from harvest.cli.common import config, emit

app = typer.Typer(help="Review quarantined rows: list, show, release, drop.", no_args_is_help=True)


@app.command("list")
def quarantine_list(source: str) -> None:
    """How many rows of SOURCE are quarantined, by failed expectation."""
    from harvest import stages
    from ingestion.lake import Lake
    from validation import quarantine

    cfg = config()
    emit(quarantine.counts(Lake(cfg.lake), stages.recipe(cfg, source).name))


@app.command("show")
def quarantine_show(
    source: str,
    url: list[str] = typer.Option(None, help="only this row (repeatable)"),
    expectation: str | None = typer.Option(None, help="only rows failing this expectation"),
    limit: int = typer.Option(20, min=1),
) -> None:
    """Quarantined rows of SOURCE with their URL and failed expectations, one JSON a line."""
    from harvest import stages
    from ingestion.lake import Lake
    from validation import quarantine

    cfg = config()
    name = stages.recipe(cfg, source).name
    for row in quarantine.show(Lake(cfg.lake), name, url, expectation, limit):
        emit(row)


@app.command("release")
def quarantine_release(
    source: str,
    recheck: bool = typer.Option(
        False, help="re-run the recipe's expectations: rows passing now move to curated"
    ),
    reason: str | None = typer.Option(None, help="why, for rows released by hand (recorded)"),
    url: list[str] = typer.Option(None, help="this row (repeatable)"),
    expectation: str | None = typer.Option(None, help="rows failing this expectation"),
    all_rows: bool = typer.Option(False, "--all", help="every quarantined row"),
) -> None:
    """Move quarantined rows of SOURCE to curated: after a recipe fix (--recheck), or by
    hand with --reason."""
    from dataclasses import asdict

    from harvest import stages
    from ingestion.lake import Lake
    from validation import quarantine

    cfg = config()
    r = stages.recipe(cfg, source)
    lake = Lake(cfg.lake)
    if recheck and (reason or all_rows):
        raise typer.BadParameter("--recheck takes no --reason or --all: the recipe decides")
    if not recheck and not reason:
        raise typer.BadParameter("release by hand needs a --reason (or use --recheck)")
    spec = stages.gate_spec(r)
    with stages.source_lock(cfg, stages.CURATE_STAGE, r.name):
        if recheck or reason is None:
            review = quarantine.recheck(lake, r.name, spec, url, expectation)
        else:
            review = quarantine.release(lake, r.name, spec, reason, url, expectation, all_rows)
    emit(asdict(review))


@app.command("drop")
def quarantine_drop(
    source: str,
    reason: str = typer.Option(..., help="why (recorded)"),
    url: list[str] = typer.Option(None, help="this row (repeatable)"),
    expectation: str | None = typer.Option(None, help="rows failing this expectation"),
    all_rows: bool = typer.Option(False, "--all", help="every quarantined row"),
) -> None:
    """Remove quarantined rows of SOURCE for good (raw and the table history keep them)."""
    from dataclasses import asdict

    from harvest import stages
    from ingestion.lake import Lake
    from validation import quarantine

    cfg = config()
    name = stages.recipe(cfg, source).name
    with stages.source_lock(cfg, stages.CURATE_STAGE, name):
        review = quarantine.drop(Lake(cfg.lake), name, reason, url, expectation, all_rows)
    emit(asdict(review))
