"""Drift monitoring of a served model: the prediction log's features, windows compared with
the training split, `harvest monitor` and the status, on a real lake and MLflow store."""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import threading
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

from harvest import monitor, stages
from harvest.config import Config
from harvest.demosite.generator import generate
from harvest.recipe import load_recipe
from harvest.service.predict import Loaded
from harvest.service.predictlog import PredictionLog
from ingestion.datasets import read_dataset
from ingestion.lake import Lake
from labeling.server import LabelStudioServer
from tests.helpers import ROOT, last_json, run_harvest
from tests.test_tracking import env_of, labelled_lake
from training import pyfunc, registry
from training.profile import Profile
from training.tracking import Store
from validation.section import MonitorSpec

WINDOW = 40
# words no demo article uses: a stream of another kind of text
COOKING = [
    "whisk",
    "preheat",
    "oven",
    "simmer",
    "saucepan",
    "garlic",
    "butter",
    "flour",
    "knead",
    "dough",
    "caramelise",
    "shallots",
    "zest",
    "lemon",
    "marinate",
    "skillet",
    "braise",
    "thyme",
    "rosemary",
    "vinaigrette",
    "ladle",
]


def steady(n: int, seed: int) -> list[str]:
    """Articles of the demo site's kind, none of them trained on."""
    arts = [a for a in generate(n + 40, seed=seed).articles if not a.planted]
    return [" ".join(a.paragraphs) for a in arts[:n]]


def shifted(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(COOKING) for _ in range(rng.randint(8, 30))).capitalize() + "."
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, Loaded]:
    tmp = tmp_path_factory.mktemp("monitor")
    cfg = Config(lake=str(tmp / "lake"), reports=str(tmp / "reports"))
    labelled_lake(cfg, "demo", 120)
    run_harvest(["train", "--source", "demo", "--epochs", "2", "--model", "ngram"], env_of(cfg))
    store = Store(cfg.tracking)
    scorer = pyfunc.load_version(store, registry.version(store, "harvest-demo", 1))
    return cfg, Loaded("harvest-demo", "champion", 1, scorer)


def log_stream(
    cfg: Config, model: Loaded, texts: list[str], per_answer: int = 8, text: bool = False
) -> None:
    """``texts`` answered in requests of ``per_answer`` and logged as the service logs."""
    profiles = monitor.Profiles(cfg, Store(cfg.tracking))
    # which texts of a flush are encoded is drawn: seeded, so that a window's few distances
    # are the same on every run, not a fresh draw that now and then falls under alpha
    log = PredictionLog(Lake(cfg.lake), text=text, profiles=profiles, rng=random.Random(len(texts)))
    for i in range(0, len(texts), per_answer):
        part = texts[i : i + per_answer]
        log.record(model, part, model.scorer.proba(part), 0.01)
    log.flush()


def test_a_shifted_stream_is_flagged_and_a_steady_one_is_not(
    served: tuple[Config, Loaded],
) -> None:
    cfg, model = served
    spec = MonitorSpec(window=WINDOW)
    store = Store(cfg.tracking)
    lake = Lake(cfg.lake)
    log_stream(cfg, model, steady(WINDOW + 5, seed=11))
    (first,) = monitor.check(cfg, store, "harvest-demo", spec)
    assert first.rows == WINDOW and first.model_version == 1
    assert first.drifted == [], first.to_dict()
    assert monitor.status(lake, "harvest-demo")["drifted"] is False  # type: ignore[index]
    # the 5 rows past the window wait for the next; nothing is compared twice
    assert monitor.check(cfg, store, "harvest-demo", spec) == []

    log_stream(cfg, model, shifted(WINDOW, seed=3))
    (second,) = monitor.check(cfg, store, "harvest-demo", spec)
    assert {"oov_share", "centroid_distance"} <= set(second.drifted), second.to_dict()
    now = monitor.status(lake, "harvest-demo")
    assert now is not None and now["drifted"] and now["windows"] == 2
    rows = lake.read("monitoring/harvest-demo").sort_by("window_end").to_pylist()
    assert len(rows) == 2 * (len(monitor.FEATURES) + 1)
    oov = [r for r in rows if r["feature"] == "oov_share"]
    assert oov[1]["live_mean"] > oov[0]["live_mean"] + 0.3

    # `harvest monitor` says the same, and fails while the last window drifted
    done = run_harvest(["monitor"], env_of(cfg), check=False)
    assert done.returncode == 1, done.stderr[-2000:]
    out = last_json(done.stdout)
    assert out["model"] == "harvest-demo" and out["status"]["drifted"] is True  # type: ignore[index]
    status = run_harvest(["status"], env_of(cfg), check=False)
    assert "monitoring harvest-demo: DRIFTED" in status.stderr, status.stderr[-2000:]


