"""The root command group: every HarvestError ends the command here, and only here.

A person reads one ``error:`` line (``busy:`` when another run holds the source) that
says what failed and, where there is something to do, what to do next; a scheduler reads
the exit code of the error's kind (the README's table, ``ingestion/errors.py``). Click's
own usage errors keep their exit code 2.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.markup import escape  # a URL such as http://[::1/ is not markup
from typer.core import TyperGroup

from harvest.cli.common import err
from ingestion.errors import HarvestError, LockedError


def report(exc: HarvestError) -> None:
    label = "busy" if isinstance(exc, LockedError) else "error"
    err.print(f"[bold red]{label}:[/] {escape(str(exc))}", highlight=False)


class HarvestGroup(TyperGroup):
    def invoke(self, ctx: Any) -> Any:  # Typer's own copy of click.Context
        try:
            return super().invoke(ctx)
        except HarvestError as exc:
            report(exc)
            raise typer.Exit(exc.exit_code) from exc
