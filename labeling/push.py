"""Active-learning push: choose the next rows to label and import them with the model's guess.

Each task carries its prediction in the import payload, so one request creates task and
pre-annotation together; the prediction's ``score`` (lowest = most uncertain) lets the
Data Manager, sorted by prediction score, show first the rows the strategy ranks first.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from labeling import strategies
from labeling.model import LabelModel, embed
from labeling.sync import LabelSync, PushResult, choice_result
from training.arrays import Floats, Indices

EVALUATION = "evaluation"  # a task's data.purpose when it is of the evaluation reserve
CHUNK = 1000  # tasks or predictions per request: big enough to amortise, small enough to retry
MEASURE = "least_confidence"  # the uncertainty the score encodes, and the default strategy
NEEDS_PROBS = frozenset({"least_confidence", "margin", "entropy", "hybrid"})
NEEDS_EMBEDDINGS = frozenset({"kcenter", "hybrid", "coldstart"})
UNLABELLED = {
    "filters": {
        "conjunction": "and",
        "items": [
            {
                "filter": "filter:tasks:total_annotations",
                "operator": "equal",
                "type": "Number",
                "value": 0,
            }
        ],
    }
}

# Builds a prediction's ``result`` from the classes and one row of probabilities; other
# task types (multi-label, spans) plug in their own.
ResultBuilder = Callable[[list[str], Floats], list[dict[str, Any]]]


def single_choice(classes: list[str], p: Floats) -> list[dict[str, Any]]:
    return choice_result(classes[int(np.argmax(p))])


def prediction(
    model_version: str,
    classes: list[str],
    p: Floats,
    score: float,
    result: ResultBuilder = single_choice,
) -> dict[str, Any]:
    """One Label Studio prediction: the pre-annotation and the score tasks sort on."""
    return {"model_version": model_version, "score": float(score), "result": result(classes, p)}


@dataclass
class BatchPushResult(PushResult):
    candidates: int = 0  # rows neither a task nor labelled before this push
    strategy: str | None = None
    model_version: str | None = None
    refreshed: int = 0  # waiting tasks whose predictions a newer model replaced first
    reserved: int = 0  # of the imported, drawn at random for evaluation


@dataclass
class RefreshResult:
    project_id: int
    tasks: int  # unlabelled tasks that now carry the model's prediction
    model_version: str


def resolve_strategy(strategy: str | None, model: LabelModel | None) -> str:
    """The strategy to run: without a model, those that need probabilities give way to the
    cold start, which clusters the rows instead."""
    if strategy is not None:
        strategies.get(strategy)  # an unknown name fails here, naming the known ones
    if model is None:
        return "coldstart" if strategy is None or strategy in NEEDS_PROBS else strategy
    return strategy or MEASURE


def push(
    sync: LabelSync,
    project_id: int,
    rows: Sequence[dict[str, Any]],
    model: LabelModel | None = None,
    strategy: str | None = None,
    batch: int | None = None,
    seed: int = 0,
    labelled: Iterable[str] = (),
    result: ResultBuilder = single_choice,
    reserve: float = 0.0,
    on_reserve: Callable[[list[str]], None] | None = None,
) -> BatchPushResult:
    """Imports the ``batch`` (default: all) most useful ``rows`` that are neither tasks of the
    project nor ``labelled`` row ids, most useful first, each with the model's prediction.

    ``rows`` are dicts with ``row_id``, ``url`` and ``text``: every curated row, so that the
    diversity strategies know the ground the existing tasks already cover.

    When the push chooses (fewer rows than the candidates), a ``reserve`` share of the batch
    is drawn at random instead, marked ``purpose: evaluation`` and handed to ``on_reserve``
    before any task is imported: the rows a dataset's test split is drawn from, since the
    rows a strategy chose are the uncertain ones and not a sample of the data.
    """
    if not 0.0 <= reserve < 1.0:
        raise ValueError(f"reserve is a share of the batch in [0, 1), got {reserve}")
    if batch is not None and batch < 0:
        raise ValueError(f"batch must be >= 0, got {batch}")
    name = resolve_strategy(strategy, model)
    refreshed = 0
    version = project_model_version(sync, project_id) if model is not None else ""
    if model is not None and version != model.version:
        # tasks queued under an older model would sort as unscored under the new version
        refreshed = refresh(sync, project_id, model, result).tasks
        version = model.version if refreshed else version
    done = set(sync.task_row_ids(project_id)) | set(labelled)
    pool: list[dict[str, Any]] = []
    seen: set[str] = set()
    for row in rows:
        if row["row_id"] not in seen:
            seen.add(row["row_id"])
            pool.append(row)
    is_fresh = np.array([r["row_id"] not in done for r in pool], dtype=bool)
    fresh = np.flatnonzero(is_fresh)
    n = len(fresh) if batch is None else min(batch, len(fresh))
    texts = [r["text"] for r in pool]
    probs = model.predict_proba(texts) if model is not None and n else None
    scores = strategies.score(probs, MEASURE) if probs is not None else None
    held = np.empty(0, dtype=np.int64)
    if reserve and n < len(fresh):
        # a random draw, from its own stream: the strategy's seed keeps its choices
        k = math.floor(n * reserve + 0.5)
        held = np.sort(np.random.default_rng([seed, 1]).choice(fresh, k, replace=False))
        is_fresh[held] = False
    picked = choose(
        name, np.flatnonzero(is_fresh), ~is_fresh, n - len(held), texts, probs, scores, seed, model
    )
    if len(held) and on_reserve is not None:
        on_reserve([pool[i]["row_id"] for i in held])
    tasks = []
    reserved = set(held.tolist())
    for i in [*picked.tolist(), *held.tolist()]:
        task: dict[str, Any] = {"data": pool[i]}
        if i in reserved:
            task["data"] = {**pool[i], "purpose": EVALUATION}
        if model is not None and probs is not None and scores is not None:
            task["predictions"] = [
                prediction(model.version, model.classes, probs[i], scores[i], result)
            ]
        tasks.append(task)
    import_tasks(sync, project_id, tasks)
    if model is not None and tasks and version != model.version:
        set_model_version(sync, project_id, model.version)
    return BatchPushResult(
        project_id=project_id,
        imported=len(tasks),
        skipped=len(rows) - len(fresh),
        candidates=len(fresh),
        reserved=len(held),
        strategy=name,
        model_version=model.version if model is not None else None,
        refreshed=refreshed,
    )


def choose(
    name: str,
    fresh: Indices,
    covered: Indices,
    n: int,
    texts: list[str],
    probs: Floats | None,
    scores: Floats | None,
    seed: int,
    model: LabelModel | None = None,
) -> Indices:
    """Pool indices of the ``n`` rows to import, most useful first."""
    if n == 0:
        return np.empty(0, dtype=np.int64)
    if n == len(fresh):
        # every candidate goes: no choice to make, only an order (the most uncertain first)
        return fresh if scores is None else fresh[np.argsort(scores[fresh], kind="stable")]
    rng = np.random.default_rng(seed)
    if name == "random":
        # needs neither a model nor embeddings, so it works before the first model too
        return np.asarray(rng.permutation(fresh)[:n], dtype=np.int64)
    emb = None
    if name in NEEDS_EMBEDDINGS:
        # the sentence vectors the model reads where it reads them; they place rows by
        # meaning, where TF-IDF's directions place them by shared words
        emb = model.vectors(texts) if model is not None else None
        emb = embed(texts, seed=seed) if emb is None else emb
    return strategies.get(name)(probs, emb, n, rng, labelled=np.flatnonzero(covered))


def import_tasks(sync: LabelSync, project_id: int, tasks: list[dict[str, Any]]) -> list[int]:
    """Imports ``tasks`` in chunks of CHUNK; returns the new task ids in order."""
    ids: list[int] = []
    for start in range(0, len(tasks), CHUNK):
        chunk = tasks[start : start + CHUNK]
        response = sync.call(
            f"importing tasks {start + 1}-{start + len(chunk)} of {len(tasks)}",
            sync.client.projects.import_tasks,
            id=project_id,
            request=chunk,
            return_task_ids=True,
        )
        ids.extend(int(i) for i in response.task_ids or [])
    return ids


def project_model_version(sync: LabelSync, project_id: int) -> str:
    project = sync.call("reading a project", sync.client.projects.get, id=project_id)
    return str(project.model_version or "")


def set_model_version(sync: LabelSync, project_id: int, version: str) -> None:
    """Makes ``version`` the project's: the Data Manager sorts on the mean score of that
    version's predictions alone, and the labelling view shows those as pre-annotations."""
    sync.call(
        f"setting the model version of project {project_id}",
        sync.client.projects.update,
        id=project_id,
        model_version=version,
    )


