"""The labelling model, and the active-learning push and refresh against a real Label Studio."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from harvest import stages
from harvest.config import Config
from harvest.recipe import load_recipe
from ingestion.lake import Lake
from labeling import model, push
from labeling.model import LabelModel, ModelError
from labeling.server import LabelStudioServer
from labeling.sync import LabelSync, choice_result
from tests.helpers import ROOT

CLASSES = ["A", "B"]
TOPICS = {
    "World": "summit treaty embassy minister border election parliament diplomat",
    "Sports": "match goal striker league coach tournament referee stadium",
    "Business": "shares profit merger investor market revenue quarterly bank",
}
slow = pytest.mark.slow


def articles(n: int, seed: int) -> tuple[list[str], list[str]]:
    """Texts whose topic words say the class, among words every class shares."""
    rng = np.random.default_rng(seed)
    shared = ["the", "a", "of", "in", "said", "today", "new", "report", "people", "year"]
    texts, labels = [], []
    for i in range(n):
        label = list(TOPICS)[i % len(TOPICS)]
        words = list(rng.choice(TOPICS[label].split(), 4)) + list(rng.choice(shared, 8))
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


class Fixed:
    """Stands in for the fitted pipeline: probabilities set by hand, one row per text."""

    def __init__(self, probs: dict[str, Sequence[float]]):
        self.probs = probs

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return np.array([self.probs[t] for t in texts], dtype=np.float64)


def fixed_model(p_a: dict[str, float], version: str) -> LabelModel:
    """Two classes; each text's probability of A given, of B the rest."""
    probs = {t: (p, 1.0 - p) for t, p in p_a.items()}
    return LabelModel(pipeline=Fixed(probs), classes=CLASSES, version=version, labels=0)  # type: ignore[arg-type]


def curate(lake: Lake, source: str, texts: list[str]) -> None:
    """curated/<source> as the gate writes it: row i has the id h<i>."""
    ids = [f"h{i}" for i in range(len(texts))]
    urls = [f"http://site/{i}" for i in range(len(texts))]
    lake.append(f"curated/{source}", pa.table({"content_sha256": ids, "url": urls, "body": texts}))


def rows_of(texts: Sequence[str]) -> list[dict[str, str]]:
    return [{"row_id": f"r{i}", "url": f"http://site/{i}", "text": t} for i, t in enumerate(texts)]


def lc_score(p_a: float) -> float:
    """labeling.strategies.score for two classes: the top probability rescaled to [0, 1]."""
    return 2.0 * max(p_a, 1.0 - p_a) - 1.0


# --- the model, no server


def test_model_trained_from_labels_predicts_above_chance() -> None:
    texts, labels = articles(90, seed=0)
    fitted = model.fit(texts[:60], labels[:60])
    assert fitted.classes == sorted(TOPICS)
    probs = fitted.predict_proba(texts[60:])
    assert probs.shape == (30, 3)
    assert np.allclose(probs.sum(axis=1), 1.0)
    accuracy = np.mean(np.array(fitted.predict(texts[60:])) == np.array(labels[60:]))
    assert accuracy >= 0.9  # chance is 1/3
    assert fitted.labels == 60


def test_too_few_classes_is_a_clear_error() -> None:
    with pytest.raises(ModelError, match=r"at least 2 classes, got World: 3"):
        model.fit(["a b", "c d", "e f"], ["World"] * 3)
    with pytest.raises(ModelError, match="no labels at all"):
        model.fit([], [])


def test_train_from_the_lake_saves_and_loads(tmp_path: Path) -> None:
    texts, labels = articles(60, seed=1)
    lake = Lake(tmp_path / "lake")
    config = Config(lake=str(tmp_path / "lake"))
    recipe = dataclasses.replace(load_recipe("demo", str(ROOT / "sources")), name="m")
    curate(lake, "m", texts)
    with pytest.raises(ModelError, match=r"no labels yet for 'm' \(labels/m is missing\)"):
        stages.train_source_model(config, recipe)
    lake.overwrite("labels/m", pa.table({"row_id": ["h0", "h3", "h6"], "label": ["World"] * 3}))
    with pytest.raises(ModelError, match="at least 2 classes, got World: 3"):
        stages.train_source_model(config, recipe)
    labelled = pa.table(
        {"row_id": [f"h{i}" for i in range(30)] + ["gone"], "label": labels[:30] + ["Sports"]}
    )
    version = lake.overwrite("labels/m", labelled)
    trained = stages.train_source_model(config, recipe)
    assert trained.labels == 30  # the label of a row no longer curated teaches nothing
    assert trained.labels_version == version
    folder = tmp_path / "models" / "m"  # beside the lake by default
    assert stages.model_dir(config, "m") == folder
    loaded = model.load(folder)
    assert loaded is not None
    assert (loaded.version, loaded.classes) == (trained.version, trained.classes)
    assert np.array_equal(loaded.predict_proba(texts[30:]), trained.predict_proba(texts[30:]))
    assert json.loads((folder / "model.json").read_text())["labels"] == 30
    assert model.load(tmp_path / "nothing") is None


