"""The ``harvest`` command line."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape  # a URL such as http://[::1/ is not markup

from harvest.config import Config, ConfigError, load_config

if TYPE_CHECKING:
    from spiders.recipe import Recipe

app = typer.Typer(help="Crawl, curate, label and train.", no_args_is_help=True)
label_app = typer.Typer(help="Label Studio: serve, push, pull, simulate.", no_args_is_help=True)
app.add_typer(label_app, name="label")
lake_app = typer.Typer(help="Lake tables: history, compact, vacuum, check.", no_args_is_help=True)
app.add_typer(lake_app, name="lake")
dataset_app = typer.Typer(help="Dataset versions.", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")
model_app = typer.Typer(
    help="Registered models in MLflow: list, promote, show.", no_args_is_help=True
)
app.add_typer(model_app, name="model")
err = Console(stderr=True, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])


def config() -> Config:
    return load_config()


# sysexits' EX_TEMPFAIL: another run holds the source's lock, so a scheduler retries later
BUSY_EXIT = 75


def friendly(fn: F) -> F:
    """Known failures print one clear line and exit 2 instead of a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from harvest.crawl import CrawlError
        from ingestion.lake import LakeError
        from ingestion.locks import BusyError
        from labeling.model import ModelError
        from labeling.report import ReportError
        from labeling.server import LabelStudioError
        from labeling.sync import SyncError
        from spiders.recipe import RecipeError
        from training.tracking import TrackingError

        try:
            return fn(*args, **kwargs)
        except BusyError as exc:
            err.print(f"[bold red]busy:[/] {escape(str(exc))}", highlight=False)
            raise typer.Exit(BUSY_EXIT) from exc
        except (
            ConfigError,
            RecipeError,
            LakeError,
            SyncError,
            ModelError,
            ReportError,
            LabelStudioError,
            CrawlError,
            TrackingError,
        ) as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
            raise typer.Exit(2) from exc

    return wrapper  # type: ignore[return-value]


def emit(data: dict[str, Any]) -> None:
    print(json.dumps(data, default=str))


