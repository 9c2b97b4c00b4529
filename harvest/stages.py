"""Each stage of the flow as one call, shared by the command line and the demo."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harvest.config import Config
from harvest.recipe import Recipe, list_recipes, load_recipe
from ingestion.lake import Lake
from ingestion.locks import SourceLock
from ingestion.runs import CRAWL_STAGE as CRAWL_STAGE  # callers lock by these names
from ingestion.runs import CURATE_STAGE as CURATE_STAGE
from ingestion.split import SplitRules
from validation.suite import GateSpec

if TYPE_CHECKING:
    from collections.abc import Callable

    from harvest.drifted import Inputs
    from ingestion.datasets import DatasetVersion
    from ingestion.export import SourceNotes
    from labeling.model import Contest, Labelled, LabelModel
    from labeling.server import LabelStudioServer
    from labeling.sync import LabelSync, PushResult
    from labeling.webhook import WebhookServer
    from training.run import TrainingResult
    from training.tracking import Store
    from training.trainer import TrainConfig
    from validation.gate import CurateResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelRecord:
    """One fit of a source's labelling model as recorded in MLflow: the version registered,
    the aliases it holds, whether it became the champion, and the contest that decided
    (None when there was no champion to beat)."""

    registered_model: str
    registered_version: int
    aliases: dict[str, int]  # alias -> version
    promoted: bool
    contest: Contest | None


@dataclass(frozen=True)
class Retrained:
    """A new fit of a source's labelling model, what was recorded of it, and the model that
    serves now: the new one when it was promoted, else the champion it did not beat."""

    model: LabelModel
    serving: LabelModel
    record: ModelRecord


@dataclass(frozen=True)
class PullResult:
    """What `harvest label pull` prints for a source (``to_dict``)."""

    source: str
    project_id: int
    labels: int  # labelled tasks pulled
    version: int | None  # of labels/<source>; None when nothing was written

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RetrainResult:
    """What `harvest label retrain` prints (``to_dict``): the new model, the tasks whose
    predictions were replaced, and the model version that made them."""

    source: str
    project_id: int
    model_version: str
    labels: int
    classes: list[str]
    refreshed: int
    champion_version: str
    registered_model: str
    registered_version: int
    aliases: dict[str, int]
    promoted: bool
    contest: Contest | None
    model_dir: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def recipe(config: Config, source: str) -> Recipe:
    return load_recipe(source, config.sources)


def all_recipes(config: Config) -> list[Recipe]:
    """Every recipe in the sources folder, ``.yaml`` and ``.yml`` alike; one that does not
    load raises its RecipeError."""
    return [load_recipe(path) for path in list_recipes(config.sources)]


def gate_spec(r: Recipe) -> GateSpec:
    return GateSpec(
        text_field=r.text_field,
        required=[n for n, f in r.fields.items() if f.required],
        dates={n: f.format for n, f in r.fields.items() if f.type == "date"},
        rules=list(r.expectations),
        batch=r.batch,
        steps=r.steps,
    )


def source_lock(config: Config, stage: str, source: str) -> SourceLock:
    """The lock every writer of ``stage`` of ``source`` holds: CLI, service and demo alike
    (the service's runs are CLI commands). Quarantine reviews write curated and
    quarantine, so they take the curate lock."""
    return SourceLock(config.lake, stage, source)


def curate_source(
    config: Config, r: Recipe, accept_batch: str | None = None, progress: bool = False
) -> CurateResult:
    """``progress``: show it as ``HARVEST_PROGRESS`` says (by default, on a terminal)."""
    # Great Expectations takes seconds to import: only the commands that curate pay for it
    from validation.gate import curate
    from validation.progress import CurateProgress

    shown = CurateProgress.from_env(r.name) if progress else None
    with source_lock(config, CURATE_STAGE, r.name):
        return curate(
            Lake(config.lake), r.name, gate_spec(r), config.reports, accept_batch, progress=shown
        )


def project_title(source: str) -> str:
    return f"harvest {source}"


def label_server(config: Config) -> LabelStudioServer:
    # imported here: the Label Studio client costs every crawl's start (each worker's
    # too) half a second it never uses
    from labeling.server import LabelStudioServer

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
    from labeling.sync import LabelSync

    return LabelSync(config.studio_url, config.label_studio_token, Lake(config.lake))


def model_dir(config: Config, source: str) -> Path:
    """Where the labelling model of ``source`` is kept."""
    return Path(config.models_dir) / source


def keep_sentence_vectors(config: Config) -> None:
    """Sentence vectors of the texts the labelling model reads are kept beside the models,
    so each text is encoded once, not on every push and retrain."""
    from labeling import features

    features.use_cache(Path(config.models_dir) / "sentence-vectors")


def tracking_store(config: Config) -> Store:
    from training.tracking import Store

    return Store(config.tracking)


def train_dataset(
    config: Config,
    lake: Lake,
    dataset: str,
    version: int | None,
    train_config: TrainConfig,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> TrainingResult:
    """Trains and evaluates one dataset version (``training.run``), recorded in MLflow with
    its dataset version and registered as a new version of ``harvest-<dataset>``."""
    from training.tracking import train_tracked

    return train_tracked(
        tracking_store(config), lake, dataset, version, config.reports, train_config, on_epoch
    )


def source_model(config: Config, source: str) -> LabelModel | None:
    """The labelling model that predicts for ``source``: the champion of
    ``labeling-<source>`` in MLflow, else the one in its model folder, else None."""
    from labeling.model import ModelError, load
    from training import registry

    keep_sentence_vectors(config)
    store = tracking_store(config)
    # no SQLite store yet: nothing was ever recorded, and looking must not create one
    champion = registry.find(store, registry.labeling_name(source)) if store.exists() else None
    if champion is None:
        return load(model_dir(config, source))
    folder, tmp = registry.local_copy(store, champion)
    try:
        found = load(folder)
    finally:
        if tmp is not None:
            tmp.cleanup()
    if found is None:
        raise ModelError(
            f"{champion.name} version {champion.version} (the champion) holds no "
            f"labelling model at {champion.source}"
        )
    return found


def push_source(
    config: Config,
    r: Recipe,
    sync: LabelSync | None = None,
    strategy: str | None = None,
    batch: int | None = None,
    seed: int = 0,
    reserve: float = 0.1,
    rows: list[dict[str, Any]] | None = None,
) -> PushResult:
    """Imports ``batch`` (default: every) curated rows of ``r`` (or of ``rows``) that are
    neither tasks nor labelled, chosen by ``strategy``, each with the labelling model's
    prediction when one was trained (see ``labeling.push``); a ``reserve`` share of a chosen
    batch is drawn at random instead, and recorded in ``reserve/<source>`` before it is
    imported."""
    from labeling import push
    from labeling.sync import PushResult

    sync = sync or label_sync(config)
    lake = Lake(config.lake)
    project_id = sync.project(project_title(r.name), r.labels, r.label_type)
    table = f"curated/{r.name}"
    if rows is not None:
        tasks = rows
    elif not lake.exists(table):
        return PushResult(project_id, 0, 0)
    else:
        found = lake.read(table, columns=["content_sha256", "url", r.text_field])
        tasks = [
            {"row_id": h, "url": u, "text": t}
            for h, u, t in zip(*(found[c].to_pylist() for c in found.column_names), strict=True)
        ]
    labels = f"labels/{r.name}"
    labelled = (
        lake.read(labels, columns=["row_id"])["row_id"].to_pylist() if lake.exists(labels) else []
    )
    # the labelling model predicts one class a row: other task types get no pre-annotation
    current = source_model(config, r.name) if r.label_type == "single" else None

    def held(row_ids: list[str]) -> None:
        from datetime import UTC, datetime

        import pyarrow as pa

        from ingestion.datasets import reserve_table

        at = datetime.now(UTC)
        rows = pa.table({"row_id": row_ids, "reserved_at": [at] * len(row_ids)})
        lake.append(reserve_table(labels), rows)

    return push.push(
        sync,
        project_id,
        tasks,
        current,
        strategy,
        batch,
        seed,
        labelled,
        reserve=reserve,
        on_reserve=held,
    )


def push_drifted(
    config: Config,
    r: Recipe,
    model: str,
    sync: LabelSync | None = None,
    strategy: str | None = None,
    batch: int | None = None,
    seed: int = 0,
    reserve: float = 0.1,
) -> tuple[Inputs, PushResult]:
    """Pushes the inputs ``model`` met in its drifted windows (see ``harvest.drifted``),
    first made curated rows of ``r``."""
    from harvest import drifted

    lake = Lake(config.lake)
    found = drifted.inputs(lake, model)
    with source_lock(config, CURATE_STAGE, r.name):
        rows = drifted.admit(lake, r, found)
    return found, push_source(config, r, sync, strategy, batch, seed, reserve, rows)


def train_source_model(config: Config, r: Recipe) -> LabelModel:
    """Fits the labelling model of ``r`` on its labels so far (see ``retrain_source_model``)."""
    return retrain_source_model(config, r).model


def retrain_source_model(config: Config, r: Recipe) -> Retrained:
    """Fits the labelling model of ``r`` on its labels so far and records it in MLflow as a
    new version of ``labeling-<source>``. It becomes the champion when there is none or when
    it predicts the labels the champion never saw at least as well (``labeling.model.
    contest``); the champion is also saved in the source's model folder."""
    from labeling.model import ModelError, contest, fit_labelled, labelled_rows

    if r.label_type != "single":
        raise ModelError(
            f"the labelling model predicts one class a row; source {r.name!r} is labelled "
            f"as {r.label_type!r}"
        )
    keep_sentence_vectors(config)
    lake = Lake(config.lake)
    rows = labelled_rows(lake, r.name, r.text_field)
    trained = fit_labelled(rows, r.name, r.label_features)
    champion = source_model(config, r.name)
    outcome = contest(rows, champion, features=r.label_features) if champion is not None else None
    promote = outcome is None or outcome.promote
    recorded = track_source_model(config, r.name, lake, rows, trained, outcome, promote)
    if promote or champion is None:
        trained.save(model_dir(config, r.name))
        return Retrained(trained, trained, recorded)
    return Retrained(trained, champion, recorded)


def track_source_model(
    config: Config,
    source: str,
    lake: Lake,
    rows: Labelled,
    trained: LabelModel,
    outcome: Contest | None,
    promote: bool,
) -> ModelRecord:
    """Records one fit of the labelling model as a new version of ``labeling-<source>``,
    made champion with ``promote``."""
    from functools import partial

    from labeling import pyfunc as labeling_pyfunc
    from training import registry, tracking

    store = tracking_store(config)
    name = registry.labeling_name(source)
    params = {
        f"{step}.{k}": v
        for step, est in trained.pipeline.steps
        for k, v in est.get_params(deep=False).items()
        # settings only: a nested pipeline's steps are estimators, named by ``features``
        if v is None or isinstance(v, str | int | float | bool | tuple)
    }
    params["features"] = trained.features
    metrics: dict[str, float | None] = {"labels": trained.labels, "classes": len(trained.classes)}
    if outcome is not None:
        metrics.update(
            contest_rows=outcome.rows,
            contest_candidate_accuracy=outcome.candidate,
            contest_champion_accuracy=outcome.champion,
        )
    labels = f"labels/{source}"
    version = tracking.log_model(
        store,
        name,
        trained.version,
        partial(labeling_pyfunc.save, trained),
        {
            "harvest.source": source,
            "harvest.kind": "labeling",
            "harvest.labels_version": trained.labels_version,
            "harvest.model_version": trained.version,
        },
        {"model": "tfidf-logreg", **params},
        metrics,
        (f"{labels}@v{trained.labels_version}", rows.digest(), f"{lake.root}/{labels}"),
    )
    aliases = {a: int(version.version) for a in version.aliases}
    if promote:
        aliases = registry.promote(store, name, int(version.version))["aliases"]
    return ModelRecord(name, int(version.version), aliases, promote, outcome)


def retrain_and_refresh(
    config: Config, r: Recipe, sync: LabelSync | None = None, pull: bool = False
) -> RetrainResult:
    """Retrains the labelling model of ``r`` and replaces the predictions of every task still
    waiting for a label, so the queue sorts by what the model knows now. With ``pull``, the
    annotations are pulled into labels/<source> first."""
    from labeling.push import refresh

    sync = sync or label_sync(config)
    if pull:
        pull_source(config, r, sync)
    done = retrain_source_model(config, r)
    trained, serving, recorded = done.model, done.serving, done.record
    project_id = sync.project(project_title(r.name), r.labels, r.label_type)
    # the waiting tasks carry the champion's guesses, the newer model's only once it wins
    refreshed = refresh(sync, project_id, serving)
    return RetrainResult(
        source=r.name,
        project_id=project_id,
        model_version=trained.version,
        labels=trained.labels,
        classes=trained.classes,
        refreshed=refreshed.tasks,
        champion_version=serving.version,
        registered_model=recorded.registered_model,
        registered_version=recorded.registered_version,
        aliases=recorded.aliases,
        promoted=recorded.promoted,
        contest=recorded.contest,
        model_dir=str(model_dir(config, r.name)),
    )


def pull_source(config: Config, r: Recipe, sync: LabelSync | None = None) -> PullResult:
    sync = sync or label_sync(config)
    project_id = sync.project(project_title(r.name), r.labels, r.label_type)
    rows, version = sync.pull(project_id, f"labels/{r.name}", r.label_type, f"annotations/{r.name}")
    return PullResult(r.name, project_id, rows, version)


def studio_tasks(config: Config, r: Recipe) -> tuple[int | None, str | None]:
    """How many tasks the project of ``r`` holds, or None and why when Label Studio does
    not answer. Creates no project: a report must not change what it reports on."""
    from labeling.health import studio_down
    from labeling.sync import SyncError

    down = studio_down(config.studio_url)
    if down:
        return None, down
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
    return label_report(
        Lake(config.lake),
        r.name,
        config.reports,
        r.label_type,
        r.text_field,
        folds,
        r.labels,
        tasks,
        note,
    )


def retrain_source(config: Config, r: Recipe) -> PullResult | RetrainResult:
    """What the webhook receiver runs once enough new labels of ``r`` arrived: a pull, which
    reconciles labels/<source> with Label Studio (a webhook sent while the receiver was down
    is never sent again), then, where the labelling model applies, a new model and fresh
    predictions for the tasks still waiting."""
    if r.label_type != "single":
        pulled = pull_source(config, r)
        log.info(
            "retrain %s: %s labelled tasks pulled; no model for %s labels",
            r.name,
            pulled.labels,
            r.label_type,
        )
        return pulled
    result = retrain_and_refresh(config, r, pull=True)
    log.info(
        "retrain %s: model %s from %s labels, %s; %s waiting tasks re-predicted by %s",
        r.name,
        result.model_version,
        result.labels,
        "now the champion" if result.promoted else "the challenger",
        result.refreshed,
        result.champion_version,
    )
    return result


def start_webhook(
    config: Config, port: int, k: int, minutes: float, url: str | None = None
) -> tuple[WebhookServer, list[dict[str, Any]]]:
    """Starts the webhook receiver on 127.0.0.1:``port`` for every recipe with labels and
    registers it with each one's project (``url``: where Label Studio reaches it, default
    the local address). Returns the running server and one line per source."""
    from labeling.retrain import Debouncer
    from labeling.store import LabelStore
    from labeling.sync import SyncError
    from labeling.tasktypes import task_type
    from labeling.webhook import Receiver, Route, WebhookServer, register

    sync = label_sync(config)
    by_name = {r.name: r for r in all_recipes(config) if r.labels}
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


def create_dataset(
    config: Config,
    name: str,
    sources: list[str],
    labels_project: str,
    fractions: tuple[float, float, float],
    rules: SplitRules,
    seed: int = 0,
) -> DatasetVersion:
    """Cuts a version of ``datasets/<name>`` from the curated rows of ``sources`` (each with
    its recipe's text field) labelled in ``labels/<labels_project>``; see
    ``ingestion.datasets.cut_dataset``."""
    from ingestion.datasets import cut_dataset

    recipes = [recipe(config, s) for s in sources]
    return cut_dataset(
        Lake(config.lake),
        name,
        [r.name for r in recipes],
        f"labels/{labels_project}",
        {r.name: r.text_field for r in recipes},
        seed,
        fractions,
        rules,
    )


def source_notes(config: Config, sources: list[str]) -> dict[str, SourceNotes]:
    """Licence and robots.txt notes of each source, from its recipe where there is one."""
    from harvest.recipe import RecipeError
    from ingestion.export import NOT_RECORDED, SourceNotes
    from spiders import settings as defaults

    notes = {}
    for source in sources:
        try:
            r = recipe(config, source)
        except RecipeError:
            notes[source] = SourceNotes()
            continue
        obey = r.settings.get("ROBOTSTXT_OBEY", defaults.ROBOTSTXT_OBEY)
        if not isinstance(obey, bool):
            obey = str(obey).strip().lower() in ("1", "true")
        robots = "obeyed (ROBOTSTXT_OBEY on)" if obey else "not obeyed (ROBOTSTXT_OBEY off)"
        notes[source] = SourceNotes(licence=r.licence or NOT_RECORDED, robots=robots)
    return notes


def export_dataset(
    config: Config,
    name: str,
    out: Path,
    version: int | None = None,
    fmt: str = "parquet",
    shards: int | None = None,
) -> dict[str, Any]:
    """Writes a dataset version with its card and manifest (``ingestion.export``)."""
    from ingestion.datasets import read_dataset
    from ingestion.export import export_version

    lake = Lake(config.lake)
    data, _ = read_dataset(lake, name, version)
    notes = source_notes(config, sorted(set(data["source"].to_pylist())))
    done = export_version(lake, name, out, version, fmt, shards, notes)
    m = done.manifest
    return {
        "dataset": name,
        "version": m["version"],
        "export_dir": str(done.out),
        "format": fmt,
        "rows": m["rows"],
        "splits": m["splits"],
        "files": len(done.files),
        "manifest": str(done.out / "manifest.json"),
    }
