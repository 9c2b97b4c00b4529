"""The ``harvest`` command line: the root group here, one module per command group.

Every command raises a HarvestError for a failure a person can act on; the root group
(``harvest.cli.group``) turns it into one ``error:`` line and its kind's exit code.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from harvest import logs
from harvest.cli import (
    crawl,
    dataset,
    demo,
    drift,
    label,
    lake,
    model,
    monitor,
    predict,
    quarantine,
    recipe,
    serve,
)
from harvest.cli import init as init_cmd
from harvest.cli import status as status_cmd
from harvest.cli import train as train_cmd
from harvest.cli import tune as tune_cmd
from harvest.cli.choices import LogFormat, LogLevel
from harvest.cli.group import HarvestGroup

DISTRIBUTION = "harvest-lake"  # the package index's name; the command is harvest

app = typer.Typer(cls=HarvestGroup, help="Crawl, curate, label and train.", no_args_is_help=True)


def _version(shown: bool) -> None:
    if shown:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"harvest {version(DISTRIBUTION)}")
        except PackageNotFoundError:  # run from a checkout that was never installed
            print("harvest (not installed)")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="print the version and exit"
    ),
    config: Path | None = typer.Option(
        None,
        "--config",
        envvar="HARVEST_CONFIG",
        help="the harvest.toml in force (default: the nearest at or above this folder)",
    ),
    log_level: LogLevel | None = typer.Option(
        None,
        envvar=logs.LEVEL,
        case_sensitive=False,
        help="what stderr shows (default: WARNING, or a crawled recipe's LOG_LEVEL)",
    ),
    log_format: LogFormat | None = typer.Option(
        None, envvar=logs.FORMAT, help="text (default; `harvest serve`: json) or json lines"
    ),
) -> None:
    """Crawl, curate, label and train."""
    # through the environment, so the processes a command starts read the same file and
    # log alike
    if config is not None:
        os.environ["HARVEST_CONFIG"] = str(config.resolve())
    if log_level is not None:
        os.environ[logs.LEVEL] = log_level.upper()
    if log_format is not None:
        os.environ[logs.FORMAT] = log_format
    logs.setup()


# in the order `harvest --help` lists them
app.command("init")(init_cmd.init)
app.command("demo-site")(demo.demo_site)
app.command("crawl")(crawl.crawl)
app.command("curate")(crawl.curate_cmd)
app.command("status")(status_cmd.status)
app.command("drift")(drift.drift)
app.command("train")(train_cmd.train)
app.command("tune")(tune_cmd.tune)
app.command("predict")(predict.predict)
app.command("monitor")(monitor.monitor)
app.command("export")(dataset.export)
app.command("demo")(demo.demo)
app.command("serve")(serve.serve)
app.add_typer(label.app, name="label")
app.add_typer(lake.app, name="lake")
app.add_typer(dataset.app, name="dataset")
app.add_typer(model.app, name="model")
app.add_typer(quarantine.app, name="quarantine")
app.add_typer(recipe.app, name="recipe")


def main() -> None:
    app()
