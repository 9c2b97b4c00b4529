"""`harvest tune`: an Optuna study on a real SQLite store beside MLflow's, its trials
nested MLflow runs, resumed after a stop, and the best configuration registered."""

from __future__ import annotations

from pathlib import Path

import optuna
from mlflow import MlflowClient

from harvest.config import Config
from tests.helpers import last_json, run_harvest
from tests.test_tracking import env_of, labelled_lake
from training import registry, select, tune
from training.tracking import Store


def test_a_search_starts_from_the_defaults_resumes_and_registers_the_best(
    tmp_path: Path,
) -> None:
    cfg = Config(lake=str(tmp_path / "lake"), reports=str(tmp_path / "reports"))
    labelled_lake(cfg, "demo", 120)
    env = env_of(cfg)
    argv = ["tune", "--source", "demo", "--trials", "6", "--epochs", "3"]
    out = last_json(run_harvest(argv, env).stdout)
    assert sum(out["trials"].values()) == 6  # type: ignore[union-attr]
    best, defaults = out["best"], out["defaults_best_val_macro_f1"]
    assert best["val_macro_f1"] >= defaults  # type: ignore[index,operator]
    # the search's best is trained only when it leads the defaults beyond the noise
    lead = best["val_macro_f1"] - defaults  # type: ignore[index,operator]
    assert out["adopted"] is (lead > out["margin"]) and 0 < out["margin"] < 0.2  # type: ignore[operator]
    trained_model = out["config"]["model"]  # type: ignore[index]
    assert trained_model == (best["model"] if out["adopted"] else "auto")  # type: ignore[index]
    # the candidates' defaults were the first trials
    storage = tune.storage_url(Store(cfg.tracking), cfg.reports)
    study = optuna.load_study(study_name=str(out["study"]), storage=storage)
    names = [c.name for c in select.candidates("cpu")]
    assert [t.params for t in study.trials[: len(names)]] == [{"model": n} for n in names]
    # every trial is an MLflow run under the search's
    client = MlflowClient(cfg.tracking, cfg.tracking)
    experiment = client.get_experiment_by_name("harvest-demo")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [
        r
        for r in runs
        if r.data.tags.get("harvest.kind") == "tuning" and "mlflow.parentRunId" not in r.data.tags
    ]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 6
    # the best configuration trained and registered as harvest train would
    version = registry.version(
        Store(cfg.tracking), "harvest-demo", int(out["mlflow"]["model_version"])
    )  # type: ignore[index]
    assert version.tags["harvest.dataset_version"] == str(out["dataset_version"])

    # a stop leaves a trial running: the next run fails it and goes on to the count asked
    study.ask()
    argv = ["tune", "--dataset", "demo", "--version", str(out["dataset_version"])]
    again = last_json(run_harvest([*argv, "--trials", "8", "--epochs", "3"], env).stdout)
    assert again["study"] == out["study"]
    counts = again["trials"]
    assert counts.get("fail") == 1  # type: ignore[union-attr]
    assert counts.get("complete", 0) + counts.get("pruned", 0) == 8  # type: ignore[union-attr]
