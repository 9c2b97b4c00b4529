"""Records training runs in MLflow: parameters, metrics per epoch and on the test split, the
report and the model as artifacts, and the dataset name, version and lineage as tags.

The store is any MLflow tracking URI. The default (see ``harvest.config``) is a SQLite file
beside the lake with the artifacts in a folder next to it, so no server has to run; the
same URI serves as the model registry (``training.registry``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from ingestion.errors import ConfigurationError, UnavailableError
from ingestion.lake import Lake

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from training.run import TrainingResult
    from training.trainer import TrainConfig

# mlflow is imported where used: it takes a second or two, and the command line imports
# this module for its error type on every command

log = logging.getLogger(__name__)
ARTIFACTS = "artifacts"  # the artifact folder beside a SQLite store
MODEL_FILE = "model.pt"  # what train_and_evaluate writes into its report folder
# figures of a training summary that are metrics of the whole run
SUMMARY_METRICS = (
    "best_epoch",
    "best_val_macro_f1",
    "epochs_run",
    "train_seconds",
    "train_samples_per_s",
)
_METRIC_KEY = re.compile(r"[^\w\-. :/]")


@dataclass(frozen=True)
class TrackedRun:
    """Where a training run was recorded in MLflow, and the model version it registered
    (None, with no aliases, for a run stopped part way)."""

    tracking_uri: str  # without a password
    experiment: str
    run_id: str
    model: str
    model_version: int | None
    aliases: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TrackingError(UnavailableError):
    """The MLflow tracking server does not answer."""


class TrackingStoreError(ConfigurationError, TrackingError):
    """The MLflow store cannot be created or used as configured."""


def safe_uri(uri: str) -> str:
    """``uri`` without a password, for messages and summaries."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for other URIs and in-memory ones)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def artifact_root(uri: str) -> str | None:
    """Where experiments created in the store keep their artifacts: beside a SQLite file;
    a tracking server or another database decides for itself."""
    path = sqlite_path(uri)
    return (path.parent.resolve() / ARTIFACTS).as_uri() if path else None


def _import_mlflow() -> None:
    # no usage reports leave the machine, and an unreachable server fails within seconds
    # rather than after minutes of retries; an explicit setting still wins
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow  # noqa: F401

    # schema creation and migrations log at INFO on every new store: not news to a user
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


class Store:
    """One MLflow tracking and registry URI, opened on first use."""

    def __init__(self, uri: str):
        self.uri = uri
        self._client: MlflowClient | None = None

    def __repr__(self) -> str:
        return f"Store({safe_uri(self.uri)!r})"

    def exists(self) -> bool:
        """False only for a SQLite file not created yet: readers need not create one just
        to find it empty."""
        path = sqlite_path(self.uri)
        return path is None or path.exists()

    def stamp(self) -> tuple[int, ...] | None:
        """What changes whenever a SQLite store is written (its file's and its journal's
        times and sizes), so a watcher can skip the queries while it stays the same; None
        where there is no such file to look at (a tracking server, another database)."""
        path = sqlite_path(self.uri)
        if path is None:
            return None
        found: list[int] = []
        for file in (
            path,
            path.with_name(path.name + "-wal"),
            path.with_name(path.name + "-journal"),
        ):
            try:
                st = file.stat()
                found += [st.st_mtime_ns, st.st_size, st.st_ino]
            except FileNotFoundError:
                found += [0, 0, 0]
        return tuple(found)

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _connect(self) -> MlflowClient:
        shown = safe_uri(self.uri)
        parts = urlsplit(self.uri)
        if parts.scheme in ("http", "https"):
            port = parts.port or (443 if parts.scheme == "https" else 80)
            try:
                # a refused port answers at once; MLflow's client would retry for a while
                socket.create_connection((parts.hostname or "", port), timeout=5).close()
            except OSError as exc:
                raise TrackingError(
                    f"the MLflow tracking server at {shown} is not reachable: {exc}",
                    hint="start it, or set HARVEST_TRACKING_URI to another store",
                ) from exc
        path = sqlite_path(self.uri)
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise TrackingStoreError(f"cannot create the MLflow store {shown}: {exc}") from exc
        _import_mlflow()
        from mlflow import MlflowClient

        if path is not None and not path.exists():
            seed_sqlite(path)

        try:
            client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
            # opens the store now (and creates a new SQLite one), so a bad URI fails here
            client.search_experiments(max_results=1)
        except Exception as exc:  # MLflow, SQLAlchemy and HTTP errors all mean the same here
            raise TrackingStoreError(
                f"the MLflow tracking store {shown} cannot be used: {first_line(exc)}"
            ) from exc
        return client

    def experiment(self, name: str) -> str:
        """The id of experiment ``name``, created on first use."""
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        root = artifact_root(self.uri)
        location = f"{root}/{name}" if root else None
        return str(self.client.create_experiment(name, artifact_location=location))


