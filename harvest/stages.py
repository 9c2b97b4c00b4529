"""Each stage of the flow as one call, shared by the command line and the demo."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harvest.config import Config
from ingestion.lake import Lake
from labeling.server import LabelStudioServer
from labeling.sync import LabelSync, PushResult, SyncError
from spiders.recipe import Recipe, load_recipe
from validation.suite import BatchSpec, GateSpec, Rule

if TYPE_CHECKING:
    from labeling.model import LabelModel
    from labeling.webhook import WebhookServer
    from validation.gate import CurateResult

log = logging.getLogger(__name__)


def recipe(config: Config, source: str) -> Recipe:
    return load_recipe(source, config.sources)


def gate_spec(r: Recipe) -> GateSpec:
    return GateSpec(
        text_field=r.text_field,
        required=[n for n, f in r.fields.items() if f.required],
        dates={n: f.format for n, f in r.fields.items() if f.type == "date"},
        rules=[Rule(e.expect, e.column, e.min, e.max, e.format) for e in r.expectations],
        batch=BatchSpec(**vars(r.batch)) if r.batch else None,
        steps=r.steps,
    )


def curate_source(config: Config, r: Recipe, accept_batch: str | None = None) -> CurateResult:
    # Great Expectations takes seconds to import: only the commands that curate pay for it
    from validation.gate import curate

    return curate(Lake(config.lake), r.name, gate_spec(r), config.reports, accept_batch)


def project_title(source: str) -> str:
    return f"harvest {source}"


def label_server(config: Config) -> LabelStudioServer:
    return LabelStudioServer(
        executable=config.label_studio_executable,
        data_dir=Path(config.label_studio_data_dir),
        host=config.label_studio_host,
        port=config.label_studio_port,
        username=config.label_studio_username,
        password=config.label_studio_password,
        token=config.label_studio_token,
    )


def label_sync(config: Config) -> LabelSync:
    return LabelSync(config.label_studio_url, config.label_studio_token, Lake(config.lake))


def model_dir(config: Config, source: str) -> Path:
    """Where the labelling model of ``source`` is kept."""
    return Path(config.models_dir) / source


def push_source(
    config: Config,
    r: Recipe,
    sync: LabelSync | None = None,
    strategy: str | None = None,
    batch: int | None = None,
    seed: int = 0,
) -> PushResult:
    """Imports ``batch`` (default: every) curated rows of ``r`` that are neither tasks nor
    labelled, chosen by ``strategy``, each with the labelling model's prediction when one
    was trained (see ``labeling.push``)."""
    from labeling import model, push

    sync = sync or label_sync(config)
    lake = Lake(config.lake)
    project_id = sync.project(project_title(r.name), r.labels, r.label_type)
    table = f"curated/{r.name}"
    if not lake.exists(table):
        return PushResult(project_id, 0, 0)
    rows = lake.read(table, columns=["content_sha256", "url", r.text_field])
    tasks = [
        {"row_id": h, "url": u, "text": t}
        for h, u, t in zip(*(rows[c].to_pylist() for c in rows.column_names), strict=True)
    ]
    labels = f"labels/{r.name}"
    labelled = (
        lake.read(labels, columns=["row_id"])["row_id"].to_pylist() if lake.exists(labels) else []
    )
    # the labelling model predicts one class a row: other task types get no pre-annotation
    current = model.load(model_dir(config, r.name)) if r.label_type == "single" else None
    return push.push(sync, project_id, tasks, current, strategy, batch, seed, labelled)


def train_source_model(config: Config, r: Recipe) -> LabelModel:
    """Fits the labelling model of ``r`` on its labels so far and saves it."""
    from labeling.model import ModelError, train_from_lake

    if r.label_type != "single":
        raise ModelError(
            f"the labelling model predicts one class a row; source {r.name!r} is labelled "
            f"as {r.label_type!r}"
        )
    trained = train_from_lake(Lake(config.lake), r.name, r.text_field)
    trained.save(model_dir(config, r.name))
    return trained


def retrain_and_refresh(
    config: Config, r: Recipe, sync: LabelSync | None = None, pull: bool = False
) -> dict[str, Any]:
    """Retrains the labelling model of ``r`` and replaces the predictions of every task still
    waiting for a label, so the queue sorts by what the model knows now. With ``pull``, the
    annotations are pulled into labels/<source> first."""
    from labeling.push import refresh

    sync = sync or label_sync(config)
    if pull:
        pull_source(config, r, sync)
    trained = train_source_model(config, r)
    project_id = sync.project(project_title(r.name), r.labels, r.label_type)
    refreshed = refresh(sync, project_id, trained)
    return {
        "source": r.name,
        "project_id": project_id,
        "model_version": trained.version,
        "labels": trained.labels,
        "classes": trained.classes,
        "refreshed": refreshed.tasks,
        "model_dir": str(model_dir(config, r.name)),
    }


def pull_source(config: Config, r: Recipe, sync: LabelSync | None = None) -> dict[str, Any]:
    sync = sync or label_sync(config)
    project_id = sync.project(project_title(r.name), r.labels, r.label_type)
    rows, version = sync.pull(project_id, f"labels/{r.name}", r.label_type, f"annotations/{r.name}")
    return {"source": r.name, "project_id": project_id, "labels": rows, "version": version}


def studio_tasks(config: Config, r: Recipe) -> tuple[int | None, str | None]:
    """How many tasks the project of ``r`` holds, or None and why when Label Studio does
    not answer. Creates no project: a report must not change what it reports on."""
    import socket

    try:
        # a refused port answers at once; the SDK would retry for a while first
        socket.create_connection(
            (config.label_studio_host, config.label_studio_port), timeout=2
        ).close()
    except OSError as exc:
        return None, f"Label Studio at {config.label_studio_url} is not reachable: {exc}"
    try:
        sync = label_sync(config)
        project_id = sync.project_titles().get(project_title(r.name))
        return (0 if project_id is None else len(sync.task_row_ids(project_id))), None
    except SyncError as exc:
        return None, str(exc)


def report_labels(config: Config, r: Recipe, folds: int = 5, studio: bool = True) -> dict[str, Any]:
    """Writes the label quality report of ``r`` (see ``labeling.report``)."""
    from labeling.report import label_report

    tasks, note = studio_tasks(config, r) if studio else (None, "Label Studio was not asked")
    return label_report(Lake(config.lake), r.name, config.reports, r.label_type, r.text_field,
                        folds, r.labels, tasks, note)  # fmt: skip


def retrain_source(config: Config, r: Recipe) -> dict[str, Any]:
    """What the webhook receiver runs once enough new labels of ``r`` arrived: a pull, which
    reconciles labels/<source> with Label Studio (a webhook sent while the receiver was down
    is never sent again), then, where the labelling model applies, a new model and fresh
    predictions for the tasks still waiting."""
    if r.label_type != "single":
        result = pull_source(config, r)
        log.info("retrain %s: %s labelled tasks pulled; no model for %s labels", r.name,
                 result["labels"], r.label_type)  # fmt: skip
        return result
    result = retrain_and_refresh(config, r, pull=True)
    log.info("retrain %s: model %s from %s labels, %s waiting tasks re-predicted", r.name,
             result["model_version"], result["labels"], result["refreshed"])  # fmt: skip
    return result


def start_webhook(
    config: Config, port: int, k: int, minutes: float, url: str | None = None
) -> tuple[WebhookServer, list[dict[str, Any]]]:
    """Starts the webhook receiver on 127.0.0.1:``port`` for every recipe with labels and
    registers it with each one's project (``url``: where Label Studio reaches it, default
    the local address). Returns the running server and one line per source."""
    from labeling.retrain import Debouncer
    from labeling.store import LabelStore
    from labeling.tasktypes import task_type
    from labeling.webhook import Receiver, Route, WebhookServer, register

    sync = label_sync(config)
    names = sorted(p.stem for p in Path(config.sources).glob("*.yaml"))
    by_name = {r.name: r for r in (load_recipe(n, config.sources) for n in names) if r.labels}
    routes: dict[int, Route] = {}
    for r in by_name.values():
        project_id = sync.project(project_title(r.name), r.labels, r.label_type)
        store = LabelStore.for_source(
            Lake(config.lake), r.name, task_type(r.label_type), {"project_id": project_id}
        )
        routes[project_id] = Route(r.name, store)
    debouncer = Debouncer(lambda name: retrain_source(config, by_name[name]), k, minutes)
    try:
        server = WebhookServer(Receiver(config.webhook_secret, routes, debouncer), port=port)
    except OSError as exc:
        raise SyncError(f"the webhook receiver cannot listen on 127.0.0.1:{port}: {exc}") from exc
    target = url or server.url
    lines = []
    try:
        for project_id, route in routes.items():
            hook = register(sync, project_id, target, config.webhook_secret)
            lines.append({"source": route.source, "project_id": project_id, "webhook": hook})
    except BaseException:
        server.httpd.server_close()
        raise
    return server.start(), lines
