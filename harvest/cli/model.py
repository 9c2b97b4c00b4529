"""`harvest model`: registered models in MLflow."""

from __future__ import annotations

import typer

from harvest.cli.common import config, emit, err

app = typer.Typer(help="Registered models in MLflow: list, promote, show.", no_args_is_help=True)


@app.command("list")
def model_list() -> None:
    """Every registered model with its versions and aliases."""
    from harvest import stages
    from training import registry
    from training.tracking import safe_uri

    store = stages.tracking_store(config())
    models = registry.list_models(store) if store.exists() else []
    for m in models:
        held = {v: a for a, v in m["aliases"].items()}
        versions = ", ".join(
            f"v{v['version']}"
            + (f" ({held[v['version']]})" if v["version"] in held else "")
            + (
                f" {v['dataset']} v{v['dataset_version']}"
                if v["dataset_version"] is not None
                else ""
            )
            for v in m["versions"]
        )
        err.print(f"{m['model']}: {versions}", highlight=False)
    if not models:
        err.print(f"no registered models in {safe_uri(store.uri)}", highlight=False)
    emit({"tracking_uri": safe_uri(store.uri), "models": models})


@app.command("promote")
def model_promote(
    name: str = typer.Argument(..., help="registered model, e.g. harvest-demo"),
    version: int = typer.Argument(..., help="the version to give the alias"),
    alias: str = typer.Option("champion", help="champion, challenger or any other alias"),
) -> None:
    """Give VERSION of model NAME the alias (champion by default), taking it from the
    version that held it."""
    from harvest import stages
    from training import registry

    moved = registry.promote(stages.tracking_store(config()), name, version, alias)
    was = f" (was v{moved['previous']})" if moved["previous"] is not None else ""
    err.print(f"{name}: {alias} -> v{version}{was}", highlight=False)
    emit(moved)


@app.command("show")
def model_show(
    name: str = typer.Argument(..., help="registered model, e.g. harvest-demo"),
    alias: str = typer.Option("champion", help="show the version holding this alias"),
    version: int | None = typer.Option(None, help="show this version instead"),
) -> None:
    """A version of model NAME: its aliases, run, metrics and dataset version."""
    from harvest import stages
    from training import registry

    shown = registry.show(stages.tracking_store(config()), name, version, alias)
    aliases = f" ({', '.join(shown['aliases'])})" if shown["aliases"] else ""
    err.print(
        f"{name} v{shown['version']}{aliases}: run {shown['run_id']}, dataset "
        f"{shown['dataset']} v{shown['dataset_version']}",
        highlight=False,
    )
    for key, value in shown.get("metrics", {}).items():
        err.print(f"  {key} = {value:.4g}", highlight=False)
    emit(shown)