@app.command("demo-site")
@friendly
def demo_site(
    port: int = typer.Option(8765, help="port on 127.0.0.1 (0 picks a free one)"),
    articles: int = typer.Option(400, help="article pages served, planted ones included"),
    seed: int = typer.Option(7),
    corpus: Path | None = typer.Option(None, help="AG News style CSV to serve instead"),
    truth: Path | None = typer.Option(None, help="write the ground truth JSON here"),
    guard_limit: int = typer.Option(30, help="/guarded/: requests allowed per address..."),
    guard_window: float = typer.Option(10.0, help="... within this many seconds"),
    guard_ban: float = typer.Option(3600.0, help="ban seconds (0: answer 429 instead)"),
    guard_regime: str = typer.Option("window", help="sliding window, fixed window or bucket"),
    guard_ban_status: int = typer.Option(
        403, help="a ban's answer: 403 block page, 429 without Retry-After, 200 look-alike"
    ),
    guard_listing_limit: int | None = typer.Option(None, help="a limit of listing pages' own"),
    guard_per: str = typer.Option("address", help="limit per client address or session cookie"),
    latency_ms: str = typer.Option(
        "0", help="each answer waits LO-HI ms (e.g. 50-200), like a site across a network"
    ),
) -> None:
    """Serve the deterministic demo news site until interrupted."""
    from harvest.demosite import DemoSite, Guard, generate

    try:
        site = generate(articles, seed, corpus)
        lo, _, hi = latency_ms.partition("-")
        latency = (float(lo) / 1000, float(hi or lo) / 1000)
        guard = Guard(
            guard_limit, guard_window, guard_ban, regime=guard_regime, ban_status=guard_ban_status,
            listing_limit=guard_listing_limit, key=guard_per,
        )  # fmt: skip
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    if not 0 <= latency[0] <= latency[1]:
        raise typer.BadParameter(f"--latency-ms {latency_ms!r}: LO-HI with 0 <= LO <= HI")
    server = DemoSite(site, port=port, guard=guard, latency=latency)
    if truth:
        truth.parent.mkdir(parents=True, exist_ok=True)
        truth.write_text(json.dumps(site.truth(server.url), indent=1))
    err.print(
        f"demo site on {server.url}: {len(site.articles)} articles, "
        f"{len(site.planted_invalid)} invalid, {len(site.planted_duplicates)} duplicates"
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


@app.command()
@friendly
def crawl(
    source: str = typer.Argument(..., help="recipe name in sources/, or a YAML path"),
    start_url: str | None = typer.Option(None, help="crawl from here instead of the recipe's"),
    curate: bool = typer.Option(True, help="run the gate when the crawl ends"),
    fresh: bool = typer.Option(False, help="start over instead of resuming an unfinished crawl"),
    workers: int = typer.Option(1, min=1, help="crawl processes sharing one frontier in Redis"),
    redis_url: str | None = typer.Option(
        None, "--redis", help="Redis holding the shared frontier (default: a private one)"
    ),
    crawl_id: str | None = typer.Option(
        None, help="join this crawl, e.g. with workers on other machines (needs --redis)"
    ),
    worker: bool = typer.Option(False, hidden=True, help="be one worker of a shared crawl"),
    resumed: bool = typer.Option(False, hidden=True, help="the shared crawl is resumed"),
) -> None:
    """Crawl SOURCE into raw/<source>, then curate it."""
    from harvest import stages
    from harvest.crawl import run_crawl
    from spiders.account import account, describe

    cfg = config()
    recipe = stages.recipe(cfg, source)
    if worker:
        emit(crawl_worker(cfg, recipe, start_url, crawl_id, resumed))
        return
    if crawl_id and not redis_url:
        raise typer.BadParameter("--crawl-id joins a shared crawl: give its --redis URL")
    # one crawl of a source at a time; joining a shared crawl by id adds workers to it
    lock = stages.source_lock(cfg, stages.CRAWL_STAGE, recipe.name)
    with contextlib.nullcontext() if crawl_id else lock:
        if workers > 1 or redis_url:
            from harvest.workers import run_workers

            merged = run_workers(
                cfg, recipe, source, workers, redis_url, start_url, fresh, crawl_id
            )
            summary: dict[str, Any] = {"source": recipe.name, **merged}
        else:
            stats = run_crawl(cfg, recipe, start_url, fresh=fresh)
            summary = {"source": recipe.name, **crawl_summary(stats)}
    # stopped by a signal: the user wants it to end, not to start curating
    if curate and summary.get("finish_reason") != "shutdown":
        result = stages.curate_source(cfg, recipe)
        summary.update(
            curated=result.curated,
            quarantined=result.quarantined,
            duplicates_dropped=result.duplicates_dropped,
            near_duplicates_dropped=result.near_duplicates_dropped,
            batch_status=result.batch_status,
            report=result.report,
        )
        if result.batch_status == "held":
            summary["held_reasons"] = result.held_reasons
            say_held(result.source, result.held_reasons)
    # every crawl ends with its account; pages given up past the recipe's limit fail it
    summary["account"] = acc = account(summary["stats"])
    for line in describe(acc):
        err.print(f"account: {line}", highlight=False)
    emit(summary)
    if acc["stalled_for"]:
        err.print(
            f"[bold red]error:[/] crawl of {recipe.name} stalled: nothing came back for "
            f"{acc['stalled_for']} s (HARVEST_STALL_TIMEOUT); it resumes on the next crawl",
            highlight=False,
        )
        raise typer.Exit(3)
    if acc["given_up_total"] > recipe.limits.give_up:
        err.print(
            f"[bold red]error:[/] crawl of {recipe.name} gave up on {acc['given_up_total']} "
            f"pages, more than its limits.give_up ({recipe.limits.give_up})",
            highlight=False,
        )
        raise typer.Exit(3)


def crawl_summary(stats: dict[str, Any]) -> dict[str, Any]:
    """What one crawl process reports: the headline counts and every numeric stat."""
    return {
        "crawl_id": stats["harvest/crawl_id"],
        "resumed": stats["harvest/resumed"],
        "pages": stats.get("response_received_count", 0),
        "items": stats.get("item_scraped_count", 0),
        "rows_committed": stats.get("harvest/rows_committed", 0),
        "finish_reason": stats.get("finish_reason"),
        "stats": {k: v for k, v in sorted(stats.items()) if type(v) in (int, float)},
    }


def crawl_worker(
    cfg: Config, recipe: Recipe, start_url: str | None, crawl_id: str | None, resumed: bool
) -> dict[str, Any]:
    """One worker of ``harvest crawl --workers N``, which passes the Redis URL in the
    environment, where ``ps`` does not show it."""
    from harvest.crawl import Worker, run_crawl
    from harvest.workers import REDIS_URL_ENV

    redis_url = os.environ.get(REDIS_URL_ENV)
    if not redis_url or not crawl_id:
        raise typer.BadParameter(f"--worker needs --crawl-id and ${REDIS_URL_ENV}")
    stats = run_crawl(cfg, recipe, start_url, progress=False,
                      worker=Worker(redis_url, crawl_id, resumed))  # fmt: skip
    return {**crawl_summary(stats), "requests": stats.get("scheduler/dequeued/redis", 0)}


@app.command("curate")
@friendly
def curate_cmd(
    source: str,
    accept_batch: bool = typer.Option(
        False, help="publish a batch even if it fails a batch-level gate (recorded)"
    ),
    reason: str | None = typer.Option(None, help="why the batch is accepted (with --accept-batch)"),
) -> None:
    """Validate the raw rows of SOURCE not yet curated; split into curated and quarantine."""
    from dataclasses import asdict

    from harvest import stages

    if reason and not accept_batch:
        raise typer.BadParameter("--reason goes with --accept-batch")
    cfg = config()
    note = (reason or "accepted by hand") if accept_batch else None
    result = stages.curate_source(cfg, stages.recipe(cfg, source), accept_batch=note)
    if result.batch_status == "held":
        say_held(result.source, result.held_reasons)
    emit(asdict(result))


def say_held(source: str, reasons: list[str]) -> None:
    err.print(
        f"batch of {source} held back whole (see `harvest status {source}`):", highlight=False
    )
    for line in reasons:
        err.print(f"  - {line}", highlight=False)


@app.command()
@friendly
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


quarantine_app = typer.Typer(
    help="Review quarantined rows: list, show, release, drop.", no_args_is_help=True
)
app.add_typer(quarantine_app, name="quarantine")


@quarantine_app.command("list")
@friendly
def quarantine_list(source: str) -> None:
    """How many rows of SOURCE are quarantined, by failed expectation."""
    from harvest import stages
    from ingestion.lake import Lake
    from validation import quarantine

    cfg = config()
    emit(quarantine.counts(Lake(cfg.lake), stages.recipe(cfg, source).name))


@quarantine_app.command("show")
@friendly
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


@quarantine_app.command("release")
@friendly
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


@quarantine_app.command("drop")
@friendly
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


@app.command()
@friendly
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
    summary = drift_report(Lake(cfg.lake), source, cfg.reports, from_version, to_version,
                           table, added, alpha, min_effect)  # fmt: skip
    for f in summary["fields"]:
        verdict = "DRIFTED" if f["drifted"] else "stable"
        err.print(f"{f['field']}: {verdict} ({f['test']} {f['statistic']:.3f}, "
                  f"p={f['pvalue']:.3g})", highlight=False)  # fmt: skip
    err.print(f"report: {summary['report']}", highlight=False)
    summary["fields"] = {f["field"]: {k: f[k] for k in ("kind", "test", "statistic", "pvalue",
                         "drifted")} for f in summary["fields"]}  # fmt: skip
    emit(summary)


@label_app.command("serve")
@friendly
def label_serve(
    detach: bool = typer.Option(False, help="leave it running and return"),
) -> None:
    """Start Label Studio on 127.0.0.1 and wait until it answers."""
    from harvest import stages

    cfg = config()
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


@label_app.command("stop")
@friendly
def label_stop() -> None:
    """Stop a Label Studio started with --detach."""
    from harvest import stages

    stages.label_server(config()).stop()


@label_app.command("push")
@friendly
def label_push(
    source: str,
    strategy: str | None = typer.Option(
        None,
        help="random, least_confidence, margin, entropy, kcenter, hybrid or coldstart "
        "(default: least_confidence with a labelling model, coldstart without)",
    ),
    batch: int | None = typer.Option(
        None, min=0, help="import this many rows (default: every row not yet a task)"
    ),
    seed: int = typer.Option(0, help="seed of the random and clustering strategies"),
) -> None:
    """Import curated rows of SOURCE as tasks, the most useful first, each with the labelling
    model's prediction; never the same row twice."""
    from harvest import stages
    from labeling.strategies import STRATEGIES

    if strategy is not None and strategy not in STRATEGIES:
        raise typer.BadParameter(f"--strategy {strategy!r}: one of {', '.join(STRATEGIES)}")
    cfg = config()
    result = stages.push_source(cfg, stages.recipe(cfg, source), None, strategy, batch, seed)
    emit({"source": source, **vars(result)})


@label_app.command("retrain")
@friendly
def label_retrain(
    source: str,
    pull: bool = typer.Option(True, help="pull the annotations into labels/<source> first"),
) -> None:
    """Retrain the labelling model of SOURCE and replace the predictions of waiting tasks."""
    from harvest import stages

    cfg = config()
    emit(stages.retrain_and_refresh(cfg, stages.recipe(cfg, source), pull=pull))


@label_app.command("pull")
@friendly
def label_pull(sources: list[str] = typer.Argument(None, help="default: every recipe")) -> None:
    """Write the annotations of each source's project into labels/<source>."""
    from harvest import stages
    from spiders.recipe import load_recipe

    cfg = config()
    names = sources or sorted(p.stem for p in Path(cfg.sources).glob("*.yaml"))
    sync = stages.label_sync(cfg)
    for name in names:
        r = load_recipe(name, cfg.sources)
        if sources or stages.project_title(r.name) in sync.project_titles():
            emit(stages.pull_source(cfg, r, sync))


@label_app.command("webhook")
@friendly
def label_webhook(
    port: int = typer.Option(8090, help="port on 127.0.0.1 (0 picks a free one)"),
    k: int = typer.Option(50, "--k", help="retrain a source after this many new labels ..."),
    minutes: float = typer.Option(10.0, help="... or this long after its first new label"),
    url: str | None = typer.Option(None, help="where Label Studio reaches the receiver"),
) -> None:
    """Receive Label Studio's annotation webhooks into the lake until interrupted."""
    import logging

    from harvest import stages

    # a long-running service: what it receives and each retrain go to stderr
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s")
    for name in ("harvest", "labeling"):
        logging.getLogger(name).setLevel(logging.INFO)
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


@label_app.command("simulate")
@friendly
def label_simulate(
    truth: Path = typer.Option(..., help="ground truth JSON from `harvest demo-site --truth`"),
    n: int | None = typer.Option(None, "-n", help="how many tasks to label (default: all)"),
    source: str = typer.Option("demo"),
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


@label_app.command("report")
@friendly
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


@app.command()
@friendly
def train(
    source: str = typer.Option("demo", help="curated and labels tables to cut from"),
    dataset: str | None = typer.Option(None, help="dataset name (default: the source)"),
    model: str = typer.Option(
        "ngram", help="ngram (hashed n-gram bag) or embedding (all-MiniLM-L6-v2 and a head)"
    ),
    epochs: int = typer.Option(20, help="at most this many; early stopping may end sooner"),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto", help="auto (CUDA when present, else CPU), cpu or cuda"),
    batch_size: int = typer.Option(32),
    lr: float | None = typer.Option(None, help="peak learning rate (default: the model's)"),
    patience: int = typer.Option(5, help="epochs without a better validation macro F1; 0: off"),
    schedule: str = typer.Option("linear", help="after warmup: linear, cosine or constant"),
    amp: bool = typer.Option(True, "--amp/--no-amp", help="mixed precision on CUDA"),
    finetune: bool | None = typer.Option(
        None,
        "--finetune/--frozen",
        help="embedding model: train the encoder too (default: on CUDA)",
    ),
    checkpoint_dir: Path | None = typer.Option(
        None, help="default: REPORTS/checkpoints/DATASET-vN-MODEL"
    ),
    resume: bool = typer.Option(False, help="continue from the checkpoint's last epoch"),
    stop_after: int = typer.Option(0, help="end after this many epochs (resume later)"),
    folds: int = typer.Option(0, help="stratified k-fold cross-validation as well (k >= 2)"),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="TF-IDF baseline"),
) -> None:
    """Cut a dataset version from curated rows and labels, train and evaluate a model.

    Several processes: torchrun --nproc_per_node N -m harvest.cli train ..."""
    from harvest import stages
    from ingestion.datasets import cut_dataset
    from ingestion.lake import Lake
    from training import distributed
    from training.embedding import EmbeddingError
    from training.run import train_and_evaluate
    from training.trainer import TrainConfig, TrainError, pick_device

    cfg = config()
    r = stages.recipe(cfg, source)
    lake = Lake(cfg.lake)
    name = dataset or r.name
    train_config = TrainConfig(
        epochs=epochs, seed=seed, device=device, model=model, batch_size=batch_size, lr=lr,
        patience=patience, schedule=schedule, amp=amp, finetune=finetune,
        checkpoint_dir=str(checkpoint_dir) if checkpoint_dir else None, resume=resume,
        stop_after=stop_after, folds=folds, baseline=baseline,
    )  # fmt: skip
    try:
        # under torchrun, rank 0 alone cuts (one dataset version) and records the run
        distributed.init(pick_device(device).split(":")[0])
        version = None
        if distributed.rank() == 0:
            version = cut_dataset(lake, name, r.name, f"labels/{r.name}", r.text_field, seed=seed)
        cut = distributed.broadcast(version.version if version else None)
        if distributed.rank() != 0:
            train_and_evaluate(lake, name, cut, cfg.reports, train_config)
            return
        result = stages.train_dataset(cfg, lake, name, cut, train_config)
    except (TrainError, EmbeddingError) as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from exc
    finally:
        distributed.close()
    test = result["test"]
    base = (result.get("baseline") or {}).get("test") or {}
    emit({"dataset": name, "dataset_version": cut, "rows": result["rows"],
          "model": result["model"], "device": result["device"],
          "epochs_run": result["epochs_run"], "best_epoch": result["best_epoch"],
          "test_accuracy": test["accuracy"], "test_macro_f1": test["macro_f1"],
          "baseline_test_accuracy": base.get("accuracy"),
          "baseline_test_macro_f1": base.get("macro_f1"),
          "report_dir": result["report_dir"], "report_html": result["report_html"],
          "checkpoint_dir": result["checkpoint_dir"], "cv": result["cv"],
          "mlflow": result.get("mlflow")})  # fmt: skip


@app.command()
@friendly
def export(
    dataset: str,
    out: Path = typer.Option(..., help="folder to write the files, card and manifest into"),
    version: int | None = typer.Option(None, help="dataset version (default: latest)"),
    fmt: str = typer.Option("parquet", "--format", help="parquet or jsonl"),
    shards: int | None = typer.Option(
        None, min=1, help="K files per split under data/ (default: one file per split)"
    ),
) -> None:
    """Write a dataset version as Parquet or JSONL shards with a dataset card (README.md)
    and a manifest of checksums; loads with Hugging Face `datasets` as it is."""
    from harvest import stages

    emit(stages.export_dataset(config(), dataset, out, version, fmt, shards))


@app.command()
@friendly
def demo(
    articles: int = typer.Option(400),
    seed: int = typer.Option(7),
    corpus: Path | None = typer.Option(None, help="serve this AG News style CSV instead"),
    workdir: Path = typer.Option(Path("demo"), help="the demo's own lake, reports and export"),
    epochs: int = typer.Option(20),
) -> None:
    """The whole flow on the demo site; prints one JSON summary as its last line."""
    from harvest.demo import run_demo

    summary = run_demo(config(), workdir, articles, seed, corpus, epochs)
    emit(summary)


@lake_app.command("history")
@friendly
def lake_history(
    table: str = typer.Argument(..., help="e.g. raw/demo, curated/demo, datasets/demo, runs"),
    limit: int | None = typer.Option(None, min=1, help="only the newest N versions"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """List the versions of TABLE: time, operation, rows added, crawl id, lineage."""
    from rich.table import Table

    from ingestion.lake import Lake
    from ingestion.versions import history

    commits = history(Lake(config().lake), table, limit)
    if as_json:
        print(json.dumps([c.as_json() for c in commits], default=str))
        return
    out = Table(title=table, title_justify="left")
    for name in ("version", "time (UTC)", "operation", "rows added", "crawl id", "lineage"):
        out.add_column(name, overflow="fold", justify="right" if name == "version" else "left")
    for c in commits:
        rest = {k: v for k, v in c.lineage.items() if k not in ("crawl_id", "content_sha256")}
        out.add_row(
            str(c.version), c.time.strftime("%Y-%m-%d %H:%M:%S"), c.operation,
            "" if c.rows_added is None else str(c.rows_added), c.crawl_id or "",
            ", ".join(f"{k}={json.dumps(v)}" for k, v in rest.items()),
        )  # fmt: skip
    Console(soft_wrap=False).print(out)


def lake_tables(table: str | None) -> list[str]:
    from ingestion.lake import Lake

    lake = Lake(config().lake)
    names = [table] if table else lake.tables()
    if not names:
        err.print(f"no tables in lake {lake.root}")
    return names


@lake_app.command("compact")
@friendly
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
        err.print(f"{name}: {r['files_removed']} files rewritten into {r['files_added']}, "
                  f"version {r['version']}", highlight=False)  # fmt: skip
        results.append(r)
    emit({"compacted": results})


@lake_app.command("vacuum")
@friendly
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
        err.print(f"{name}: {verb} {len(r.removed)} file(s) older than {retain_hours} h",
                  highlight=False)  # fmt: skip
        for pin in r.kept:
            err.print(f"  kept the files of {name} version {pin.version}: {pin.reason}",
                      highlight=False)  # fmt: skip
        results.append(r.as_json())
    emit({"dry_run": dry_run, "retain_hours": retain_hours, "vacuumed": results})


@lake_app.command("check")
@friendly
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


@dataset_app.command("create")
@friendly
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
    emit(stages.create_dataset(config(), name, names, labels, fractions, rules, seed))


@dataset_app.command("rebuild")
@friendly
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
    emit({"dataset": name, "version": r.version, "rows": r.rows, "tables": r.lineage["tables"],
          "sha256": r.sha256, "stored_sha256": r.stored_sha256,
          "recorded_sha256": r.recorded_sha256, "identical": r.identical,
          "out": str(out) if out else None})  # fmt: skip
    if not r.identical:
        err.print(f"[bold red]error:[/] dataset {name!r} version {r.version} rebuilt differently "
                  "from what was stored", highlight=False)  # fmt: skip
        raise typer.Exit(1)


@model_app.command("list")
@friendly
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
            f"v{v['version']}" + (f" ({held[v['version']]})" if v["version"] in held else "")
            + (f" {v['dataset']} v{v['dataset_version']}" if v["dataset_version"] is not None
               else "")
            for v in m["versions"]
        )  # fmt: skip
        err.print(f"{m['model']}: {versions}", highlight=False)
    if not models:
        err.print(f"no registered models in {safe_uri(store.uri)}", highlight=False)
    emit({"tracking_uri": safe_uri(store.uri), "models": models})


@model_app.command("promote")
@friendly
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


@model_app.command("show")
@friendly
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
    err.print(f"{name} v{shown['version']}{aliases}: run {shown['run_id']}, dataset "
              f"{shown['dataset']} v{shown['dataset_version']}", highlight=False)  # fmt: skip
    for key, value in shown.get("metrics", {}).items():
        err.print(f"  {key} = {value:.4g}", highlight=False)
    emit(shown)


@app.command()
@friendly
def serve(
    port: int = typer.Option(8600, min=1, max=65535, help="port to listen on"),
    host: str = typer.Option("127.0.0.1", help="address to listen on (loopback by default)"),
    label_studio: bool = typer.Option(
        True, help="start Label Studio unless one answers at the configured address"
    ),
    time_limit: float = typer.Option(
        3600.0, min=1, help="seconds a run may take, for recipes whose schedule sets none"
    ),
    stop_grace: float = typer.Option(
        30.0, min=0, help="on SIGTERM, seconds running crawls get to finish their batch"
    ),
) -> None:
    """Serve the HTTP API, the dashboard and the recipes' schedules until SIGTERM.

    Changes need Authorization: Bearer $HARVEST_API_TOKEN; the OpenAPI document is at
    /openapi.json. Logs are JSON lines on stderr."""
    from harvest.service.serve import serve as run_service

    run_service(config(), host, port, label_studio, time_limit, stop_grace)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
