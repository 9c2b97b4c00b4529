"""`harvest status`: what the dashboard shows, on the terminal."""

from __future__ import annotations

import typer

from harvest.cli.common import config, emit, err


def status(
    sources: list[str] = typer.Argument(None, help="default: every recipe and lake source"),
) -> None:
    """What the dashboard shows: per source its schedule, last run, last crawl and curate,
    held batches and why, quarantine, pass rates and labelling; recent runs; models; damaged
    lake tables (data files gone, curate watermarks past a raw table's end).

    Lines for a person on stderr; on stdout one JSON line: the whole summary, or with
    SOURCE arguments each source's part. Exit 1 when a table is damaged."""
    from harvest.service.summary import build, damaged, describe, known_sources, run_history

    cfg = config()
    known = known_sources(cfg)
    for name in sources or []:
        if name not in known:
            raise typer.BadParameter(
                f"unknown source {name!r} (known: {', '.join(known) or 'none'})"
            )
    summary = build(cfg, run_history(cfg), sources=sources or None)
    for line in describe(summary):
        err.print(line, highlight=False)
    if sources:
        for entry in summary["sources"]:
            emit(entry)
    else:
        emit(summary)
    if damaged(summary):
        raise typer.Exit(1)
