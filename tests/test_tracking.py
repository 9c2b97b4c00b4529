"""Training runs in MLflow, the registry behind `harvest model`, and the labelling loop's
champion, on real SQLite stores in the test's folder."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from mlflow import MlflowClient

from harvest import stages
from harvest.config import Config
from harvest.demosite import generate
from harvest.recipe import Recipe, load_recipe
from ingestion.lake import Lake
from labeling import model
from labeling.server import LabelStudioServer
from tests.helpers import ROOT, free_port, last_json, run_harvest
from training import registry
from training.registry import RegistryError
from training.tracking import Store, TrackingError, log_model, safe_uri

slow = pytest.mark.slow


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """A lake in the test's folder; the default store goes beside it."""
    cfg = Config(lake=str(tmp_path / "lake"), reports=str(tmp_path / "reports"))
    assert cfg.tracking == f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    return cfg


def test_a_new_store_is_complete_and_keeps_its_artifacts_beside_it(tmp_path: Path) -> None:
    for name in ("one", "two"):  # the second, at least, starts from the cached empty store
        uri = f"sqlite:///{tmp_path / name / 'mlflow.db'}"
        client = Store(uri).client
        default = client.get_experiment("0")
        assert default.artifact_location == f"{(tmp_path / name / 'artifacts').as_uri()}/0"
        run = client.create_run("0")
        client.log_metric(run.info.run_id, "m", 1.0)
        assert MlflowClient(uri).get_run(run.info.run_id).data.metrics == {"m": 1.0}
        assert not list((tmp_path / name).glob(".mlflow.db.*"))


def env_of(cfg: Config) -> dict[str, str]:
    return {"HARVEST_LAKE": cfg.lake, "HARVEST_REPORTS": cfg.reports}


def labelled_lake(cfg: Config, source: str, n: int) -> list[str]:
    """curated/<source> and labels/<source> as the gate and a pull write them."""
    site = generate(n + 20, seed=5)
    arts = [a for a in site.articles if not a.planted][:n]
    lake = Lake(cfg.lake)
    ids = [f"h{i}" for i in range(n)]
    lake.append(
        f"curated/{source}",
        pa.table(
            {
                "content_sha256": ids,
                "dup_group": ids,
                "source": [source] * n,
                "url": [f"http://site/{i}" for i in range(n)],
                "body": [" ".join(a.paragraphs) for a in arts],
            }
        ),
    )
    labels = [a.label for a in arts]
    lake.overwrite(f"labels/{source}", pa.table({"row_id": ids, "label": labels}))
    return labels


def test_a_training_run_is_recorded_with_its_dataset_version(config: Config) -> None:
    labelled_lake(config, "demo", 120)
    env = env_of(config)
    argv = ["train", "--source", "demo", "--epochs", "2", "--model", "ngram"]
    out = last_json(run_harvest(argv, env).stdout)
    tracked = out["mlflow"]
    assert isinstance(tracked, dict)
    assert tracked["tracking_uri"] == config.tracking
    assert (tracked["model"], tracked["model_version"]) == ("harvest-demo", 1)
    client = MlflowClient(config.tracking, config.tracking)  # read back without harvest's code
    run = client.get_run(str(tracked["run_id"]))
    assert run.info.status == "FINISHED"
    experiment = client.get_experiment_by_name("harvest-demo")
    assert experiment is not None and run.info.experiment_id == experiment.experiment_id
    params = run.data.params
    assert (params["epochs"], params["seed"], params["device"]) == ("2", "0", "auto")
    assert params["device_used"] == out["device"] and params["model"]
    assert params["rows_test"] == str(out["rows"]["test"])  # type: ignore[index]
    tags = run.data.tags
    assert tags["harvest.dataset"] == "demo"
    assert tags["harvest.dataset_version"] == str(out["dataset_version"])
    assert json.loads(tags["harvest.lineage"]) == {"curated/demo": 0, "labels/demo": 0}
    assert run.inputs is not None
    (used,) = run.inputs.dataset_inputs
    assert used.dataset.name == f"demo-v{out['dataset_version']}"
    metrics = run.data.metrics
    assert metrics["test_macro_f1"] == pytest.approx(out["test_macro_f1"])
    assert metrics["test_accuracy"] == pytest.approx(out["test_accuracy"])
    steps = client.get_metric_history(run.info.run_id, "val_macro_f1")
    assert sorted(m.step for m in steps) == [1, 2]  # one value an epoch
    report = Path(str(out["report_dir"]))
    files = {f.path for f in client.list_artifacts(run.info.run_id, "report")}
    assert {"report/confusion.png", "report/metrics.json"} <= files
    stored = client.download_artifacts(run.info.run_id, "model/data/model.pt", str(report.parent))
    assert Path(stored).read_bytes() == (report / "model.pt").read_bytes()
    files = {f.path for f in client.list_artifacts(run.info.run_id, "model")}
    assert "model/MLmodel" in files  # an MLflow model, which the registry points at
    # artifacts live beside the store, not in the working folder
    assert (Path(config.lake).parent / "mlflow" / "artifacts" / "harvest-demo").is_dir()

    version = client.get_model_version_by_alias("harvest-demo", "challenger")
    assert (int(version.version), version.run_id) == (1, run.info.run_id)
    assert version.tags["harvest.dataset_version"] == str(out["dataset_version"])


