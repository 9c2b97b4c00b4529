"""Drift monitoring: the live inputs of a served model, a window of predictions at a time,
against the split it was trained on.

The prediction log (``harvest.service.predictlog``) stores, for each logged text, the
features a profile of the model's training data (``training.profile``) measures: its
length, its share of out-of-vocabulary tokens, its sentence embedding's distance to the
training centroid and the model's confidence. ``check`` cuts the predictions logged since
the last window into windows of the recipe's ``monitor.window`` rows and compares each
with the profile through the tests of ``harvest drift`` (Kolmogorov-Smirnov for the
numbers; chi-squared and Jensen-Shannon for the predicted-class mix against the training
label mix). A check's windows are one commit to ``monitoring/<model>`` (a commit a window
made a backlog of a hundred windows a hundred commits, and every later read of the table
slower), and the next check starts after the last window committed: a check killed before
its commit is done again by the next, never comparing a window twice. A check asked to
stop commits the windows compared so far.
A model whose last window drifted is ``drifted`` until a window does not.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingestion.errors import ConflictError, NotFoundError
from ingestion.lake import Lake
from training import registry
from training.profile import FEATURES, Profile
from validation.drift import FieldDrift, categories, numbers
from validation.section import MonitorSpec

if TYPE_CHECKING:
    from harvest.config import Config
    from harvest.recipe import Recipe
    from training.pyfunc import Scorer
    from training.tracking import Store

log = logging.getLogger(__name__)
STAGE = "monitor"  # the lock a check holds: one check of a model at a time
CLASS_MIX = "class_mix"
SCHEMA = pa.schema(
    [
        ("window_start", pa.timestamp("us", tz="UTC")),  # the first prediction's time
        ("window_end", pa.timestamp("us", tz="UTC")),  # the last one's: the next starts after
        ("rows", pa.int64()),
        ("model_version", pa.int64()),
        ("feature", pa.string()),
        ("test", pa.string()),
        ("statistic", pa.float64()),
        ("pvalue", pa.float64()),
        ("drifted", pa.bool_()),
        ("live_mean", pa.float64()),
        ("reference_mean", pa.float64()),
        ("checked_at", pa.timestamp("us", tz="UTC")),
    ]
)


class MonitorError(ConflictError):
    """A model whose inputs cannot be compared: no dataset recorded, no rows to compare."""


def table_of(model: str) -> str:
    return f"monitoring/{model}"


def recipe_for(config: Config, model: str) -> Recipe | None:
    """The recipe of the source a model was trained on (``harvest-<source>``), whose
    ``monitor:`` and ``schedule:`` apply to it; None for a dataset of several sources."""
    from harvest.recipe import RecipeError, load_recipe

    source = model.removeprefix(registry.model_name(""))
    if source == model:
        return None
    try:
        return load_recipe(source, config.sources)
    except RecipeError:
        return None


def monitored(lake: Lake) -> list[str]:
    """The models with logged predictions."""
    from harvest.service.predictlog import PREFIX

    return sorted(t[len(PREFIX) :] for t in lake.tables() if t.startswith(PREFIX))


def profile_path(config: Config, model: str, version: int) -> Path:
    return Path(config.reports) / "monitoring" / model / f"profile-v{version}.json"


def make_profile(
    config: Config, store: Store, model: str, version: int, scorer: Scorer | None = None
) -> Profile:
    """The profile of ``model`` version ``version``: the one `harvest train` kept beside
    the model, else one built from the dataset version it was trained on; either kept
    beside the reports after."""
    from training import pyfunc
    from training.apart import run_apart
    from training.profile import FILE, from_dataset

    path = profile_path(config, model, version)
    kept = Profile.load(path)
    if kept is not None:
        return kept
    mv = registry.version(store, model, version)
    folder, tmp = registry.local_copy(store, mv)
    try:
        found = Profile.load(folder / FILE)
        if found is None:
            tags = mv.tags or {}
            dataset, cut = tags.get("harvest.dataset"), tags.get("harvest.dataset_version")
            if not dataset:
                raise MonitorError(
                    f"{model} version {version} records no dataset it was trained on (only "
                    "models `harvest train` registers have one): its inputs cannot be compared"
                )
            # in a thread that ends: the service's threads that live on never touch torch
            found = run_apart(
                lambda: from_dataset(
                    Lake(config.lake),
                    dataset,
                    int(cut) if cut else None,
                    scorer or pyfunc.load(folder),
                ),
                "profile",
            )
    finally:
        if tmp is not None:
            tmp.cleanup()
    found.save(path)
    return found


class Profiles:
    """Profiles by (model, version) for the prediction log; one that cannot be made is
    logged once and left out (its rows are logged without features)."""

    def __init__(self, config: Config, store: Store):
        self.config, self.store = config, store
        self._held: dict[tuple[str, int], Profile | None] = {}
        self._lock = threading.Lock()

    def get(self, model: str, version: int, scorer: Scorer) -> Profile | None:
        key = (model, version)
        with self._lock:
            if key in self._held:
                return self._held[key]
        try:
            found: Profile | None = make_profile(self.config, self.store, model, version, scorer)
        except Exception as exc:  # the log goes on without features; `harvest monitor` says why
            log.warning("no drift features for %s version %s: %s", model, version, exc)
            found = None
        with self._lock:
            self._held[key] = found
        return found


@dataclass
class Window:
    start: datetime
    end: datetime
    rows: int
    model_version: int
    fields: list[FieldDrift]

    @property
    def drifted(self) -> list[str]:
        return [f.field for f in self.fields if f.drifted]

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "rows": self.rows,
            "model_version": self.model_version,
            "drifted": self.drifted,
            "features": {
                f.field: {"statistic": f.statistic, "pvalue": f.pvalue, "drifted": f.drifted}
                for f in self.fields
            },
        }


def check(
    config: Config,
    store: Store,
    model: str,
    spec: MonitorSpec | None = None,
    stop: threading.Event | None = None,
) -> list[Window]:
    """Compares every whole window of predictions logged since the last check, or those
    before ``stop`` is set; the windows compared, oldest first, committed together to
    ``monitoring/<model>``."""
    from harvest.service.predictlog import table_of as predictions_of
    from ingestion.locks import SourceLock

    spec = spec or MonitorSpec()
    lake = Lake(config.lake)
    if not lake.exists(predictions_of(model)):
        raise NotFoundError(
            f"no predictions of {model} logged in {lake.root}: `harvest serve` logs them "
            "as POST /predict answers"
        )
    with SourceLock(config.lake, STAGE, model):
        rows = _since(lake, model, _watermark(lake, model))
        done = []
        for part in _cut(rows, spec.window):
            if stop is not None and stop.is_set():
                break
            done.append(_compare(config, store, model, part, spec))
        if done:
            lake.append(table_of(model), pa.concat_tables([_rows_of(w) for w in done]))
        return done


def status(lake: Lake, model: str) -> dict[str, Any] | None:
    """The last window checked: when, how many windows so far, what drifted; None when
    the model was never checked."""
    if not lake.exists(table_of(model)):
        return None
    t = lake.read(table_of(model))
    if t.num_rows == 0:
        return None
    end = pc.max(t["window_end"])
    last = t.filter(pc.equal(t["window_end"], end)).to_pylist()
    return {
        "windows": len(pc.unique(t["window_end"])),
        "last_window_end": end.as_py().isoformat(),
        "rows": last[0]["rows"],
        "model_version": last[0]["model_version"],
        "drifted": any(r["drifted"] for r in last),
        "drifted_features": sorted(r["feature"] for r in last if r["drifted"]),
    }


def history(lake: Lake, model: str, last: int = 30) -> list[dict[str, Any]]:
    """The last ``last`` windows, oldest first: when each ended, its rows, and per feature
    its statistic and whether it drifted."""
    if not lake.exists(table_of(model)):
        return []
    windows: dict[Any, dict[str, Any]] = {}
    for r in lake.read(table_of(model)).sort_by("window_end").to_pylist():
        w = windows.setdefault(
            r["window_end"],
            {"end": r["window_end"].isoformat(), "rows": r["rows"], "version": r["model_version"]},
        )
        w.setdefault("statistic", {})[r["feature"]] = r["statistic"]
        w.setdefault("drifted", [])
        if r["drifted"]:
            w["drifted"].append(r["feature"])
    return list(windows.values())[-last:]


def _watermark(lake: Lake, model: str) -> datetime | None:
    if not lake.exists(table_of(model)):
        return None
    ends = lake.read(table_of(model), columns=["window_end"])["window_end"]
    return None if len(ends) == 0 else pc.max(ends).as_py()


def _since(lake: Lake, model: str, after: datetime | None) -> pa.Table:
    import pyarrow.dataset as ds

    from harvest.service.predictlog import table_of as predictions_of

    table = predictions_of(model)
    columns = ["at", "label", "model_version", *FEATURES]
    data = lake.dataset(table)
    present = [c for c in columns if c in data.schema.names]  # logs made before features
    with lake.readable(table):
        rows = data.to_table(
            columns=present, filter=None if after is None else ds.field("at") > after
        )
    for name in columns:
        if name not in rows.column_names:
            rows = rows.append_column(name, pa.nulls(rows.num_rows, pa.float64()))
    return rows.sort_by("at")


def _cut(rows: pa.Table, size: int) -> list[pa.Table]:
    """Whole windows of ``size`` rows; one ends only where the time changes, so the rows
    of one answer are never split between windows."""
    at = rows["at"].to_pylist()
    out, start = [], 0
    while len(at) - start >= size:
        end = start + size
        while end < len(at) and at[end] == at[end - 1]:
            end += 1
        out.append(rows.slice(start, end - start))
        start = end
    return out


def _compare(config: Config, store: Store, model: str, rows: pa.Table, spec: MonitorSpec) -> Window:
    versions = Counter(rows["model_version"].to_pylist())
    version = int(versions.most_common(1)[0][0])
    profile = make_profile(config, store, model, version)
    fields = []
    for name in FEATURES:
        live = rows[name].drop_null().to_numpy().astype(np.float64)
        fields.append(
            numbers(name, "number", profile.reference[name], live, spec.alpha, spec.min_effect)
        )
    held = [label for label, n in profile.predicted_mix.items() for _ in range(n)]
    live = [str(x) for x in rows["label"].to_pylist()]
    mix = categories(CLASS_MIX, held, live, spec.alpha, spec.min_effect)
    mix.details["training_labels"] = profile.label_mix
    fields.append(mix)
    return Window(rows["at"][0].as_py(), rows["at"][-1].as_py(), rows.num_rows, version, fields)


def _rows_of(window: Window) -> pa.Table:
    now = datetime.now(UTC)
    rows = []
    for f in window.fields:
        means = f.details.get("mean") or [None, None]
        rows.append(
            {
                "window_start": window.start,
                "window_end": window.end,
                "rows": window.rows,
                "model_version": window.model_version,
                "feature": f.field,
                "test": f.test,
                "statistic": f.statistic,
                "pvalue": f.pvalue,
                "drifted": f.drifted,
                "live_mean": means[1],
                "reference_mean": means[0],
                "checked_at": now,
            }
        )
    return pa.Table.from_pylist(rows, schema=SCHEMA)