def test_embeddings_are_unit_length_and_cope_with_tiny_pools() -> None:
    texts, _ = articles(40, seed=2)
    emb = model.embed(texts, dims=16)
    assert emb.shape == (40, 16)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0)
    assert model.embed(["one text"]).shape[0] == 1
    assert model.embed([]).shape[0] == 0
    assert not model.embed(["", ""]).any()  # no words: nothing tells them apart


def test_strategy_falls_back_to_the_cold_start_without_a_model() -> None:
    some = fixed_model({}, "v")
    assert push.resolve_strategy(None, None) == "coldstart"
    assert push.resolve_strategy("margin", None) == "coldstart"
    assert push.resolve_strategy("kcenter", None) == "kcenter"
    assert push.resolve_strategy(None, some) == "least_confidence"
    assert push.resolve_strategy("hybrid", some) == "hybrid"
    with pytest.raises(ValueError, match="unknown strategy 'badge'"):
        push.resolve_strategy("badge", some)


def test_random_needs_no_model_and_picks_only_fresh_rows() -> None:
    fresh = np.array([0, 2, 3, 5, 8, 9])
    covered = np.ones(10, dtype=bool)
    covered[fresh] = False
    texts = [f"row {i}" for i in range(10)]
    picked = push.choose("random", fresh, covered, 4, texts, None, None, seed=3)
    assert len(set(picked.tolist())) == 4 and set(picked.tolist()) <= set(fresh.tolist())
    again = push.choose("random", fresh, covered, 4, texts, None, None, seed=3)
    assert picked.tolist() == again.tolist()  # the seed decides
    assert push.resolve_strategy("random", None) == "random"


def test_prediction_carries_version_score_and_the_top_class() -> None:
    p = push.prediction("v7", CLASSES, np.array([0.3, 0.7]), 0.4)
    assert p == {"model_version": "v7", "score": 0.4, "result": choice_result("B")}


# --- against Label Studio


@pytest.fixture
def sync(label_studio: LabelStudioServer, tmp_path: Path) -> LabelSync:
    return LabelSync(label_studio.url, label_studio.token, Lake(tmp_path / "lake"))


def title(request: pytest.FixtureRequest) -> str:
    return f"al {request.node.name.removeprefix('test_')}"[:50]  # Label Studio's limit


def by_score(sync: LabelSync, project: int, descending: bool = False) -> list[Any]:
    """The project's tasks as the Data Manager shows them sorted by prediction score."""
    ordering = ("-" if descending else "") + "tasks:predictions_score"
    query = json.dumps({"ordering": [ordering]})
    return list(sync.client.tasks.list(project=project, query=query, fields="all"))


def preds(task: Any) -> list[dict[str, Any]]:
    return [p if isinstance(p, dict) else p.dict() for p in task.predictions or []]


# row i's probability of A: the four most uncertain are r4, r1, r7, r3, in that order
P_A = [0.99, 0.48, 0.9, 0.4, 0.51, 0.2, 0.97, 0.45, 0.7, 0.05, 0.85, 0.25]
TEXTS = [f"article {i}" for i in range(len(P_A))]