def register_runs(store: Store, name: str, n: int) -> None:
    """``n`` versions of ``name``, each from its own run with a known metric."""
    for i in range(1, n + 1):

        def save(folder: Path, i: int = i) -> None:
            (folder / "model.txt").write_text(str(i))

        log_model(
            store,
            name,
            f"run-{i}",
            save,
            {"harvest.dataset": "d", "harvest.dataset_version": i - 1},
            {"epochs": i},
            {"test_macro_f1": i / 10},
        )


def test_promote_show_and_list_through_the_command_line(config: Config) -> None:
    store = Store(config.tracking)
    register_runs(store, "harvest-d", 2)
    env = env_of(config)
    # each new version takes the challenger alias from the one before
    aliases = store.client.get_registered_model("harvest-d").aliases
    assert {a: int(v) for a, v in aliases.items()} == {"challenger": 2}

    moved = last_json(run_harvest(["model", "promote", "harvest-d", "1"], env).stdout)
    assert moved == {
        "model": "harvest-d",
        "alias": "champion",
        "version": 1,
        "previous": None,
        "aliases": {"challenger": 2, "champion": 1},
    }
    shown = run_harvest(["model", "show", "harvest-d"], env)
    one = last_json(shown.stdout)
    assert (one["version"], one["dataset"], one["dataset_version"]) == (1, "d", 0)
    assert one["metrics"] == {"test_macro_f1": 0.1} and one["params"] == {"epochs": "1"}
    assert "harvest-d v1 (champion)" in shown.stderr and "dataset d v0" in shown.stderr

    moved = registry.promote(store, "harvest-d", 2)
    assert (moved["previous"], moved["aliases"]) == (1, {"champion": 2})  # no longer challenger
    two = registry.show(store, "harvest-d", 2)
    assert (two["aliases"], two["metrics"]) == (["champion"], {"test_macro_f1": 0.2})
    listed = run_harvest(["model", "list"], env)
    models = last_json(listed.stdout)["models"]
    assert isinstance(models, list)
    (entry,) = models
    assert entry["aliases"] == {"champion": 2}
    assert [(v["version"], v["aliases"]) for v in entry["versions"]] == [(1, []), (2, ["champion"])]
    assert "harvest-d: v1 d v0, v2 (champion) d v1" in listed.stderr
    back = registry.promote(store, "harvest-d", 1, "challenger")
    assert back["aliases"] == {"challenger": 1, "champion": 2}


