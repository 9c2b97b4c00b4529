"""``harvest tune``: a hyperparameter search on one dataset version, then the best
configuration trained and registered like ``harvest train``.

Optuna's TPE sampler proposes; a median pruner stops a trial whose validation macro F1
after an epoch is below the median of earlier trials at that epoch. Each model declares
what is searched in its own module (``search_space``); with ``--model auto`` the model is
searched too, and every candidate's defaults are the first trials, so the search starts
from what ``harvest train`` would register. The best trial's configuration is trained
and registered only when its validation macro F1 beats the defaults' best by more than
one standard error on the validation rows: the best of twenty looks at a few hundred rows
is flattered by its luck, and a lead within that noise does not carry to new rows. Else
the defaults are (``harvest train``'s exact choice).

The study lives in SQLite beside the MLflow store (``optuna.db``), named after the
dataset version and the model, so a search killed part way resumes where it stopped: the
trials finished count, and the trial that was running is marked failed and not counted.
Each trial is an MLflow run nested under the search's run.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ingestion.datasets import read_dataset, split_rows
from ingestion.lake import Lake
from training import select, tracking
from training.trainer import TrainConfig, fit

if TYPE_CHECKING:
    from collections.abc import Callable

    from training.tracking import Store

log = logging.getLogger(__name__)
STUDY_FILE = "optuna.db"


def spaces() -> dict[str, Callable[[Any, str], dict[str, Any]]]:
    from training import embedding, linear, model

    return {
        "ngram": model.search_space,
        "embedding": embedding.search_space,
        linear.TFIDF: linear.search_space,
        linear.TFIDF_MINILM: linear.search_space,
    }


def storage_url(store: Store, report_root: str | Path) -> str:
    """SQLite beside the MLflow database, or in the reports for another tracking store."""
    db = tracking.sqlite_path(store.uri)
    folder = db.parent if db is not None else Path(report_root)
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / STUDY_FILE}"


def tune(
    store: Store,
    lake: Lake,
    dataset: str,
    version: int | None,
    report_root: str | Path,
    config: TrainConfig,
    trials: int = 20,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Searches, then trains the best configuration and registers it; the search's figures
    and the registered run's (``trained``)."""
    import optuna

    data, meta = read_dataset(lake, dataset, version)
    cut = int(meta["version"])

    train, val = split_rows(data, "train"), split_rows(data, "validation")
    classes = sorted(set(data["label"].to_pylist()))
    searched = spaces()
    names = (
        [c.name for c in select.candidates(config.device) if c.model in searched]
        if config.model == select.AUTO
        else [config.model]
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = f"{dataset}-v{cut}-{config.model}"
    study = optuna.create_study(
        study_name=name,
        storage=storage_url(store, report_root),
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=config.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=len(names), n_warmup_steps=1),
        load_if_exists=True,
    )
    _fail_leftovers(study)
    for n in names:  # the defaults first: the search can only improve on them
        study.enqueue_trial({"model": n}, skip_if_exists=True)
    done = [t for t in study.trials if t.state.is_finished() and t.state.name != "FAIL"]
    experiment = f"harvest-{dataset}"
    tags = {"harvest.dataset": dataset, "harvest.kind": "tuning", "harvest.study": name}
    started = time.monotonic()
    with tracking.run(store, experiment, f"tune-{name}", tags) as parent:
        parent.params({"trials": trials, "timeout": timeout, "model": config.model})

        def objective(trial: optuna.Trial) -> float:
            chosen = trial.suggest_categorical("model", names)
            # defaults: a trial the search enqueued names only the model
            fixed = trial.params.keys() == {"model"} and trial.number < len(names)
            params = {} if fixed else searched[chosen](trial, f"{chosen}.")
            own = replace(
                config,
                model=chosen,
                finetune=False if chosen == "embedding" else config.finetune,
                progress=False,
                checkpoint_dir=None,
                resume=False,
                stop_after=0,
                **params,
            )

            def report(row: dict[str, float]) -> None:
                trial.report(row["val_macro_f1"], int(row.get("epoch", 1)))
                if trial.should_prune():
                    raise optuna.TrialPruned()

            nested = {**tags, "mlflow.parentRunId": parent.run_id, "harvest.trial": trial.number}
            with tracking.run(store, experiment, f"{name}-trial-{trial.number}", nested) as r:
                r.params({"model": chosen, **params})
                result = fit(train, val, classes, own, report)
                r.metrics({"val_macro_f1": result.best_val_f1, "epochs_run": result.epochs_run})
            return float(result.best_val_f1)

        left = max(0, trials - len(done))
        if left:
            study.optimize(objective, n_trials=left, timeout=timeout, catch=())
        best = study.best_trial
        chosen = str(best.params["model"])
        prefix = f"{chosen}."
        params = {k[len(prefix) :]: v for k, v in best.params.items() if k.startswith(prefix)}
        parent.metrics({"best_val_macro_f1": float(best.value or 0.0)})
        parent.tags({"harvest.best_params": json.dumps({"model": chosen, **params})})
    defaults = [t for t in study.trials if t.number < len(names) and t.value is not None]
    default_best = max((float(t.value) for t in defaults if t.value is not None), default=None)
    margin = noise(default_best, len(val[0])) if default_best is not None else 0.0
    # a lead within the validation rows' noise is as likely luck: the defaults stay
    adopted = default_best is None or float(best.value or 0.0) - default_best > margin
    final = (
        replace(
            config,
            model=chosen,
            finetune=False if chosen == "embedding" else config.finetune,
            **params,
        )
        if adopted
        else config
    )
    trained = tracking.train_tracked(store, lake, dataset, cut, report_root, final)
    states = [t.state.name for t in study.trials]
    return {
        "study": name,
        "storage": storage_url(store, report_root),
        "trials": {s.lower(): states.count(s) for s in sorted(set(states))},
        "seconds": round(time.monotonic() - started, 1),
        "best": {"model": chosen, **params, "val_macro_f1": best.value, "trial": best.number},
        "defaults_best_val_macro_f1": default_best,
        "adopted": adopted,
        "margin": round(margin, 4),
        "config": asdict(final),
        "trained": trained,
    }


def noise(score: float, rows: int) -> float:
    """One standard error of a score near ``score`` measured on ``rows`` rows (as for a
    proportion): the lead a tuned configuration needs over the defaults to be adopted."""
    p = min(max(score, 0.0), 1.0)
    return float((p * (1 - p) / max(rows, 1)) ** 0.5)


def _fail_leftovers(study: Any) -> None:
    """Trials a killed search left running are failed, so that they count for nothing."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        log.info("trial %s was running when its search stopped: failed, not counted", t.number)