def seed_sqlite(path: Path) -> None:
    """Creates the SQLite store at ``path`` as a copy of an empty one that this MLflow
    version created and migrated before, kept in the user's cache folder: MLflow creates a
    store by running a hundred or so schema migrations, seconds every time. Anything amiss
    and MLflow creates the store itself, as it would without this."""
    import shutil
    import sqlite3

    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "harvest"
    template = cache / f"mlflow-{mlflow.__version__}-empty.db"
    part = path.with_name(f".{path.name}.{os.getpid()}")
    made = template.with_name(f".{template.name}.{os.getpid()}")
    try:
        if not template.exists():
            cache.mkdir(parents=True, exist_ok=True)
            MlflowClient(f"sqlite:///{made}").search_experiments(max_results=1)
            os.replace(made, template)
        shutil.copyfile(template, part)
        root = artifact_root(f"sqlite:///{path}")
        with sqlite3.connect(part) as db:  # the default experiment's artifacts go beside it
            db.execute(
                "UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                (f"{root}/0",),
            )
        db.close()
        os.link(part, path)  # never over a store another process has just created
    except (OSError, sqlite3.Error, MlflowException):
        pass
    finally:
        part.unlink(missing_ok=True)
        made.unlink(missing_ok=True)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def metric_key(name: str) -> str:
    """``name`` with the characters MLflow refuses in a metric key replaced."""
    return _METRIC_KEY.sub("_", name)


class Run:
    """An open MLflow run: what is logged goes to it at once."""

    def __init__(self, client: MlflowClient, run_id: str, artifact_uri: str):
        self.client = client
        self.run_id = run_id
        self.artifact_uri = artifact_uri

    def params(self, values: Mapping[str, object]) -> None:
        from mlflow.entities import Param

        # MLflow keeps a parameter value of at most 6,000 characters
        batch = [Param(k, str(v)[:6000]) for k, v in values.items() if v is not None]
        if batch:
            self.client.log_batch(self.run_id, params=batch)

    def metrics(self, values: Mapping[str, object], step: int = 0) -> None:
        """Logs the numbers among ``values``; anything else is left out."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [
            Metric(metric_key(k), float(v), now, step)
            for k, v in values.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        ]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def tags(self, values: Mapping[str, object]) -> None:
        from mlflow.entities import RunTag

        batch = [RunTag(k, str(v)) for k, v in values.items() if v is not None]
        if batch:
            self.client.log_batch(self.run_id, tags=batch)

    def artifact(self, path: str | Path, folder: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), folder)

    def dataset(self, name: str, digest: str, source: str, context: str = "training") -> None:
        """Records the dataset version as the run's input, where MLflow shows datasets."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        data = Dataset(name=name, digest=digest[:36], source_type="delta", source=source)
        tags = [InputTag("mlflow.data.context", context)]
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(data, tags)])


@contextmanager
def run(store: Store, experiment: str, name: str, tags: Mapping[str, object]) -> Iterator[Run]:
    """An MLflow run in ``experiment``, ended FINISHED when the block ends and FAILED (or
    KILLED, on Ctrl-C) when it raises."""
    client = store.client
    started = client.create_run(
        store.experiment(experiment),
        run_name=name,
        tags={k: str(v) for k, v in tags.items() if v is not None},
    )
    current = Run(client, started.info.run_id, started.info.artifact_uri)
    try:
        yield current
    except KeyboardInterrupt:
        client.set_terminated(current.run_id, "KILLED")
        raise
    except BaseException:
        client.set_terminated(current.run_id, "FAILED")
        raise
    client.set_terminated(current.run_id, "FINISHED")


def log_model(
    store: Store,
    name: str,
    run_name: str,
    save: Callable[[Path], object],
    tags: Mapping[str, object],
    params: Mapping[str, object],
    metrics: dict[str, float | None],
    dataset: tuple[str, str, str] | None = None,
) -> ModelVersion:
    """Records a model that needs no training report: one run of the experiment ``name``
    with ``params``, ``metrics``, ``dataset`` (name, digest, source) as its input and, under
    ``model/``, what ``save`` writes into a folder; registered as a new version of the model
    ``name``, which takes the ``challenger`` alias."""
    import tempfile

    from training import registry

    with run(store, name, run_name, tags) as r:
        r.params(params)
        r.metrics({k: v for k, v in metrics.items() if v is not None})
        if dataset is not None:
            r.dataset(*dataset, context="training")
        with tempfile.TemporaryDirectory(prefix="harvest-model-") as tmp:
            save(Path(tmp))
            r.client.log_artifacts(r.run_id, tmp, "model")
        return registry.register(store, name, r.run_id, f"{r.artifact_uri}/model", tags)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def keep_profile(lake: Lake, dataset: str, version: int, folder: Path) -> None:
    """Writes the profile drift monitoring compares live inputs with beside the model in
    ``folder``; a model without one is still registered (monitoring builds it later)."""
    from training import profile, pyfunc

    try:
        found = profile.from_dataset(lake, dataset, version, pyfunc.load(folder))
    except Exception as exc:
        log.warning("no drift profile kept for %s v%s: %s", dataset, version, exc)
        return
    found.save(folder / profile.FILE)