def test_a_check_commits_its_windows_at_once_and_a_stopped_one_commits_nothing_twice(
    served: tuple[Config, Loaded], tmp_path: Path
) -> None:
    trained, model = served
    # a lake of its own, the model from the same registry
    cfg = Config(
        lake=str(tmp_path / "lake"),
        reports=str(tmp_path / "reports"),
        tracking_uri=trained.tracking,
    )
    spec, store, lake = MonitorSpec(window=WINDOW), Store(cfg.tracking), Lake(cfg.lake)
    log_stream(cfg, model, steady(3 * WINDOW, seed=14))
    stop = threading.Event()
    stop.set()  # the service stopping as the check begins: nothing compared, nothing written
    assert monitor.check(cfg, store, "harvest-demo", spec, stop) == []
    assert not lake.exists("monitoring/harvest-demo")
    windows = monitor.check(cfg, store, "harvest-demo", spec, threading.Event())
    assert [w.rows for w in windows] == [WINDOW] * 3
    assert lake.table("monitoring/harvest-demo").version() == 0  # one commit for the three
    rows = lake.read("monitoring/harvest-demo")
    assert rows.num_rows == 3 * (len(monitor.FEATURES) + 1)
    assert len(pc.unique(rows["window_end"])) == 3
    assert monitor.check(cfg, store, "harvest-demo", spec) == []


def test_the_profile_is_built_from_held_out_rows_and_kept(served: tuple[Config, Loaded]) -> None:
    cfg, model = served
    store = Store(cfg.tracking)
    # `harvest train` kept it beside the model: a service needs no lake to monitor
    folder, _ = registry.local_copy(store, registry.version(store, "harvest-demo", 1))
    assert Profile.load(folder / "profile.json") is not None
    profile = monitor.make_profile(cfg, store, "harvest-demo", 1)
    kept = Profile.load(monitor.profile_path(cfg, "harvest-demo", 1))
    assert kept is not None and kept.vocabulary == profile.vocabulary
    # the reference is the validation split's rows, not the training rows
    data, _ = read_dataset(Lake(cfg.lake), "demo")
    held = data.filter(pc.equal(data["split"], "validation"))
    assert {len(v) for v in profile.reference.values()} == {held.num_rows}
    assert float(np.mean(profile.reference["oov_share"])) < 0.2
    assert sum(profile.predicted_mix.values()) == held.num_rows
    assert set(profile.label_mix) == set(model.scorer.classes)
    texts = steady(3, seed=12)
    found = profile.features(texts)
    assert found["text_length"].tolist() == [len(t) for t in texts]
    assert all(0 <= d <= 2 for d in found["centroid_distance"])
    # a busy log encodes a sample of the texts; the other features cover every text
    some = profile.features(steady(40, seed=13), embed=16)
    assert int(np.isfinite(some["centroid_distance"]).sum()) == 16
    assert np.isfinite(some["oov_share"]).all() and len(some["text_length"]) == 40


