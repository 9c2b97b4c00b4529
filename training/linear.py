"""Linear models as first-class candidates: logistic regression over TF-IDF word 1-2 grams,
alone (the baseline's settings) or beside a MiniLM sentence embedding (the labelling
model's features).

On a few hundred labels they often beat the neural models, and with ``--model auto`` the
registry serves whichever wins on validation, so each is fitted, scored, saved
(``model.joblib``) and served (its own pyfunc loader) like the torch models.
scikit-learn is imported where a model is fitted or loaded: it takes a second, and
``training.run`` imports this module.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ingestion.errors import InvalidInputError
from training.arrays import Floats

TFIDF = "tfidf-logreg"
TFIDF_MINILM = "tfidf-minilm-logreg"
KINDS = (TFIDF, TFIDF_MINILM)
MODEL_FILE = "model.joblib"
FORMAT = 1


@dataclass
class LinearClassifier:
    kind: str
    classes: tuple[str, ...]
    pipeline: Any

    def predict_proba(self, texts: list[str]) -> Floats:
        """Probabilities in ``classes`` order; 0 for a class absent from the training rows."""
        out = np.zeros((len(texts), len(self.classes)))
        if texts:
            got = self.pipeline.predict_proba(texts)
            columns = [self.classes.index(str(c)) for c in self.pipeline.classes_]
            out[:, columns] = got
        return out

    def save(self, path: str) -> None:
        import joblib

        tmp = f"{path}.{os.getpid()}.tmp"
        blob = {"format": FORMAT, "kind": self.kind, "classes": list(self.classes)}
        joblib.dump({**blob, "pipeline": self.pipeline}, tmp)
        os.replace(tmp, path)  # readers never see half a model


def search_space(trial: Any, prefix: str) -> dict[str, Any]:
    """What ``harvest tune`` searches for a linear model: its regularisation."""
    return {"l2": trial.suggest_float(f"{prefix}l2", 0.05, 100.0, log=True)}


def fit_linear(
    kind: str,
    train: tuple[list[str], list[str]],
    classes: list[str],
    seed: int = 0,
    c: float | None = None,
) -> tuple[LinearClassifier, float]:
    """The fitted model of ``kind`` (``c``: its inverse regularisation, None for its
    default), and the seconds fitting took."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union
    from sklearn.preprocessing import Normalizer

    from training.sentence import SentenceVectors

    started = time.perf_counter()
    tfidf = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    if kind == TFIDF:
        logreg = LogisticRegression(C=c or 10.0, max_iter=2000, random_state=seed)
        pipeline = make_pipeline(tfidf, logreg)
    elif kind == TFIDF_MINILM:
        # each block unit length, then the whole: words and meaning weigh the same
        features = make_pipeline(make_union(tfidf, SentenceVectors()), Normalizer())
        # saga: on sparse n-grams beside a dense block, far faster than lbfgs, as accurate
        logreg = LogisticRegression(C=c or 4.0, solver="saga", max_iter=1000, random_state=seed)
        pipeline = make_pipeline(features, logreg)
    else:
        raise InvalidInputError(f"unknown linear model {kind!r}; one of {', '.join(KINDS)}")
    pipeline.fit(*train)
    return LinearClassifier(kind, tuple(classes), pipeline), time.perf_counter() - started


def load_linear(path: str | Path) -> LinearClassifier:
    import joblib

    try:
        blob = joblib.load(path)
    except Exception as exc:  # unpickling fails in many ways; each means the same here
        raise InvalidInputError(f"cannot read the linear model {path}: {exc}") from exc
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise InvalidInputError(f"{path}: not a linear model of format {FORMAT}")
    return LinearClassifier(blob["kind"], tuple(blob["classes"]), blob["pipeline"])


def _load_pyfunc(path: str, device: str = "cpu") -> Any:
    """MLflow's entry point: ``path`` is the model's data, ``model.joblib``."""
    from training.pyfunc import Scorer

    model = load_linear(path)
    return Scorer(model.classes, model.predict_proba)


def save_mlflow(path: Path, folder: Path) -> None:
    """Writes the MLflow model folder for the linear model saved at ``path``."""
    from training import pyfunc

    model = load_linear(path)
    pyfunc.write(folder, path, __name__, model.classes, ["scikit-learn", "numpy", "pandas"])