@slow
def test_push_imports_the_chosen_batch_most_uncertain_first(
    sync: LabelSync, request: pytest.FixtureRequest
) -> None:
    project = sync.project(title(request), CLASSES)
    v1 = fixed_model(dict(zip(TEXTS, P_A, strict=True)), "v1")
    result = push.push(sync, project, rows_of(TEXTS), v1, "least_confidence", batch=4)
    assert (result.imported, result.candidates, result.strategy) == (4, 12, "least_confidence")
    tasks = by_score(sync, project)
    assert [t.data["row_id"] for t in tasks] == ["r4", "r1", "r7", "r3"]
    assert [t.data["row_id"] for t in by_score(sync, project, True)] == ["r3", "r7", "r1", "r4"]
    for task in tasks:
        i = int(task.data["row_id"][1:])
        (only,) = preds(task)
        assert only["model_version"] == "v1"
        assert only["score"] == pytest.approx(lc_score(P_A[i]))
        assert only["result"][0]["value"] == {"choices": ["A" if P_A[i] > 0.5 else "B"]}


@slow
def test_a_reserve_of_the_batch_is_drawn_at_random_and_marked_for_evaluation(
    sync: LabelSync, request: pytest.FixtureRequest
) -> None:
    project = sync.project(title(request), CLASSES)
    v1 = fixed_model(dict(zip(TEXTS, P_A, strict=True)), "v1")
    recorded: list[list[str]] = []

    def on_reserve(ids: list[str]) -> None:
        # recorded before the import: no task of the reserve exists yet
        assert sync.task_row_ids(project) == {}
        recorded.append(ids)

    result = push.push(
        sync,
        project,
        rows_of(TEXTS),
        v1,
        "least_confidence",
        batch=8,
        reserve=0.25,
        on_reserve=on_reserve,
    )
    assert (result.imported, result.reserved) == (8, 2)
    tasks = list(sync.client.tasks.list(project=project, fields="all"))
    held = sorted(t.data["row_id"] for t in tasks if t.data.get("purpose") == push.EVALUATION)
    assert [sorted(ids) for ids in recorded] == [held] and len(held) == 2
    # the other six are the strategy's: the most uncertain of the rows not held back
    chosen = {t.data["row_id"] for t in tasks} - set(held)
    rest = sorted((r for r in range(12) if f"r{r}" not in held), key=lambda r: lc_score(P_A[r]))
    assert chosen == {f"r{r}" for r in rest[:6]}
    # a push that takes every row left makes no choice, so it holds nothing back
    last = push.push(sync, project, rows_of(TEXTS), v1, batch=None, reserve=0.25)
    assert (last.imported, last.reserved) == (4, 0)


@slow
def test_rows_already_pushed_or_labelled_are_never_pushed_again(
    sync: LabelSync, request: pytest.FixtureRequest
) -> None:
    project = sync.project(title(request), CLASSES)
    v1 = fixed_model(dict(zip(TEXTS, P_A, strict=True)), "v1")
    rows = rows_of(TEXTS)
    counts = []
    for batch in (5, 5, None, None):
        r = push.push(sync, project, rows + rows[:2], v1, batch=batch, labelled=["r11"])
        counts.append(r.imported)
    assert counts == [5, 5, 1, 0]
    # a cold start on the same project knows the tasks too
    assert push.push(sync, project, rows, None, batch=3).imported == 1
    ids = [t.data["row_id"] for t in sync.client.tasks.list(project=project, fields="all")]
    assert sorted(ids) == sorted(r["row_id"] for r in rows)  # r11 came only as a new row


@slow
def test_cold_start_picks_one_row_per_cluster(
    sync: LabelSync, request: pytest.FixtureRequest
) -> None:
    # row i is cluster i % 4: its 12 words and one word of the row's own. Rows of one
    # cluster lie within 0.42 squared distance of each other, rows of two clusters 1.9
    # apart, so rounding, which moves distances by 1e-12, cannot change the clustering.
    texts = [" ".join([f"c{i % 4}w{w}" for w in range(12)] + [f"r{i}"]) for i in range(40)]
    project = sync.project(title(request), CLASSES)
    result = push.push(sync, project, rows_of(texts), None, batch=4)
    assert (result.imported, result.strategy, result.model_version) == (4, "coldstart", None)
    tasks = list(sync.client.tasks.list(project=project, fields="all"))
    assert sorted(int(t.data["row_id"][1:]) % 4 for t in tasks) == [0, 1, 2, 3]
    assert all(not preds(t) for t in tasks)  # no model, no guess to show


