"""`harvest lake`: the lake's tables: history, compact, vacuum, check."""

from __future__ import annotations

import json

import typer
from rich.console import Console

from harvest.cli.common import config, emit, err

app = typer.Typer(help="Lake tables: history, compact, vacuum, check.", no_args_is_help=True)


@app.command("history")
def lake_history(
    table: str = typer.Argument(..., help="e.g. raw/demo, curated/demo, datasets/demo, runs"),
    limit: int | None = typer.Option(None, min=1, help="only the newest N versions"),
    as_table: bool = typer.Option(False, "--table", help="a table for people, not JSON"),
) -> None:
    """List the versions of TABLE as JSON, as every command prints: time, operation, rows
    added, crawl id, lineage."""
    from rich.table import Table

    from ingestion.lake import Lake
    from ingestion.versions import history

    commits = history(Lake(config().lake), table, limit)
    if not as_table:
        print(json.dumps([c.as_json() for c in commits], default=str))
        return
    out = Table(title=table, title_justify="left")
    for name in ("version", "time (UTC)", "operation", "rows added", "crawl id", "lineage"):
        out.add_column(name, overflow="fold", justify="right" if name == "version" else "left")
    for c in commits:
        rest = {k: v for k, v in c.lineage.items() if k not in ("crawl_id", "content_sha256")}
        out.add_row(
            str(c.version),
            c.time.strftime("%Y-%m-%d %H:%M:%S"),
            c.operation,
            "" if c.rows_added is None else str(c.rows_added),
            c.crawl_id or "",
            ", ".join(f"{k}={json.dumps(v)}" for k, v in rest.items()),
        )
    Console(soft_wrap=False).print(out)


def lake_tables(table: str | None) -> list[str]:
    from ingestion.lake import Lake

    lake = Lake(config().lake)
    names = [table] if table else lake.tables()
    if not names:
        err.print(f"no tables in lake {lake.root}")
    return names


@app.command("compact")
def lake_compact(
    table: str | None = typer.Argument(None, help="default: every table"),
) -> None:
    """Rewrite TABLE's small files into large ones (a new version, the same rows)."""
    from ingestion.lake import Lake
    from ingestion.versions import compact

    lake = Lake(config().lake)
    results = []
    for name in lake_tables(table):
        r = compact(lake, name)
        err.print(
            f"{name}: {r['files_removed']} files rewritten into {r['files_added']}, "
            f"version {r['version']}",
            highlight=False,
        )
        results.append(r)
    emit({"compacted": results})


@app.command("vacuum")
def lake_vacuum(
    table: str | None = typer.Argument(None, help="default: every table"),
    retain_hours: int = typer.Option(
        168, min=0, help="keep files that versions of the last H hours need"
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="list what would go, delete nothing"),
) -> None:
    """Delete data files no recent version needs; never those of a version a dataset names."""
    from ingestion.lake import Lake
    from ingestion.versions import pinned_versions, vacuum

    lake = Lake(config().lake)
    pins = pinned_versions(lake)
    results = []
    for name in lake_tables(table):
        r = vacuum(lake, name, retain_hours, dry_run, pins)
        verb = "would delete" if dry_run else "deleted"
        err.print(
            f"{name}: {verb} {len(r.removed)} file(s) older than {retain_hours} h", highlight=False
        )
        for pin in r.kept:
            err.print(
                f"  kept the files of {name} version {pin.version}: {pin.reason}", highlight=False
            )
        results.append(r.as_json())
    emit({"dry_run": dry_run, "retain_hours": retain_hours, "vacuumed": results})


@app.command("check")
def lake_check(
    table: str | None = typer.Argument(None, help="default: every table"),
) -> None:
    """Look for damage: data files the log names that are gone, keys held by more than one
    row, a source's curate watermark past its raw table's end or over commits gone from the
    log. One line per problem on stderr, a JSON report on stdout; exit 1 when damaged."""
    from ingestion.check import LakeCheck, check_lake, check_table
    from ingestion.lake import Lake

    lake = Lake(config().lake)
    result = LakeCheck(lake.root, [check_table(lake, table)]) if table else check_lake(lake)
    for problem in result.problems:
        err.print(problem.text(), highlight=False)
    if not result.damaged:
        err.print(f"{len(result.tables)} table(s) checked, no damage found", highlight=False)
    emit(result.as_json())
    if result.damaged:
        raise typer.Exit(1)
