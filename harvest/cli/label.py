"""`harvest label`: Label Studio's server, tasks, labels, webhooks and reports."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

import typer

from harvest.cli.choices import Strategy
from harvest.cli.common import config, emit, err
from ingestion.errors import ConfigurationError

app = typer.Typer(
    help="Label Studio: serve, stop, push, retrain, pull, webhook, simulate, report.",
    no_args_is_help=True,
)


@app.command("serve")
def label_serve(
    detach: bool = typer.Option(False, help="leave it running and return"),
) -> None:
    """Start Label Studio on 127.0.0.1 and wait until it answers."""
    from harvest import stages

    cfg = config()
    if not cfg.studio_managed:
        raise ConfigurationError(
            f"label_studio.url names {cfg.studio_url}, which harvest does not start; "
            "empty it to use the local Label Studio this command starts"
        )
    server = stages.label_server(cfg)
    err.print(f"starting Label Studio on {server.url} (data in {server.data_dir}) ...")
    server.start()
    err.print(
        f"Label Studio is up: {server.url}  user {server.username}, password in "
        f"{Path(cfg.label_studio_data_dir) / '.password'} or $HARVEST_LABEL_STUDIO_PASSWORD"
    )
    if detach:
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        assert server.process is not None
        server.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


@app.command("stop")
def label_stop() -> None:
    """Stop a Label Studio started with --detach."""
    from harvest import stages

    stages.label_server(config()).stop()


@app.command("push")
def label_push(
    source: str,
    strategy: Strategy | None = typer.Option(
        None, help="default: least_confidence with a labelling model, coldstart without"
    ),
    batch: int | None = typer.Option(
        None, min=0, help="import this many rows (default: every row not yet a task)"
    ),
    seed: int = typer.Option(0, help="seed of the random and clustering strategies"),
    reserve: float = typer.Option(
        0.1,
        min=0.0,
        max=0.99,
        help="share of a chosen batch drawn at random instead, for evaluation: a dataset's "
        "test split comes from these rows",
    ),
    drifted: str | None = typer.Option(
        None,
        metavar="MODEL",
        help="push the inputs MODEL met in its drifted windows instead of curated rows "
        "(they need serve.log_text); they become curated rows of SOURCE",
    ),
) -> None:
    """Import curated rows of SOURCE as tasks, the most useful first, each with the labelling
    model's prediction; never the same row twice. When the batch is a choice, a --reserve
    share is drawn at random and marked purpose: evaluation."""
    from harvest import stages

    cfg = config()
    r = stages.recipe(cfg, source)
    if drifted is not None:
        found, result = stages.push_drifted(cfg, r, drifted, None, strategy, batch, seed, reserve)
        emit({"source": source, **vars(result), "drifted": found.summary()})
        return
    result = stages.push_source(cfg, r, None, strategy, batch, seed, reserve)
    emit({"source": source, **vars(result)})


@app.command("retrain")
def label_retrain(
    source: str,
    pull: bool = typer.Option(True, help="pull the annotations into labels/<source> first"),
) -> None:
    """Retrain the labelling model of SOURCE and replace the predictions of waiting tasks."""
    from harvest import stages

    cfg = config()
    emit(stages.retrain_and_refresh(cfg, stages.recipe(cfg, source), pull=pull).to_dict())


@app.command("pull")
def label_pull(sources: list[str] = typer.Argument(None, help="default: every recipe")) -> None:
    """Write the annotations of each source's project into labels/<source>."""
    from harvest import stages

    cfg = config()
    recipes = [stages.recipe(cfg, s) for s in sources] if sources else stages.all_recipes(cfg)
    sync = stages.label_sync(cfg)
    for r in recipes:
        if sources or stages.project_title(r.name) in sync.project_titles():
            emit(stages.pull_source(cfg, r, sync).to_dict())


@app.command("webhook")
def label_webhook(
    port: int = typer.Option(8090, help="port on 127.0.0.1 (0 picks a free one)"),
    k: int = typer.Option(50, "--k", help="retrain a source after this many new labels ..."),
    minutes: float = typer.Option(10.0, help="... or this long after its first new label"),
    url: str | None = typer.Option(None, help="where Label Studio reaches the receiver"),
) -> None:
    """Receive Label Studio's annotation webhooks into the lake until interrupted."""
    from harvest import logs, stages

    # a long-running service: what it receives and each retrain go to stderr
    logs.setup(default="INFO")
    cfg = config()
    server, sources = stages.start_webhook(cfg, port, k, minutes, url)
    for line in sources:
        emit(line)
    sys.stdout.flush()  # whoever started it learns at once that it listens
    secret_file = Path(cfg.label_studio_data_dir) / ".webhook_secret"
    err.print(
        f"receiving webhooks on {server.url}; the secret is $HARVEST_WEBHOOK_SECRET or in "
        f"{secret_file}",
        highlight=False,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


@app.command("simulate")
def label_simulate(
    truth: Path = typer.Option(..., help="ground truth JSON from `harvest demo-site --truth`"),
    n: int | None = typer.Option(None, "-n", help="how many tasks to label (default: all)"),
    source: str = typer.Option(..., help="the source whose project is labelled"),
) -> None:
    """A simulated annotator: label N tasks through the API from the ground truth."""
    from harvest import stages
    from labeling.simulate import load_truth, simulate

    cfg = config()
    r = stages.recipe(cfg, source)
    sync = stages.label_sync(cfg)
    project_id = sync.project(stages.project_title(r.name), r.labels, r.label_type)
    done = simulate(sync, project_id, load_truth(truth), n)
    emit({"source": source, "project_id": project_id, "labeled": done})


@app.command("report")
def label_report(
    source: str,
    folds: int = typer.Option(5, min=2, help="cross-validation folds for suspected errors"),
    studio: bool = typer.Option(True, help="count the tasks in Label Studio if it answers"),
) -> None:
    """Progress, agreement between annotators and suspected label errors of SOURCE, written
    as HTML and JSON under reports/labels/; prints the JSON summary."""
    from harvest import stages
    from labeling.report import describe

    cfg = config()
    summary = stages.report_labels(cfg, stages.recipe(cfg, source), folds, studio)
    for line in describe(summary):
        err.print(line, highlight=False)
    err.print(f"report: {summary['report']}", highlight=False)
    emit(summary)
