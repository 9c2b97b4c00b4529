"""`harvest drift`: per-field drift of a table between two versions."""

from __future__ import annotations

import typer

from harvest.cli.common import config, emit, err


def drift(
    source: str,
    from_version: int = typer.Option(..., "--from", help="table version to compare from"),
    to_version: int = typer.Option(..., "--to", help="table version to compare with"),
    table: str = typer.Option("curated", help="raw, curated or quarantine"),
    added: bool = typer.Option(False, help="compare only the rows added after --from"),
    alpha: float = typer.Option(0.01, help="significance level of each test"),
    min_effect: float = typer.Option(0.1, help="smallest KS statistic or JS distance to flag"),
) -> None:
    """Per-field drift of <table>/SOURCE between two versions, as HTML with plots; prints
    a JSON summary."""
    from ingestion.lake import Lake
    from validation.drift import drift_report

    if table not in ("raw", "curated", "quarantine"):
        raise typer.BadParameter(f"--table {table!r}: one of raw, curated, quarantine")
    cfg = config()
    summary = drift_report(
        Lake(cfg.lake),
        source,
        cfg.reports,
        from_version,
        to_version,
        table,
        added,
        alpha,
        min_effect,
    )
    for f in summary["fields"]:
        verdict = "DRIFTED" if f["drifted"] else "stable"
        err.print(
            f"{f['field']}: {verdict} ({f['test']} {f['statistic']:.3f}, p={f['pvalue']:.3g})",
            highlight=False,
        )
    err.print(f"report: {summary['report']}", highlight=False)
    summary["fields"] = {
        f["field"]: {k: f[k] for k in ("kind", "test", "statistic", "pvalue", "drifted")}
        for f in summary["fields"]
    }
    emit(summary)
