"""The labelling model: a fast text classifier that scores unlabelled rows for active learning.

It is not the model a dataset trains (that is ``training/``): it refits in seconds from
the labels so far, so every push and every few labels can rank the rows still waiting.
A logistic regression over TF-IDF word 1-2 grams and a sentence embedding
(``labeling.features``) gives calibrated enough probabilities for uncertainty sampling;
its sentence vectors, or ``embed`` for a model without them, give the diversity
strategies dense vectors.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ingestion.errors import ConflictError
from ingestion.lake import Lake
from training.arrays import Floats

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

# scikit-learn and joblib are imported where used: they take a second to import, and the
# command line imports this module for its error type on every command

MODEL_FILE = "model.joblib"
META_FILE = "model.json"  # the same facts as the joblib file, for people and dashboards
FORMAT = 1
EMBED_DIMS = 96


class ModelError(ConflictError):
    """No labelling model can be fitted or used yet: too few labels, none pulled."""


@dataclass
class LabelModel:
    """A fitted pipeline and what it was fitted on."""

    pipeline: Pipeline
    classes: list[str]
    version: str  # the model_version Label Studio shows and filters predictions by
    labels: int  # labelled rows it was trained on
    features: str = "tfidf"  # labeling.features kind; models saved before it was kept are tfidf
    labels_version: int | None = None  # version of the labels table, when read from the lake
    trained_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    # the labelled rows it saw, so a newer model can be judged on the rows this one did not
    row_ids: list[str] = field(default_factory=list)

    def predict_proba(self, texts: Sequence[str]) -> Floats:
        """(rows, classes) probabilities, columns in the order of ``classes``."""
        if len(texts) == 0:
            return np.empty((0, len(self.classes)))
        return np.asarray(self.pipeline.predict_proba(list(texts)), dtype=np.float64)

    def predict(self, texts: Sequence[str]) -> list[str]:
        return [self.classes[i] for i in self.predict_proba(texts).argmax(axis=1)]

    def vectors(self, texts: Sequence[str]) -> Floats | None:
        """The sentence vectors the model reads for ``texts``; None when it reads none."""
        from labeling import features

        step = features.sentence_step(self.pipeline)
        return None if step is None else step.transform(list(texts))

    def meta(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": self.version,
            "classes": self.classes,
            "labels": self.labels,
            "features": self.features,
            "labels_version": self.labels_version,
            "trained_at": self.trained_at,
        }

    def save(self, folder: str | Path) -> Path:
        """Writes the model into ``folder``; readers never see a half-written file."""
        import joblib

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / MODEL_FILE
        tmp = folder / f".{MODEL_FILE}.{os.getpid()}"
        joblib.dump({**self.meta(), "row_ids": self.row_ids, "pipeline": self.pipeline}, tmp)
        os.replace(tmp, path)
        meta_tmp = folder / f".{META_FILE}.{os.getpid()}"
        meta_tmp.write_text(json.dumps(self.meta(), indent=1))
        os.replace(meta_tmp, folder / META_FILE)
        return path


def fit(
    texts: Sequence[str],
    labels: Sequence[str],
    version: str | None = None,
    labels_version: int | None = None,
    row_ids: Sequence[str] = (),
    features: str | None = None,
) -> LabelModel:
    """Fits the labelling model on ``features`` (``labeling.features.KINDS``, default
    TF-IDF with sentence embeddings); needs labels of at least two classes."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from labeling import features as feats

    kind = features or feats.DEFAULT
    if len(texts) != len(labels):
        raise ModelError(f"{len(texts)} texts but {len(labels)} labels")
    counts = Counter(labels)
    if len(counts) < 2:
        seen = ", ".join(f"{k}: {v}" for k, v in counts.items()) or "no labels at all"
        raise ModelError(
            f"the labelling model needs labelled rows of at least 2 classes, got {seen}; "
            "label a few rows of another class first"
        )
    pipeline = make_pipeline(
        feats.vectorizer(kind),
        # saga: on sparse n-grams (and a dense block beside them), ten times faster than the
        # default lbfgs, as accurate
        LogisticRegression(C=4.0, solver="saga", max_iter=1000, random_state=0),
    )
    try:
        pipeline.fit(list(texts), list(labels))
    except ValueError as exc:  # e.g. an empty vocabulary: every text blank or stop words
        raise ModelError(f"cannot fit the labelling model: {exc}") from exc
    return LabelModel(
        pipeline=pipeline,
        classes=[str(c) for c in pipeline.classes_],
        version=version or _content_version(texts, labels),
        labels=len(labels),
        features=kind,
        labels_version=labels_version,
        row_ids=list(row_ids),
    )


