"""`--model auto`: every candidate fitted on the same rows, the best on validation
registered, on a real lake and MLflow store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harvest.config import Config
from ingestion.datasets import cut_dataset
from tests.helpers import last_json, run_harvest
from tests.test_tracking import env_of, labelled_lake
from tests.test_training import lake_with_labels
from training import pyfunc, registry, select
from training.run import train_and_evaluate
from training.tracking import Store
from training.trainer import TrainConfig


@pytest.mark.parametrize("cv_rows", [select.CV_ROWS, 0])
def test_auto_keeps_the_best_candidate_on_what_it_chooses_by(
    tmp_path: Path, cv_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 160 labels: cross-validated; with no room for it, the validation split decides
    monkeypatch.setattr(select, "CV_ROWS", cv_rows)
    lake = lake_with_labels(tmp_path, 160)
    version = cut_dataset(lake, "d", "s", "labels/s", "body", seed=0)
    config = TrainConfig(epochs=4, device="cpu", progress=False)
    result = train_and_evaluate(lake, "d", version.version, tmp_path / "reports", config)
    rows = result.candidates
    assert rows is not None
    assert [r["model"] for r in rows] == [c.name for c in select.candidates("cpu")]
    by = "5-fold cross-validation" if cv_rows else "the half of validation that did not stop"
    assert all(r["selected_by"].startswith(by) for r in rows)
    if cv_rows:
        assert all(r["score"] == r["cv_macro_f1"] for r in rows)
    (chosen,) = [r for r in rows if r["chosen"]]
    best = next(r for r in rows if r["score"] == max(r["score"] for r in rows))
    if cv_rows:  # the most preferred of the near-ties, never by the test figures
        near = [
            r["model"]
            for r in rows
            if select.shortfall(best["cv_macro_f1_folds"], r["cv_macro_f1_folds"]) <= 0
        ]
        assert chosen["model"] in near
        order = [m for m in select.PREFERENCE if m in near]
        assert all(
            r["score"] < baseline_score(rows)
            for r in rows
            if r["model"] in order[: order.index(chosen["model"])]
        )
    else:  # the first of the best: the cheaper on a tie
        assert chosen == best
    assert result.model == chosen["model"]
    assert result.best_val_macro_f1 == chosen["val_macro_f1"]
    assert result.test["macro_f1"] == pytest.approx(chosen["test_macro_f1"])
    low, high = result.intervals["model"]["macro_f1"]
    assert low <= result.test["macro_f1"] <= high
    assert set(result.intervals) >= {"baseline", "difference"}
    assert chosen["score"] >= baseline_score(rows)
    # every candidate's figures are in the report
    page = (Path(result.report_dir) / "report.html").read_text()
    assert all(r["model"] in page for r in rows) and "chosen on validation" in page


def baseline_score(rows: list[dict[str, Any]]) -> float:
    return float(next(r["score"] for r in rows if r["model"] == select.BASELINE))


def test_a_near_tie_goes_to_the_steadier_learner_and_a_clear_lead_wins() -> None:
    scores = {"tfidf-logreg": 0.70, "ngram": 0.74, "tfidf-minilm-logreg": 0.80, "embedding": 0.82}
    noisy = {
        "tfidf-logreg": [0.70, 0.68, 0.72, 0.71, 0.69],
        "ngram": [0.74, 0.73, 0.75, 0.74, 0.74],
        "tfidf-minilm-logreg": [0.86, 0.74, 0.83, 0.77, 0.80],
        "embedding": [0.80, 0.85, 0.78, 0.86, 0.81],
    }
    # embedding leads by 0.02 on average, but one fold in two goes the other way
    assert select.choose(scores, noisy) == "tfidf-minilm-logreg"
    steady = {**noisy, "embedding": [0.88, 0.78, 0.87, 0.81, 0.86]}  # 0.04 ahead, each fold
    assert select.choose({**scores, "embedding": 0.84}, steady) == "embedding"
    # without scores by fold (no cross-validation) the higher score wins
    assert select.choose(scores, {}) == "embedding"
    # a near-tie below the baseline's score is passed over
    low = {"tfidf-logreg": 0.80, "tfidf-minilm-logreg": 0.79, "embedding": 0.81}
    folds = {
        "tfidf-logreg": [0.80, 0.78, 0.82, 0.80, 0.80],
        "tfidf-minilm-logreg": [0.86, 0.72, 0.84, 0.73, 0.80],
        "embedding": [0.81, 0.80, 0.82, 0.81, 0.81],
    }
    assert select.shortfall(folds["embedding"], folds["tfidf-minilm-logreg"]) <= 0
    assert select.choose(low, folds) == "embedding"


@pytest.mark.parametrize("model", ["tfidf-logreg", "tfidf-minilm-logreg"])
def test_a_linear_model_is_registered_and_served_like_the_others(
    tmp_path: Path, model: str
) -> None:
    cfg = Config(lake=str(tmp_path / "lake"), reports=str(tmp_path / "reports"))
    labelled_lake(cfg, "demo", 120)
    argv = ["train", "--source", "demo", "--model", model]
    out = last_json(run_harvest(argv, env_of(cfg)).stdout)
    assert out["model"] == model and out["candidates"] is None
    store = Store(cfg.tracking)
    mv = registry.version(store, "harvest-demo", 1)
    folder, _ = registry.local_copy(store, mv)
    scorer = pyfunc.load(folder)
    texts = ["The council voted on the budget.", "The striker scored twice."]
    scored = scorer.predict(texts)
    assert set(scored["label"]) <= set(scorer.classes) and len(scored) == 2
    # the registered model is the one the run scored its test split with
    metrics = json.loads((Path(str(out["report_dir"])) / "metrics.json").read_text())
    assert metrics["test"]["n"] == out["rows"]["test"]  # type: ignore[index]
    assert (folder / "profile.json").exists()  # drift monitoring's reference, kept beside it


def test_train_on_a_named_dataset_version_cuts_none(tmp_path: Path) -> None:
    cfg = Config(lake=str(tmp_path / "lake"), reports=str(tmp_path / "reports"))
    labelled_lake(cfg, "demo", 120)
    env = env_of(cfg)
    first = last_json(run_harvest(["train", "--source", "demo", "--model", "ngram"], env).stdout)
    argv = ["train", "--dataset", "demo", "--version", str(first["dataset_version"])]
    again = last_json(run_harvest([*argv, "--model", "tfidf-logreg"], env).stdout)
    assert again["dataset_version"] == first["dataset_version"]
    assert again["rows"] == first["rows"]
    missing = run_harvest(["train", "--dataset", "demo", "--version", "9"], env, check=False)
    assert missing.returncode != 0 and "has no version 9" in missing.stderr
    alone = run_harvest(["train", "--version", "0"], env, check=False)
    assert alone.returncode == 2 and "--version needs --dataset" in alone.stderr


def test_the_default_train_records_every_candidate_and_serves_the_winner(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    cfg = Config(lake=str(tmp_path / "lake"), reports=str(tmp_path / "reports"))
    labelled_lake(cfg, "demo", 120)
    out = last_json(run_harvest(["train", "--source", "demo", "--epochs", "3"], env_of(cfg)).stdout)
    rows = out["candidates"]
    assert isinstance(rows, list) and len(rows) == len(select.candidates("cpu"))
    client = MlflowClient(cfg.tracking, cfg.tracking)
    run = client.get_run(str(out["mlflow"]["run_id"]))  # type: ignore[index]
    for row in rows:
        recorded = run.data.metrics[f"candidate.{row['model']}.val_macro_f1"]
        assert recorded == pytest.approx(row["val_macro_f1"])
    # the winner's epochs under the plain names, one value an epoch
    steps = client.get_metric_history(run.info.run_id, "val_macro_f1")
    assert len(steps) == out["epochs_run"]
    store = Store(cfg.tracking)
    folder, _ = registry.local_copy(store, registry.version(store, "harvest-demo", 1))
    scored = pyfunc.load(folder).predict(["Shares fell sharply on Monday."])
    assert scored["label"].iloc[0] in pyfunc.load(folder).classes