@slow
def test_refresh_replaces_the_predictions_of_waiting_tasks(
    sync: LabelSync, request: pytest.FixtureRequest
) -> None:
    project = sync.project(title(request), CLASSES)
    texts = TEXTS[:6]
    v1 = fixed_model(dict(zip(texts, [0.9, 0.8, 0.7, 0.6, 0.55, 0.51], strict=True)), "v1")
    push.push(sync, project, rows_of(texts), v1)
    ids = sync.task_row_ids(project)
    sync.client.annotations.create(id=ids["r0"], result=choice_result("A"))
    # the retrained model is surest where the old one was least sure
    new_p = [0.5, 0.52, 0.6, 0.7, 0.8, 0.95]
    v2 = fixed_model(dict(zip(texts, new_p, strict=True)), "v2")
    assert push.refresh(sync, project, v2).tasks == 5
    assert sync.client.projects.get(id=project).model_version == "v2"
    tasks = {t.data["row_id"]: t for t in by_score(sync, project)}
    assert [only["model_version"] for (only,) in map(preds, tasks.values())].count("v2") == 5
    (kept,) = preds(tasks["r0"])  # labelled: keeps the prediction it was labelled with
    assert (kept["model_version"], kept["score"]) == ("v1", pytest.approx(lc_score(0.9)))
    for i in range(1, 6):
        (only,) = preds(tasks[f"r{i}"])
        assert only["score"] == pytest.approx(lc_score(new_p[i]))
    # sorted by the new scores: the reverse of the order the tasks were created in
    assert list(tasks)[:5] == ["r1", "r2", "r3", "r4", "r5"]
    # a push with another model first brings the waiting tasks up to it
    more = rows_of([*texts, "article 6"])
    v3 = fixed_model({**dict(zip(texts, new_p, strict=True)), "article 6": 0.5}, "v3")
    result = push.push(sync, project, more, v3)
    assert (result.refreshed, result.imported) == (5, 1)
    assert all(len(preds(t)) == 1 for t in by_score(sync, project))
    assert by_score(sync, project)[0].data["row_id"] == "r6"


@slow
def test_push_retrain_and_refresh_through_the_stages(
    label_studio: LabelStudioServer, tmp_path: Path
) -> None:
    secrets = tmp_path / "ls"
    secrets.mkdir()
    (secrets / ".token").write_text(label_studio.token)
    config = Config(
        lake=str(tmp_path / "lake"),
        label_studio_port=label_studio.port,
        label_studio_data_dir=str(secrets),
    )
    recipe = dataclasses.replace(load_recipe("demo", str(ROOT / "sources")), name="alflow")
    texts, truth = articles(60, seed=4)
    lake = Lake(config.lake)
    curate(lake, "alflow", texts)
    sync = stages.label_sync(config)
    first = stages.push_source(config, recipe, sync, batch=6)
    assert (first.imported, first.strategy) == (6, "coldstart")  # type: ignore[attr-defined]
    done: list[str] = []

    def label(n: int) -> None:
        """Labels ``n`` waiting tasks by the truth; writes labels/alflow as a pull would."""
        for row_id, task_id in sorted(sync.task_row_ids(first.project_id).items()):
            if row_id not in done and n > 0:
                sync.client.annotations.create(
                    id=task_id, result=choice_result(truth[int(row_id[1:])])
                )
                done.append(row_id)
                n -= 1
        labelled = [truth[int(r[1:])] for r in done]
        lake.overwrite("labels/alflow", pa.table({"row_id": done, "label": labelled}))

    label(6)
    retrained = stages.retrain_and_refresh(config, recipe, sync)
    assert (retrained.labels, retrained.refreshed) == (6, 0)
    assert len(retrained.classes) >= 2
    second = stages.push_source(config, recipe, sync, strategy="margin", batch=10)
    assert (second.imported, second.skipped) == (10, 6)
    assert second.model_version == retrained.model_version  # type: ignore[attr-defined]
    label(4)
    again = stages.retrain_and_refresh(config, recipe, sync)
    assert again.labels == 10 and again.model_version != retrained.model_version
    assert again.refreshed == 6  # the tasks still waiting now carry the new guess
    assert sync.client.projects.get(id=first.project_id).model_version == again.model_version
    third = stages.push_source(config, recipe, sync, batch=5)
    assert (third.imported, third.skipped, third.refreshed) == (5, 16, 0)  # type: ignore[attr-defined]