def unlabelled_tasks(sync: LabelSync, project_id: int) -> list[Any]:
    """Tasks without a (non-cancelled) annotation, with their data."""
    tasks: list[Any] = sync.call(
        "listing unlabelled tasks",
        lambda: list(
            sync.client.tasks.list(
                project=project_id,
                include="id,data",
                page_size=CHUNK,
                query=json.dumps(UNLABELLED),
            )
        ),
    )
    return tasks


def refresh(
    sync: LabelSync,
    project_id: int,
    model: LabelModel,
    result: ResultBuilder = single_choice,
) -> RefreshResult:
    """Replaces the predictions of every unlabelled task with ``model``'s, in bulk.

    Chunk by chunk the old predictions are deleted and the new ones imported, then the
    project shows and sorts by the new model version. Labelled tasks keep theirs.
    """
    tasks = unlabelled_tasks(sync, project_id)
    for start in range(0, len(tasks), CHUNK):
        chunk = tasks[start : start + CHUNK]
        probs = model.predict_proba([t.data.get("text") or "" for t in chunk])
        scores = strategies.score(probs, MEASURE)
        ids = [int(t.id) for t in chunk]
        span = f"{start + 1}-{start + len(chunk)} of {len(tasks)}"
        sync.call(
            f"deleting old predictions of tasks {span}",
            sync.client.actions.create,
            id="delete_tasks_predictions",
            project=project_id,
            selected_items={"all": False, "included": ids},
        )
        fresh = [
            {"task": i, **prediction(model.version, model.classes, p, s, result)}
            for i, p, s in zip(ids, probs, scores, strict=True)
        ]
        sync.call(
            f"importing predictions of tasks {span}",
            sync.client.projects.import_predictions,
            id=project_id,
            request=fresh,
        )
    if tasks:  # Label Studio refuses a version that no prediction carries
        set_model_version(sync, project_id, model.version)
    return RefreshResult(project_id, len(tasks), model.version)