def _content_version(texts: Sequence[str], labels: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for text, label in zip(texts, labels, strict=True):
        digest.update(f"{label}\x1f{text}\x1e".encode())
    return f"labels-n{len(labels)}-{digest.hexdigest()[:8]}"


def load(folder: str | Path) -> LabelModel | None:
    """The model saved in ``folder``, or in the MLflow model folder ``folder`` (its
    ``data/model``, ``labeling.pyfunc``); None when none was saved yet."""
    import joblib

    path = Path(folder) / MODEL_FILE
    if not path.exists():
        path = Path(folder) / "data" / "model" / MODEL_FILE
    if not path.exists():
        return None
    try:
        saved = joblib.load(path)
    except Exception as exc:  # unpickling fails in many ways; each means the same here
        raise ModelError(f"cannot read the labelling model {path}: {exc}") from exc
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise ModelError(f"{path}: not a labelling model of format {FORMAT}; retrain it")
    return LabelModel(
        pipeline=saved["pipeline"],
        classes=list(saved["classes"]),
        version=saved["version"],
        labels=int(saved["labels"]),
        features=saved.get("features", "tfidf"),
        labels_version=saved["labels_version"],
        trained_at=saved["trained_at"],
        row_ids=list(saved.get("row_ids", [])),  # models saved before it was kept have none
    )


@dataclass
class Labelled:
    """Labelled rows with their text: what the labelling model is fitted on."""

    row_ids: list[str]
    texts: list[str]
    labels: list[str]
    labels_version: int | None = None

    def digest(self) -> str:
        """A hash of the rows and their labels, whatever order they were read in."""
        h = hashlib.sha256()
        for row_id, label in sorted(zip(self.row_ids, self.labels, strict=True)):
            h.update(f"{row_id}\x1f{label}\x1e".encode())
        return h.hexdigest()


def train_from_lake(lake: Lake, source: str, text_field: str) -> LabelModel:
    """Fits on ``labels/<source>`` joined by row id with the text in ``curated/<source>``."""
    return fit_labelled(labelled_rows(lake, source, text_field), source)


def fit_labelled(rows: Labelled, source: str, features: str | None = None) -> LabelModel:
    return fit(
        rows.texts,
        rows.labels,
        f"{source}-labels-v{rows.labels_version}-n{len(rows.labels)}",
        rows.labels_version,
        rows.row_ids,
        features,
    )


def labelled_rows(lake: Lake, source: str, text_field: str) -> Labelled:
    """``labels/<source>`` joined by row id with the text in ``curated/<source>``."""
    table = f"labels/{source}"
    if not lake.exists(table):
        raise ModelError(f"no labels yet for {source!r} ({table} is missing): pull labels first")
    labels_version = lake.version(table)
    labelled = lake.read(table, columns=["row_id", "label"]).to_pylist()
    curated = lake.read(f"curated/{source}", columns=["content_sha256", text_field])
    text = dict(zip(*(curated[c].to_pylist() for c in curated.column_names), strict=True))
    # labels of rows no longer curated are left out: their text is gone
    kept = [r for r in labelled if r["row_id"] in text and r["label"] is not None]
    if labelled and not kept:
        raise ModelError(
            f"none of the {len(labelled)} labels in {table} match a row of curated/{source}"
        )
    return Labelled(
        row_ids=[r["row_id"] for r in kept],
        texts=[text[r["row_id"]] for r in kept],
        labels=[r["label"] for r in kept],
        labels_version=labels_version,
    )


@dataclass
class Contest:
    """A newly fitted model against the champion, on the labelled rows the champion never
    saw. ``rows`` 0: nothing to judge them on (no new rows, or a champion that does not
    record its rows), and the newer model wins."""

    rows: int
    candidate: float | None = None  # accuracy of out-of-fold predictions on those rows
    champion: float | None = None  # accuracy of the champion's predictions on them

    @property
    def promote(self) -> bool:
        return self.candidate is None or self.champion is None or self.candidate >= self.champion


def contest(
    rows: Labelled, champion: LabelModel, folds: int = 3, features: str | None = None
) -> Contest:
    """Judges a model fitted on ``rows`` against ``champion`` on the rows of ``rows`` the
    champion was not fitted on. The newcomer was fitted on those rows too, so it is
    cross-validated over them: each fold is predicted by a model fitted on every other
    row. Both scores are out of sample, on the same rows."""
    if not champion.row_ids:
        return Contest(0)
    seen = set(champion.row_ids)
    unseen = [i for i, r in enumerate(rows.row_ids) if r not in seen]
    if not unseen:
        return Contest(0)
    order = np.random.default_rng(0).permutation(unseen)
    right = 0
    for part in np.array_split(order, min(folds, len(unseen))):
        held = set(part.tolist())
        rest = [i for i in range(len(rows.texts)) if i not in held]
        try:
            fold = fit(
                [rows.texts[i] for i in rest],
                [rows.labels[i] for i in rest],
                "fold",
                features=features,
            )
        except ModelError:  # the other rows hold one class: this fold's rows count as missed
            continue
        guesses = fold.predict([rows.texts[i] for i in part])
        right += sum(g == rows.labels[i] for g, i in zip(guesses, part, strict=True))
    held_out = [rows.texts[i] for i in unseen]
    champion_right = sum(
        g == rows.labels[i] for g, i in zip(champion.predict(held_out), unseen, strict=True)
    )
    return Contest(len(unseen), right / len(unseen), champion_right / len(unseen))


def embed(texts: Sequence[str], dims: int = EMBED_DIMS, seed: int = 0) -> Floats:
    """Unit-length dense vectors for ``texts``: TF-IDF reduced by a truncated SVD.

    Fitted on the texts given (the pool to choose from), so the directions are those
    along which that pool varies most. Texts without a word embed as zero vectors.
    """
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import normalize

    if len(texts) == 0:
        return np.empty((0, dims))
    try:
        x = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit_transform(list(texts))
    except ValueError:  # no word in any text: nothing tells the rows apart
        return np.zeros((len(texts), dims))
    k = min(dims, x.shape[1] - 1, x.shape[0] - 1)
    if k < 1:
        return np.asarray(normalize(x).toarray(), dtype=np.float64)
    dense = TruncatedSVD(n_components=k, random_state=seed).fit_transform(x)
    return np.asarray(normalize(dense), dtype=np.float64)
