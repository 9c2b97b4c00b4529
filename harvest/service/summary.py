"""What the dashboard and ``harvest status`` show: one JSON-serialisable dict.

Each part comes from where it is kept: sources from the recipes and the lake, runs from the
service's run history, validation pass rates from the gate's curate runs in the lake's
``runs`` table, labelling progress from ``labels/<source>``, model metrics from the MLflow
registry, damage to the lake's tables from ``ingestion.check`` (the cheap checks: data
files gone, curate watermarks). A part with nothing to show yet is empty (or carries a
``note``); a part that cannot be read carries an ``error`` instead of failing the whole
summary.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol

from harvest.config import Config
from ingestion.lake import Lake
from ingestion.runs import ACTIVE

RECENT_RUNS = 20
# learning curves drawn on the dashboard, when the run logged them per epoch
CURVES = ("train_loss", "val_loss", "val_macro_f1")
# headline metrics of a model version, in the order shown; the rest stay in the JSON
HEADLINE = (
    "test_macro_f1",
    "test_accuracy",
    "best_val_macro_f1",
    "test_log_loss",
    "test_ece",
    "baseline_test_macro_f1",
    "cv_macro_f1",
    "accuracy",
    "macro_f1",
)


class RunHistory(Protocol):
    def list(
        self, limit: int = 50, source: str | None = None, status: str | None = None
    ) -> list[dict[str, Any]]: ...


def build(
    config: Config,
    store: RunHistory | None = None,
    next_runs: Mapping[str, Any] | None = None,
    sources: Iterable[str] | None = None,
) -> dict[str, Any]:
    """The summary; ``next_runs`` maps a source to its next scheduled run (None: worked out
    from each recipe's schedule); ``sources`` keeps only those."""
    lake = Lake(config.lake)
    recipes = _recipes(config)
    names = sorted(set(recipes) | _lake_sources(lake)) if sources is None else list(sources)
    runs, runs_error = _runs(store)
    health = lake_health(lake, None if sources is None else names)
    entries = [_source(lake, name, recipes.get(name), store, next_runs) for name in names]
    for entry in entries:
        entry["damage"] = [
            p for p in health["problems"] if _source_of(p["table"]) == entry["source"]
        ]
    summary: dict[str, Any] = {
        "generated_at": datetime.now(UTC),
        "lake": config.lake,
        "lake_check": health,
        "sources": entries,
        "runs": runs,
        "running": [r for r in runs if r.get("status") in ACTIVE],
        "history": "recorded" if store is not None else "no run history (the service keeps it)",
        "models": models(config),
        "monitoring": monitoring(lake),
        "links": links(config),
    }
    if runs_error:
        summary["runs_error"] = runs_error
    out: dict[str, Any] = jsonable(summary)
    return out


# -- sources -------------------------------------------------------------------------------


def _recipes(config: Config) -> dict[str, Any]:
    """Recipe file stem -> the parsed recipe, or the error text of one that does not parse."""
    from harvest.recipe import RecipeError, list_recipes, load_recipe

    out: dict[str, Any] = {}
    for path in list_recipes(config.sources):
        try:
            out[path.stem] = load_recipe(path)
        except (RecipeError, OSError) as exc:
            out[path.stem] = str(exc)
    return out


def _lake_sources(lake: Lake) -> set[str]:
    try:
        return {t.split("/", 1)[1] for t in lake.tables() if t.startswith("raw/")}
    except Exception:  # a lake not created yet, or unreadable: no sources from it
        return set()


def _source(
    lake: Lake,
    name: str,
    recipe: Any,
    store: RunHistory | None,
    next_runs: Mapping[str, Any] | None,
) -> dict[str, Any]:
    from validation.status import source_status

    parsed = recipe if recipe is not None and not isinstance(recipe, str) else None
    schedule = _schedule(getattr(parsed, "schedule", None))
    entry: dict[str, Any] = {
        "source": name,
        "recipe": recipe is not None,
        "recipe_error": recipe if isinstance(recipe, str) else None,
        "schedule": schedule,
        "next_run": None,
        "next_run_from": None,
        "last_run": None,
    }
    if next_runs is not None:
        entry["next_run"] = next_runs.get(name)
        entry["next_run_from"] = "scheduler" if entry["next_run"] is not None else None
    elif schedule:
        entry["next_run"] = next_fire(schedule)
        entry["next_run_from"] = "schedule" if entry["next_run"] is not None else None
    if store is not None:
        try:
            last = store.list(limit=1, source=name)
            entry["last_run"] = _brief(last[0]) if last else None
        except Exception as exc:
            entry["last_run_error"] = _text(exc)
    try:
        entry.update(source_status(lake, name))
    except Exception as exc:
        entry["status_error"] = _text(exc)
    entry["pass_rates"] = _guard(lambda: pass_rates(lake, name), [])
    entry["labelling"] = _guard(lambda: labelling(lake, name, parsed), None)
    return entry


def next_fire(schedule: Any, now: datetime | None = None) -> datetime | None:
    """The next time a recipe's schedule fires (a ``harvest.recipe.Schedule`` or its JSON);
    None when it cannot be read."""
    from zoneinfo import ZoneInfo

    from spiders.schedule import cron_fields

    if isinstance(schedule, Mapping):
        cron, zone = schedule.get("cron"), schedule.get("timezone") or "UTC"
    else:
        cron, zone = getattr(schedule, "cron", None), getattr(schedule, "timezone", "UTC")
    if not isinstance(cron, str):
        return None
    try:
        from apscheduler.triggers.cron import CronTrigger

        # crontab's weekday numbers, as the scheduler reads them (spiders.schedule)
        trigger = CronTrigger(**cron_fields(cron), timezone=ZoneInfo(zone))
        fire: datetime | None = trigger.get_next_fire_time(None, now or datetime.now(UTC))
        return fire
    except Exception:  # a bad expression is the recipe's problem, reported where it loads
        return None


def _schedule(schedule: Any) -> Any:
    if schedule is None:
        return None
    as_json = getattr(schedule, "as_json", None)
    return as_json() if callable(as_json) else schedule


def known_sources(config: Config) -> list[str]:
    """Every source with a recipe or a raw table in the lake."""
    from harvest.recipe import list_recipes

    names = {p.stem for p in list_recipes(config.sources)}
    return sorted(names | _lake_sources(Lake(config.lake)))


def run_history(config: Config) -> RunHistory | None:
    """The service's run history where ``harvest serve`` keeps it; None when no service has
    run beside this lake, or its history cannot be opened."""
    from harvest.service.runs import open_history

    try:
        return open_history(config)
    except Exception:  # status still reports the lake
        return None


def _brief(run: Mapping[str, Any]) -> dict[str, Any]:
    keep = ("id", "trigger", "status", "started_at", "ended_at", "counts", "error")
    return {k: run.get(k) for k in keep}


def _runs(store: RunHistory | None) -> tuple[list[dict[str, Any]], str | None]:
    if store is None:
        return [], None
    try:
        return [dict(r) for r in store.list(limit=RECENT_RUNS)], None
    except Exception as exc:
        return [], _text(exc)


# -- lake damage ---------------------------------------------------------------------------


def lake_health(lake: Lake, sources: list[str] | None = None) -> dict[str, Any]:
    """Damage to the tables of ``sources`` (None: every table): ``healthy`` (None when the
    lake cannot be listed), the tables checked and one entry per problem. Duplicate keys
    are left to ``harvest lake check``: finding them reads every row."""
    from ingestion.check import as_json, check_lake

    try:
        tables = lake.tables()
    except Exception as exc:  # an object store that cannot be listed
        return {"healthy": None, "tables": 0, "problems": [], "error": _text(exc)}
    if sources is not None:
        tables = [t for t in tables if _source_of(t) in sources]
    result = check_lake(lake, tables, keys=False)
    problems = [as_json(p) for p in result.problems]
    return {"healthy": not result.damaged, "tables": len(tables), "problems": problems}


def damaged(summary: Mapping[str, Any]) -> bool:
    return (summary.get("lake_check") or {}).get("healthy") is False


def _source_of(table: str) -> str | None:
    _, _, source = table.partition("/")
    return source or None


# -- validation ----------------------------------------------------------------------------


def pass_rates(lake: Lake, source: str) -> list[dict[str, Any]]:
    """Per curate run of ``source``, oldest first: the share of rows the gate let through."""
    from ingestion.runs import CURATE_STAGE, runs_of

    out = []
    for run in runs_of(lake, CURATE_STAGE, source):
        curated, quarantined = int(run.get("curated") or 0), int(run.get("quarantined") or 0)
        seen = curated + quarantined
        out.append(
            {
                "at": run["at"],
                "curated": curated,
                "quarantined": quarantined,
                "rate": round(curated / seen, 4) if seen else None,
                "batch_status": run.get("batch_status"),
            }
        )
    return out


# -- labelling -----------------------------------------------------------------------------


def labelling(lake: Lake, source: str, recipe: Any = None) -> dict[str, Any] | None:
    """How far labelling of ``source`` has come, per class; None before any label."""
    from labeling.progress import read_progress

    if not lake.exists(f"labels/{source}"):
        return None
    classes = list(getattr(recipe, "labels", []) or [])
    return read_progress(lake, source, getattr(recipe, "label_type", "single"), classes)


# -- models --------------------------------------------------------------------------------

_MODELS_CACHE: dict[str, tuple[Any, dict[str, Any]]] = {}
_MODELS_LOCK = threading.Lock()


def links(config: Config) -> dict[str, str | None]:
    """Where the dashboard sends people: Label Studio, and the MLflow UI (``mlflow_url``, or
    the tracking URI when it is a server's; a SQLite store has no UI to link to)."""
    from training.tracking import safe_uri

    tracking = safe_uri(config.tracking)
    web = tracking if tracking.startswith(("http://", "https://")) else None
    return {"label_studio": config.studio_url, "mlflow": config.mlflow_url or web}


def models(config: Config) -> dict[str, Any]:
    """Each registered model's champion (else its latest version): metrics, confusion
    matrix and learning curves. Kept while the SQLite store is unchanged: the dashboard asks
    every few seconds and MLflow answers in tenths of a second."""
    from training.tracking import Store, safe_uri, sqlite_path

    uri = config.tracking
    out: dict[str, Any] = {"tracking_uri": safe_uri(uri), "models": [], "note": None}
    path = sqlite_path(uri)
    if path is not None and not path.exists():
        out["note"] = "no MLflow store yet: no model trained"
        return out
    stamp = _stamp(path)
    with _MODELS_LOCK:
        cached = _MODELS_CACHE.get(uri)
        if stamp is not None and cached and cached[0] == stamp:
            return cached[1]
        try:
            store = Store(uri)
            found = [_model(store, m) for m in _registered(store)]
            out["models"] = found
            if not found:
                out["note"] = "no registered model yet"
        except Exception as exc:
            out["note"] = f"MLflow cannot be read: {_text(exc)}"
            out["error"] = True
        out = jsonable(out)
        if stamp is not None:
            _MODELS_CACHE[uri] = (stamp, out)
    return out


def monitoring(lake: Lake) -> list[dict[str, Any]]:
    """Each model with logged predictions: its drift status and its recent windows."""
    from harvest.monitor import history, monitored, status

    out = []
    for model in monitored(lake):
        try:
            out.append(
                {"model": model, "status": status(lake, model), "history": history(lake, model)}
            )
        except Exception as exc:  # one unreadable table never hides the rest
            out.append({"model": model, "error": _text(exc)})
    return out


def _stamp(path: Path | None) -> tuple[float, int] | None:
    if path is None:
        return None
    try:
        # SQLite in WAL mode writes to a file beside the database first
        files = [path, path.with_name(path.name + "-wal")]
        return max(p.stat().st_mtime for p in files if p.exists()), path.stat().st_size
    except OSError:
        return None


def _registered(store: Any) -> list[Any]:
    return sorted(store.client.search_registered_models(), key=lambda m: m.name)


def _model(store: Any, registered: Any) -> dict[str, Any]:
    from training import registry

    name = registered.name
    mv = registry.find(store, name, registry.CHAMPION)
    chosen = "champion"
    if mv is None:
        every = registry.versions(store, name)
        if not every:
            return {"model": name, "version": None, "note": "no version yet"}
        mv, chosen = every[-1], "latest"
    info = registry.describe(store, mv)
    metrics = info.get("metrics") or {}
    out: dict[str, Any] = {
        "model": name,
        "version": info["version"],
        "shown": chosen,
        "aliases": {a: int(v) for a, v in sorted(registered.aliases.items())},
        "created": info["created"],
        "run_id": info["run_id"],
        "dataset": info["dataset"],
        "dataset_version": info["dataset_version"],
        "headline": {k: metrics[k] for k in HEADLINE if k in metrics},
        "metrics": metrics,
        "curves": {},
        "confusion": None,
    }
    if mv.run_id:
        out["curves"] = _curves(store, mv.run_id)
        report = _report(store, mv.run_id)
        test = (report or {}).get("test") or {}
        if test.get("confusion") is not None:
            out["confusion"] = {"classes": test.get("classes"), "matrix": test["confusion"]}
        if not out["curves"] and report and report.get("history"):
            history = report["history"]
            out["curves"] = {
                k: [
                    {"step": int(h.get("epoch", i)), "value": h[k]}
                    for i, h in enumerate(history, 1)
                ]
                for k in CURVES
                if all(k in h for h in history)
            }
    return out


def _curves(store: Any, run_id: str) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for key in CURVES:
        points = store.client.get_metric_history(run_id, key)
        if points:
            out[key] = [
                {"step": p.step, "value": p.value} for p in sorted(points, key=lambda p: p.step)
            ]
    return out


def _report(store: Any, run_id: str) -> dict[str, Any] | None:
    """The training report's figures (``report/metrics.json``), None when the run has none."""
    import tempfile

    try:
        with tempfile.TemporaryDirectory(prefix="harvest-summary-") as tmp:
            got = store.client.download_artifacts(run_id, "report/metrics.json", tmp)
            data = json.loads(Path(got).read_text())
    except Exception:  # a labelling model logs no report
        return None
    return data if isinstance(data, dict) else None


# -- shared --------------------------------------------------------------------------------


def _guard(fn: Any, empty: Any) -> Any:
    try:
        return fn()
    except Exception as exc:
        return {"error": _text(exc)} if empty is None else [{"error": _text(exc)}]


def _text(exc: BaseException) -> str:
    line = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {line[0] if line else ''}".rstrip(": ")


def jsonable(value: Any) -> Any:
    """``value`` with times as ISO strings, paths as text and NaN as None, so any JSON
    encoder takes it."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item"):  # numpy scalars
        return jsonable(value.item())
    if isinstance(value, Path):
        return str(value)
    return str(value)


# -- for a person --------------------------------------------------------------------------


def describe(summary: Mapping[str, Any]) -> list[str]:
    """The summary as lines for a terminal."""
    from validation.status import describe as describe_source

    lines: list[str] = []
    health = summary.get("lake_check") or {}
    lines += [f"lake: {p['text']}" for p in health.get("problems") or []]
    if health.get("error"):
        lines.append(f"lake: cannot be checked: {health['error']}")
    for s in summary.get("sources", []):
        if "status_error" in s:
            lines.append(f"{s['source']}: cannot read its status: {s['status_error']}")
        else:
            lines += describe_source(s)
        if s.get("schedule"):
            when = s.get("next_run") or "unknown"
            lines.append(f"  schedule: {schedule_text(s['schedule'])}, next run {when}")
        run = s.get("last_run")
        if run:
            lines.append(
                f"  last run: {run.get('id')} {run.get('status')} at {run.get('started_at')}"
            )
        rates = [p for p in s.get("pass_rates") or [] if p.get("rate") is not None]
        if rates:
            shown = ", ".join(f"{p['rate']:.0%}" for p in rates[-5:])
            lines.append(f"  pass rate, last {min(len(rates), 5)} curate runs: {shown}")
        lab = s.get("labelling")
        if isinstance(lab, Mapping) and "labelled" in lab:
            classes = ", ".join(f"{c} {n}" for c, n in (lab.get("classes") or {}).items())
            lines.append(
                f"  labelled: {lab['labelled']} of {lab.get('curated')} curated ({classes})"
            )
    runs = summary.get("runs") or []
    if runs:
        lines.append("recent runs:")
        for r in runs[:10]:
            counts = r.get("counts") or {}
            shown = " ".join(f"{k} {v}" for k, v in counts.items() if v is not None)
            what = f"{r.get('id')} {r.get('source')} {r.get('status')} {r.get('started_at')}"
            lines.append(f"  {what} {shown}".rstrip())
    m = summary.get("models") or {}
    for model in m.get("models") or []:
        head = ", ".join(f"{k} {v:.3f}" for k, v in (model.get("headline") or {}).items())
        which = f"model {model['model']} v{model.get('version')} ({model.get('shown')})"
        lines.append(f"{which}: {head or 'no metrics'}")
    if m.get("note"):
        lines.append(f"models: {m['note']}")
    for watched in summary.get("monitoring") or []:
        st = watched.get("status")
        if watched.get("error"):
            lines.append(f"monitoring {watched['model']}: {watched['error']}")
        elif st is None:
            lines.append(f"monitoring {watched['model']}: predictions logged, no window checked")
        else:
            said = f"DRIFTED ({', '.join(st['drifted_features'])})" if st["drifted"] else "steady"
            lines.append(
                f"monitoring {watched['model']}: {said} in the window of {st['rows']} "
                f"predictions to {st['last_window_end']} ({st['windows']} windows)"
            )
    return lines


def schedule_text(schedule: Any) -> str:
    """``cron (time zone)`` and what follows the crawl."""
    if not schedule:
        return ""
    if not isinstance(schedule, Mapping):
        return str(schedule)
    text = f"{schedule.get('cron')} ({schedule.get('timezone') or 'UTC'})"
    label = schedule.get("label")
    if isinstance(label, Mapping) and label.get("push"):
        text += f", push {label['push']} to label"
    if schedule.get("retrain"):
        text += ", retrain"
    return text