def train_tracked(
    store: Store,
    lake: Lake,
    dataset: str,
    version: int | None,
    report_root: str | Path,
    config: TrainConfig,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> TrainingResult:
    """``training.run.train_and_evaluate``, recorded as an MLflow run in the experiment
    ``harvest-<dataset>`` and registered as a new version of the model of that name, which
    takes the ``challenger`` alias. The result gains ``mlflow``: where it was recorded."""
    import tempfile

    from ingestion.datasets import dataset_lineage
    from training import linear, pyfunc, registry
    from training.run import train_and_evaluate

    name = registry.model_name(dataset)
    store.client  # noqa: B018  # an unusable store fails before minutes of training
    tags = {"harvest.dataset": dataset, "harvest.kind": "training"}
    with run(store, name, f"{dataset}-v{'latest' if version is None else version}", tags) as r:
        params = asdict(config)
        r.params(params)
        logged: set[int] = set()

        def epoch(row: dict[str, float]) -> None:
            step = int(row.get("epoch", len(logged) + 1))
            r.metrics({k: v for k, v in row.items() if k != "epoch"}, step)
            logged.add(step)
            if on_epoch:
                on_epoch(row)

        result = train_and_evaluate(lake, dataset, version, report_root, config, epoch)
        if result.candidates:  # --model auto called back with each candidate's own names
            logged.clear()
            for c in result.candidates:
                r.metrics({f"candidate.{c['model']}.{k}": v for k, v in c.items() if _number(v)})
        # epochs the trainer reported only in its history (none, when it calls back)
        for i, row in enumerate(result.history, start=1):
            if int(row.get("epoch", i)) not in logged:
                r.metrics({k: v for k, v in row.items() if k != "epoch"}, int(row.get("epoch", i)))
        cut = result.dataset_version
        lineage = dict(result.lineage)
        try:
            full = dataset_lineage(lake, dataset, cut)[1]
        except Exception:  # the result's lineage is enough to record the run
            full = {"tables": lineage}
        r.tags(
            {
                "harvest.dataset_version": cut,
                "harvest.lineage": json.dumps(lineage, sort_keys=True),
                "harvest.device": result.device,
                "harvest.interrupted": "true" if result.interrupted else None,
                **{f"harvest.lineage.{t}": v for t, v in sorted(lineage.items())},
            }
        )
        r.params({"device_used": result.device, **{f"rows_{k}": v for k, v in result.rows.items()}})
        test = result.test
        baseline: Mapping[str, object] = result.baseline.test if result.baseline else {}
        r.metrics(
            {
                **{k: getattr(result, k) for k in SUMMARY_METRICS},
                **{f"test_{k}": v for k, v in test.items()},
                **{f"test_f1.{c}": m["f1"] for c, m in test["per_class"].items()},
                **{f"baseline_test_{k}": v for k, v in baseline.items()},
                **numbers(result.cv, "cv"),
                **{
                    f"ci_{who}_{k}_{end}": v[i]
                    for who, figures in result.intervals.items()
                    if isinstance(figures, dict)
                    for k, v in figures.items()
                    for i, end in enumerate(("low", "high"))
                },
            }
        )
        r.dataset(
            f"{dataset}-v{cut}",
            str(full.get("content_sha256") or json.dumps(lineage, sort_keys=True)),
            f"{lake.root}/datasets/{dataset}@v{cut}",
        )
        folder = Path(result.report_dir)
        for path in sorted(folder.iterdir()):
            if path.name in (MODEL_FILE, linear.MODEL_FILE):
                # the model once, under model/, as an MLflow model: what the registry
                # points at, and what mlflow.pyfunc.load_model reads
                with tempfile.TemporaryDirectory(prefix="harvest-model-") as tmp:
                    saved = Path(tmp) / "model"
                    if path.name == MODEL_FILE:
                        pyfunc.save(path, saved)
                    else:
                        linear.save_mlflow(path, saved)
                    keep_profile(lake, dataset, cut, saved)
                    r.client.log_artifacts(r.run_id, str(saved), "model")
            elif path.is_file():
                r.artifact(path, "report")
            elif path.is_dir():
                r.client.log_artifacts(r.run_id, str(path), f"report/{path.name}")
        # a run stopped part way (to resume later) holds no model worth serving yet
        registered = None
        if not result.interrupted:
            registered = registry.register(
                store,
                name,
                r.run_id,
                f"{r.artifact_uri}/model",
                {"harvest.dataset": dataset, "harvest.dataset_version": cut},
            )
    tracked = TrackedRun(
        tracking_uri=safe_uri(store.uri),
        experiment=name,
        run_id=r.run_id,
        model=name,
        model_version=int(registered.version) if registered else None,
        aliases=list(registered.aliases) if registered else [],
    )
    return replace(result, mlflow=tracked)


def numbers(tree: object, prefix: str) -> dict[str, float]:
    """The numbers in nested dicts, keyed by their dotted path."""
    if isinstance(tree, dict):
        return {
            k: v for key, sub in tree.items() for k, v in numbers(sub, f"{prefix}.{key}").items()
        }
    if isinstance(tree, int | float) and not isinstance(tree, bool):
        return {prefix: tree}
    return {}
