"""What a model's inputs looked like when it was trained: the yardstick drift monitoring
measures live inputs with.

A profile holds the training split's vocabulary, the centroid of its sentence embeddings
and its label mix, and the same per-text features of held-out rows (the validation split)
that the prediction log computes for each live text: its length, its share of tokens the
training split never had, its cosine distance to the centroid, and the model's confidence.
Held-out rows, not training rows: a training row's tokens are all in the vocabulary by
construction, so its out-of-vocabulary share would read 0 and any live text would look
drifted. The class mix live predictions are compared with is the model's own on held-out
rows, beside the label mix: a model that leans to one class would otherwise read as
drifted on the very data it was trained on.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ingestion.errors import ConflictError
from training.arrays import Floats

if TYPE_CHECKING:
    from ingestion.lake import Lake
    from training.pyfunc import Scorer

FILE = "profile.json"  # beside the MLflow model of a version `harvest train` registered
TOKEN = re.compile(r"\w+", re.UNICODE)
FEATURES = ("text_length", "oov_share", "centroid_distance", "confidence")
MAX_ROWS = 500  # rows of each split read into a profile: its statistics settle well before
FORMAT = 1


@dataclass
class Profile:
    vocabulary: frozenset[str]
    centroid: Floats  # unit length
    label_mix: dict[str, int]  # the training split's labels
    predicted_mix: dict[str, int]  # the model's predictions on held-out rows
    reference: dict[str, Floats]  # feature -> its values on held-out rows

    def features(
        self, texts: list[str], embed: int | None = None, seed: int = 0
    ) -> dict[str, Floats]:
        """``text_length``, ``oov_share`` and ``centroid_distance`` of each text; with
        ``embed``, the distance of only that many texts drawn at random (NaN for the rest):
        encoding a text costs far more than scoring it with most models. The vectors are
        encoded here; the prediction log works them out in its child
        (``harvest.service.encoder``)."""
        chosen = self.chosen(len(texts), embed, seed)
        vectors = encode_fresh([texts[i] for i in chosen]) if chosen else None
        return self.features_of(texts, chosen, vectors)

    @staticmethod
    def chosen(n: int, embed: int | None, seed: int) -> list[int]:
        """Which of ``n`` texts ``features`` measures the centroid distance of."""
        if embed is not None and embed < n:
            return sorted(np.random.default_rng(seed).choice(n, embed, replace=False).tolist())
        return list(range(n))

    def features_of(
        self, texts: list[str], chosen: list[int], vectors: Floats | None
    ) -> dict[str, Floats]:
        """``features`` given the vectors of the ``chosen`` texts."""
        lengths = np.array([len(t) for t in texts], dtype=np.float64)
        oov = np.array([self._oov(t) for t in texts], dtype=np.float64)
        distance = np.full(len(texts), np.nan)
        if chosen and vectors is not None:
            distance[chosen] = 1.0 - np.asarray(vectors, dtype=np.float64) @ self.centroid
        return {"text_length": lengths, "oov_share": oov, "centroid_distance": distance}

    def _oov(self, text: str) -> float:
        tokens = TOKEN.findall(text.lower())
        return (
            (len(tokens) - sum(map(self.vocabulary.__contains__, tokens))) / len(tokens)
            if tokens
            else 0.0
        )

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        body = {
            "format": FORMAT,
            "vocabulary": sorted(self.vocabulary),
            "centroid": self.centroid.tolist(),
            "label_mix": self.label_mix,
            "predicted_mix": self.predicted_mix,
            "reference": {k: v.tolist() for k, v in self.reference.items()},
        }
        tmp.write_text(json.dumps(body))
        os.replace(tmp, path)  # readers never see half a profile

    @classmethod
    def load(cls, path: Path) -> Profile | None:
        try:
            body = json.loads(path.read_text())
        except (OSError, ValueError):
            return None  # none yet, or unreadable: it is built again
        if body.get("format") != FORMAT:
            return None
        return cls(
            frozenset(body["vocabulary"]),
            np.asarray(body["centroid"], dtype=np.float64),
            {str(k): int(v) for k, v in body["label_mix"].items()},
            {str(k): int(v) for k, v in body["predicted_mix"].items()},
            {k: np.asarray(v, dtype=np.float64) for k, v in body["reference"].items()},
        )


def build(
    train: tuple[Sequence[str], Sequence[str]],
    held_out: Sequence[str],
    predict: Callable[[list[str]], tuple[list[str], Floats]],
    seed: int = 0,
) -> Profile:
    """The profile of a model trained on ``train`` (texts, labels); ``held_out`` texts
    give the reference features, ``predict`` the model's label and top probability of
    each."""
    from training import embedding

    texts, labels = train
    rng = np.random.default_rng(seed)
    sample = [texts[i] for i in _pick(rng, len(texts))]
    vocabulary = frozenset(t for text in texts for t in TOKEN.findall(text.lower()))
    centroid = embedding.embed(sample, cache=embedding.EmbeddingCache()).numpy().mean(0)
    centroid = (centroid / (np.linalg.norm(centroid) or 1.0)).astype(np.float64)
    held = [held_out[i] for i in _pick(rng, len(held_out))]
    predicted, sure = predict(held)
    mixes = dict(Counter(map(str, labels))), dict(Counter(predicted))
    profile = Profile(vocabulary, centroid, *mixes, {})
    profile.reference = {**profile.features(held), "confidence": sure}
    return profile


def encode_fresh(texts: list[str]) -> Floats:
    """Unit-length MiniLM vectors of ``texts``, in a cache of their own: the process cache
    would keep every live text for good."""
    from training import embedding

    return np.asarray(embedding.embed(texts, cache=embedding.EmbeddingCache()).numpy())


class ProfileError(ConflictError):
    """A dataset version a profile cannot be made of: no train or held-out rows."""


def from_dataset(lake: Lake, dataset: str, version: int | None, scorer: Scorer) -> Profile:
    """The profile of the model ``scorer`` scores with, trained on ``dataset`` at
    ``version``: its train split, and its validation split held out (else its test)."""

    from ingestion.datasets import read_dataset, split_rows

    data, meta = read_dataset(lake, dataset, version)

    train = split_rows(data, "train")
    held = split_rows(data, "validation")[0] or split_rows(data, "test")[0]
    if not train[0] or not held:
        raise ProfileError(
            f"dataset {dataset} v{meta['version']} has no train or held-out rows to profile"
        )

    def predict(texts: list[str]) -> tuple[list[str], Any]:
        scored = scorer.predict(texts)
        return [str(x) for x in scored["label"]], confidence(scored)

    return build(train, held, predict)


def confidence(scored: Any) -> Floats:
    """The top class probability of each row a Scorer scored."""
    from training.pyfunc import PROB

    probs = scored[[c for c in scored.columns if c.startswith(PROB)]]
    return top_probability(probs.to_numpy(dtype=np.float64))


def top_probability(probs: Floats) -> Floats:
    """The confidence of each row of (rows, classes) probabilities."""
    return np.asarray(np.asarray(probs, dtype=np.float64).max(axis=1))


def _pick(rng: np.random.Generator, n: int) -> list[int]:
    return (
        sorted(rng.choice(n, MAX_ROWS, replace=False).tolist()) if n > MAX_ROWS else list(range(n))
    )