def test_a_model_without_predictions_or_dataset_is_a_clear_error(
    served: tuple[Config, Loaded], tmp_path: Path
) -> None:
    cfg, model = served
    with pytest.raises(monitor.NotFoundError, match="no predictions of harvest-none"):
        monitor.check(cfg, Store(cfg.tracking), "harvest-none")
    done = run_harvest(["monitor", "harvest-none"], env_of(cfg), check=False)
    assert done.returncode != 0 and "no predictions of harvest-none" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_the_drifted_inputs_become_rows_of_the_source_and_tasks(
    served: tuple[Config, Loaded], label_studio: LabelStudioServer, tmp_path: Path
) -> None:
    trained, model = served
    secrets = tmp_path / "ls"
    secrets.mkdir()
    (secrets / ".token").write_text(label_studio.token)
    # a lake of its own, the model from the same registry
    cfg = Config(
        lake=str(tmp_path / "lake"),
        reports=str(tmp_path / "reports"),
        tracking_uri=trained.tracking,
        label_studio_port=label_studio.port,
        label_studio_data_dir=str(secrets),
    )
    spec, store, lake = MonitorSpec(window=WINDOW), Store(cfg.tracking), Lake(cfg.lake)
    recipe = dataclasses.replace(load_recipe("demo", str(ROOT / "sources")), name="driftdemo")
    with pytest.raises(monitor.MonitorError, match="harvest-demo is not drifted"):
        stages.push_drifted(cfg, recipe, "harvest-demo")

    log_stream(cfg, model, shifted(WINDOW, seed=5))  # logged without the text
    assert monitor.check(cfg, store, "harvest-demo", spec)[0].drifted
    with pytest.raises(monitor.MonitorError, match=r"without their text: set serve\.log_text"):
        stages.push_drifted(cfg, recipe, "harvest-demo")
    log_stream(cfg, model, steady(WINDOW, seed=11), text=True)
    (calm,) = monitor.check(cfg, store, "harvest-demo", spec)
    assert calm.drifted == [], calm.to_dict()
    with pytest.raises(monitor.MonitorError, match="not drifted"):
        stages.push_drifted(cfg, recipe, "harvest-demo")

    moved = shifted(2 * WINDOW, seed=6)
    log_stream(cfg, model, moved, text=True)
    assert all(w.drifted for w in monitor.check(cfg, store, "harvest-demo", spec))
    found, pushed = stages.push_drifted(cfg, recipe, "harvest-demo")
    # the whole drifted streak, and nothing of the steady window before it
    assert found.windows == 2 and found.texts == list(dict.fromkeys(moved))
    assert pushed.imported == len(found.texts)
    rows = lake.read("curated/driftdemo").to_pylist()
    assert sorted(r[recipe.text_field] for r in rows) == sorted(found.texts)
    assert all(r["url"].startswith("live://harvest-demo/") for r in rows)
    sync = stages.label_sync(cfg)
    tasks = sync.task_row_ids(pushed.project_id)
    assert set(tasks) == {r["content_sha256"] for r in rows}
    # a second push, as after a kill between the append and the import, adds nothing twice
    _, again = stages.push_drifted(cfg, recipe, "harvest-demo")
    assert (again.imported, again.skipped) == (0, len(found.texts))
    assert lake.read("curated/driftdemo").num_rows == len(rows)


def test_the_log_takes_the_vectors_scoring_computed_and_encodes_only_the_rest(
    served: tuple[Config, Loaded],
) -> None:
    from harvest.service import encoder
    from training import embedding

    cfg, model = served
    profile = monitor.Profiles(cfg, Store(cfg.tracking)).get(model.name, 1, model.scorer)
    assert profile is not None
    tag = random.randrange(10**9)  # texts no earlier test embedded in this process
    scored = [f"The striker scored twice ({tag} {i})." for i in range(3)]
    unseen = [f"Stocks rallied on Wall Street ({tag} {i})." for i in range(2)]
    embedding.embed(scored)  # what a MiniLM-based model does as it scores, in this process
    # one of them held as the centroid itself: a vector taken from this process reads 0
    key = embedding.EmbeddingCache.key(scored[1], embedding.MAX_LENGTH)
    embedding._PROCESS_CACHE.vectors[key] = profile.centroid.astype(np.float32)
    mixed = [unseen[0], scored[1], unseen[1], scored[0]]
    want = profile.features(mixed)  # here, every vector encoded afresh
    try:
        got = encoder.features((model.name, tag), profile, mixed, 4, 0)
        assert encoder._pool is not None  # worked out in the child
        # a child killed between flushes: that flush fails, the next starts a child and
        # sends it the profile again
        (pid,) = encoder._pool._processes
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(BrokenProcessPool):
            encoder.features((model.name, tag), profile, mixed, 4, 0)
        again = encoder.features((model.name, tag), profile, mixed, 4, 0)
    finally:
        encoder.close()
    for found in (got, again):
        assert found["oov_share"].tolist() == want["oov_share"].tolist()
        assert found["text_length"].tolist() == [len(t) for t in mixed]
        distance = found["centroid_distance"]
        assert abs(distance[1]) < 1e-5 < want["centroid_distance"][1] - 0.01
        assert np.allclose(distance[[0, 2, 3]], want["centroid_distance"][[0, 2, 3]], atol=1e-5)
