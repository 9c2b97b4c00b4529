"""`harvest monitor`: the live inputs of served models compared with their training data."""

from __future__ import annotations

import typer

from harvest.cli.common import config, emit, err


def monitor(
    models: list[str] = typer.Argument(None, help="default: every model with logged predictions"),
) -> None:
    """Compares each whole window of predictions logged since the last check (the
    recipe's monitor.window rows) with the model's training split, and records it in
    monitoring/<model>: text length, out-of-vocabulary share, distance to the training
    centroid, confidence and the predicted-class mix. One JSON line a model on stdout;
    exit 1 when a model's last window drifted."""
    from harvest import stages
    from harvest.monitor import check, monitored, recipe_for, status
    from ingestion.errors import NotFoundError
    from ingestion.lake import Lake

    cfg = config()
    lake = Lake(cfg.lake)
    names = models or monitored(lake)
    if not names:
        raise NotFoundError(f"no predictions logged in {lake.root}: serve a model first")
    store = stages.tracking_store(cfg)
    drifted = False
    for model in names:
        recipe = recipe_for(cfg, model)
        windows = check(cfg, store, model, recipe.monitor if recipe else None)
        now = status(lake, model)
        for w in windows:
            said = f"DRIFTED: {', '.join(w.drifted)}" if w.drifted else "steady"
            err.print(f"{model} v{w.model_version}, {w.rows} predictions to {w.end:%F %T}: {said}")
        if not windows:
            err.print(f"{model}: no whole window of new predictions")
        drifted = drifted or bool(now and now["drifted"])
        emit({"model": model, "windows": [w.to_dict() for w in windows], "status": now})
    if drifted:
        raise typer.Exit(1)