def test_unknown_models_versions_and_aliases_are_clear_errors(config: Config) -> None:
    store = Store(config.tracking)
    register_runs(store, "harvest-d", 2)
    proc = run_harvest(["model", "show", "nope"], env_of(config), check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: no registered model 'nope' in sqlite:///")
    assert "(registered: harvest-d)" in proc.stderr and "Traceback" not in proc.stderr
    with pytest.raises(RegistryError, match=r"'harvest-d' has no version 7 \(versions: 1, 2\)"):
        registry.show(store, "harvest-d", 7)
    with pytest.raises(RegistryError, match="has no version 3"):
        registry.promote(store, "harvest-d", 3)
    with pytest.raises(RegistryError, match="no registered model 'nope'"):
        registry.promote(store, "nope", 1)
    message = "no version of 'harvest-d' has the alias 'champion' (aliases: challenger -> 2)"
    with pytest.raises(RegistryError, match=re.escape(message)):
        registry.show(store, "harvest-d")
    with pytest.raises(RegistryError, match="cannot give 'harvest-d' the alias 'latest'"):
        registry.promote(store, "harvest-d", 1, "latest")
    assert registry.find(store, "harvest-d") is None and registry.find(store, "nope") is None


def test_an_unreachable_tracking_server_is_a_clear_error(tmp_path: Path) -> None:
    uri = f"http://user:secret@127.0.0.1:{free_port()}"
    env = {"HARVEST_LAKE": str(tmp_path / "lake"), "HARVEST_TRACKING_URI": uri}
    proc = run_harvest(["model", "list"], env, check=False, timeout=60)
    assert proc.returncode == 69  # unavailable: retry later (README: exit codes)
    assert "the MLflow tracking server at http://user:***@127.0.0.1:" in proc.stderr
    assert "not reachable" in proc.stderr and "secret" not in proc.stderr
    # a store that cannot be created fails before any training would start
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(TrackingError, match="cannot create the MLflow store"):
        Store(f"sqlite:///{blocked}/mlflow/mlflow.db").client  # noqa: B018
    assert safe_uri("postgresql://u:pw@db:5432/mlflow") == "postgresql://u:***@db:5432/mlflow"


def test_asking_an_absent_store_creates_none(tmp_path: Path) -> None:
    cfg = Config(lake=str(tmp_path / "lake"))
    env = {"HARVEST_LAKE": cfg.lake}
    listed = run_harvest(["model", "list"], env)
    assert last_json(listed.stdout)["models"] == []
    proc = run_harvest(["model", "show", "harvest-x"], env, check=False)
    assert proc.returncode == 2 and "there is no MLflow store at" in proc.stderr
    assert stages.source_model(cfg, "s") is None
    assert not (tmp_path / "mlflow").exists()


# --- the labelling loop's champion


def recipe(name: str) -> Recipe:
    return dataclasses.replace(load_recipe("demo", str(ROOT / "sources")), name=name)


def test_labelling_models_are_registered_and_the_better_one_serves(config: Config) -> None:
    truth = labelled_lake(config, "lm", 90)
    lake = Lake(config.lake)
    ids = [f"h{i}" for i in range(90)]
    lake.overwrite("labels/lm", pa.table({"row_id": ids[:30], "label": truth[:30]}))
    done = stages.retrain_source_model(config, recipe("lm"))
    first, rec = done.model, done.record
    assert rec.promoted and rec.contest is None and done.serving is first  # no champion yet
    assert (rec.registered_model, rec.registered_version) == ("labeling-lm", 1)
    assert rec.aliases == {"champion": 1}

    # 30 more rows, labelled at random: the old model predicts them better than any
    # model that learns from them
    wrong = list(np.random.default_rng(1).choice(sorted(set(truth)), 30))
    lake.overwrite("labels/lm", pa.table({"row_id": ids[:60], "label": truth[:30] + wrong}))
    done = stages.retrain_source_model(config, recipe("lm"))
    rec = done.record
    assert not rec.promoted and done.serving.version == first.version
    assert rec.contest is not None and rec.contest.rows == 30
    assert rec.contest.champion > rec.contest.candidate  # type: ignore[operator]
    assert rec.aliases == {"challenger": 2}
    assert stages.source_model(config, "lm").version == first.version  # type: ignore[union-attr]
    assert model.load(stages.model_dir(config, "lm")).version == first.version  # type: ignore[union-attr]

    # right labels for those rows: the newcomer wins them and takes over
    lake.overwrite("labels/lm", pa.table({"row_id": ids[:60], "label": truth[:60]}))
    done = stages.retrain_source_model(config, recipe("lm"))
    third, rec = done.model, done.record
    assert rec.promoted and rec.contest is not None and rec.contest.rows == 30
    assert rec.contest.candidate >= rec.contest.champion  # type: ignore[operator]
    assert rec.aliases == {"champion": 3}  # it was the challenger a moment
    assert stages.source_model(config, "lm").version == third.version  # type: ignore[union-attr]

    client = MlflowClient(config.tracking, config.tracking)
    run = client.get_run(str(client.get_model_version("labeling-lm", "3").run_id))
    assert run.data.tags["harvest.labels_version"] == str(lake.version("labels/lm"))
    assert run.data.metrics["labels"] == 60
    assert run.data.params["logisticregression.C"] == "4.0"
    assert run.data.params["features"] == "tfidf+minilm"


def train_twice(
    config: Config, source: str, rows: int, first: int, second: int
) -> tuple[model.LabelModel, model.LabelModel]:
    """Two labelling models of ``source``: on its first ``first`` labelled rows, then on
    its first ``second``."""
    truth = labelled_lake(config, source, rows)
    lake = Lake(config.lake)
    ids = [f"h{i}" for i in range(rows)]
    trained = []
    for n in (first, second):
        lake.overwrite(f"labels/{source}", pa.table({"row_id": ids[:n], "label": truth[:n]}))
        trained.append(stages.train_source_model(config, recipe(source)))
    return trained[0], trained[1]


def test_push_and_refresh_load_the_champion_not_the_newest_model(config: Config) -> None:
    first, second = train_twice(config, "ch", 60, 20, 40)
    lake = Lake(config.lake)
    ids = [f"h{i}" for i in range(60)]
    assert second.version != first.version
    assert stages.source_model(config, "ch").version == second.version  # type: ignore[union-attr]
    # a person puts the first back: push and refresh follow the registry, not the folder
    registry.promote(Store(config.tracking), "labeling-ch", 1)
    assert model.load(stages.model_dir(config, "ch")).version == second.version  # type: ignore[union-attr]
    served = stages.source_model(config, "ch")
    assert served is not None and served.version == first.version
    assert served.row_ids == ids[:20]
    texts = [r["body"] for r in lake.read("curated/ch").to_pylist()[40:]]
    assert np.allclose(served.predict_proba(texts), first.predict_proba(texts))
    # without a store, the folder's model
    shutil.rmtree(Path(config.lake).parent / "mlflow")
    assert stages.source_model(config, "ch").version == second.version  # type: ignore[union-attr]


@slow
def test_a_push_carries_the_champions_predictions(
    config: Config, label_studio: LabelStudioServer, tmp_path: Path
) -> None:
    secrets = tmp_path / "ls"
    secrets.mkdir()
    (secrets / ".token").write_text(label_studio.token)
    cfg = dataclasses.replace(
        config, label_studio_port=label_studio.port, label_studio_data_dir=str(secrets)
    )
    first, _ = train_twice(cfg, "chpush", 40, 12, 24)
    registry.promote(Store(cfg.tracking), "labeling-chpush", 1)
    sync = stages.label_sync(cfg)
    pushed = stages.push_source(cfg, recipe("chpush"), sync, batch=5)
    assert pushed.imported == 5 and pushed.model_version == first.version  # type: ignore[attr-defined]
    tasks: list[Any] = list(sync.client.tasks.list(project=pushed.project_id, fields="all"))
    found = [p if isinstance(p, dict) else p.dict() for t in tasks for p in t.predictions or []]
    assert len(found) == 5 and {p["model_version"] for p in found} == {first.version}
